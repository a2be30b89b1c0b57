"""Asynchronous jobs: the store (interface + SQLite) and the runner that feeds them to the preprocessor."""
