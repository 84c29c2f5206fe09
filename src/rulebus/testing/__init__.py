"""``rulebus test``: an app's rules run on given events against in-memory stores.

``spec`` reads the test files, ``sandbox`` holds the stores, notifier and bus
that stand in for the real ones, ``runner`` drives the app's real rules,
actions and functions, ``check`` and ``compare`` hold what happened against
what the test expects, ``report`` prints the outcome, and ``suite`` puts
them together.
"""

from rulebus.testing.check import TestResult
from rulebus.testing.suite import load_cases, run_cases

__all__ = ["TestResult", "load_cases", "run_cases"]
