"""Reading YAML configuration with the line of every key, and typed, checked options.

The app file's loader (``rulebus.template``) and the actions that validate
their own options both use it, so it sits below both.
"""
