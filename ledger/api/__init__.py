"""The read-only HTTP API: ``app`` (FastAPI), ``server`` (uvicorn in a thread of the
consumer) and ``client`` (the CLI's ``--api``). Importing this package loads none of them."""
