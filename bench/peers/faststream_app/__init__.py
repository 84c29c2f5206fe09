"""The exchange pipeline on FastAPI + FastStream + NATS JetStream, the other usual stack.

``api.py`` accepts events and publishes each to a JetStream stream, answering once
NATS has acknowledged it; ``worker.py`` consumes the stream with one durable pull
consumer per step: it archives every event in SQLite, fraud-checks buys with the
example's rule and publishes the alert, and for each alert writes ``<id>.json`` to a
directory and POSTs it, signed, to the webhook. ``driver.py`` runs an API and two
worker processes for the benchmark. Settings come from ``PEER_*`` environment
variables.
"""
