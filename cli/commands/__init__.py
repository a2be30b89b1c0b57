"""Subcommands of the ``deepfake`` CLI, one module each (see cli/main.py)."""
