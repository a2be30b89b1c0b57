"""Subcommands of the ``deepfake`` CLI, one module each (see deepfake/cli.py)."""
