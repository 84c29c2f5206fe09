"""rulebus: AWS IoT-style topics and SQL rules on your own machines."""

__version__ = "0.1.0"
