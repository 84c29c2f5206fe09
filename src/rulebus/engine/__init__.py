"""The engine: routes events to rules, runs their actions, retries, dead-letters."""
