"""Placeholder until the NATS test service lands."""
