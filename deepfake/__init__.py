"""What every part of the project shares: the contracts (deepfake.contracts), the settings base, the upload
and container checks, the error handlers, the retry and process helpers. It imports none of the services,
the CLI (cli/) or training (tests/test_import_graph.py)."""

__version__ = "0.1.0"
