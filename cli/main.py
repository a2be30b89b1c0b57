"""The ``deepfake`` command: a thin dispatcher over subcommand modules.

Why a table of module paths: each subcommand lives in its own module exposing ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``, and is imported only when chosen, so
``deepfake detect`` never pays for (or breaks on) the imports of ``serve`` or ``evaluate``.
Adding a subcommand is one line in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS: dict[str, str] = {
    "detect": "cli.commands.detect",
    "faces": "cli.commands.faces",
    "serve": "cli.commands.serve",
    "watch": "cli.commands.watch",
    "evaluate": "cli.commands.evaluate",
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepfake", description="Deepfake video detection.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, module_path in COMMANDS.items():
        if name == chosen:
            module = importlib.import_module(module_path)
            sub_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
            module.add_arguments(sub_parser)
            sub_parser.set_defaults(_run=module.run)
        else:
            sub.add_parser(name, help=f"see: deepfake {name} --help", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 some input failed, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return int(args._run(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
