"""The HTTP API: ingest routes and admin routes over Starlette."""
