"""Print the pip requirements of pyproject.toml's core plus chosen extras, minus excluded packages.

WHY: the service images must install exactly what pyproject.toml pins (one source of truth), but not
everything an extra holds: `serve` carries nvidia-pytriton (~145 MB: the CPU-only `tritonserver` for
local runs), which a container never needs because Triton runs in its own NGC image there. Reading the
file here keeps the Dockerfiles free of a second, drifting dependency list. Standard library only, so
it runs in a bare python image before anything is installed.

Usage: python requirements_from_pyproject.py [--pyproject PATH] [--extra NAME ...] [--exclude NAME ...]
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path


def requirement_name(requirement: str) -> str:
    """Normalised distribution name of a PEP 508 requirement: "tritonclient[grpc]>=2" -> "tritonclient"."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requirements(pyproject: Path, extras: list[str], exclude: list[str]) -> list[str]:
    """Core dependencies, then each extra's, in file order, without the excluded distributions."""
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise KeyError(f"unknown extra(s) {unknown}; pyproject.toml defines {sorted(optional)}")
    dropped = {requirement_name(name) for name in exclude}
    selected = list(project.get("dependencies", []))
    for extra in extras:
        selected += optional[extra]
    return [req for req in selected if requirement_name(req) not in dropped]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("--extra", action="append", default=[], help="extra to include (repeatable)")
    parser.add_argument("--exclude", action="append", default=[], help="distribution to omit (repeatable)")
    args = parser.parse_args(argv)
    try:
        lines = requirements(args.pyproject, args.extra, args.exclude)
    except (OSError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
