"""Peer baselines: the exchange pipeline built the way a Python team would without rulebus."""
