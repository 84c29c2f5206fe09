"""The app file: load ``rulebus.yaml``, validate it once, report errors by file, line and key."""

from rulebus.template.loader import load_app
from rulebus.template.model import App

__all__ = ["App", "load_app"]
