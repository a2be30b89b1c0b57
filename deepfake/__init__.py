"""Deepfake video detection: the CLI and the contracts shared by every part of the project."""

__version__ = "0.1.0"
