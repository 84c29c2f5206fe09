"""The exchange pipeline on FastAPI + Celery + Redis, the usual Python stack for the job.

``api.py`` accepts events and enqueues one task per step; ``tasks.py`` archives every
event in SQLite, fraud-checks buys with the example's rule, and for each fraud writes
``<id>.json`` to a directory and POSTs it, signed, to the webhook. ``driver.py`` runs
both processes for the benchmark. Settings come from ``PEER_*`` environment variables.
"""
