"""Importers: apps made from other systems' definitions (``rulebus import``)."""
