"""`make audit`: pip-audit over the installed environment, wherever a vulnerability service answers.

WHY a script of its own, outside `make lint` and CI: pip-audit asks a service on the internet about every
installed package, OSV (api.osv.dev, the default here) or PyPI's JSON API per release
(pypi.org/pypi/NAME/VERSION/json). The development machines and CI reach only a package mirror, which
serves neither (RELIABILITY.md, *pip-audit*): per-release pages are 404, api.osv.dev does not resolve.
And there pip-audit alone skips every package and still prints "No known vulnerabilities found" with
exit 0. So this script first asks the service about one package it must know (the installed pip); if
that fails it says what it tried and exits 3, nothing audited. Otherwise it runs pip-audit with
`--skip-editable` (this project itself is on no index) and exits with pip-audit's status (1: a known
vulnerability; the report names the fixed version, and `-- --fix` upgrades). Not `--strict`: pip-audit
counts an editable install as a package it could not audit, so `--strict` always fails on this project;
a package the service does not know is listed in the report's "Skip Reason" table instead.

OSV by default: PyPI has no page for a local version such as torch 2.13.0+cpu (the CPU wheel installed
here), so with `--service pypi` that package is never audited.

    python scripts/audit.py                        # OSV
    python scripts/audit.py --service pypi         # PyPI's JSON API
    python scripts/audit.py -- --fix --dry-run     # anything after -- goes to pip-audit
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import urllib.error
import urllib.request
from importlib.metadata import version

OSV_URL = "https://api.osv.dev/v1/query"
PYPI_URL = "https://pypi.org/pypi"
UNREACHABLE = 3  # apart from pip-audit's 1 (a known vulnerability) and usage errors' 2


def probe_request(service: str, osv_url: str, pip_version: str) -> urllib.request.Request:
    """The one question whose answer shows the service works: what it knows of this pip release."""
    if service == "osv":
        query = {"package": {"name": "pip", "ecosystem": "PyPI"}, "version": pip_version}
        return urllib.request.Request(
            osv_url, json.dumps(query).encode(), {"Content-Type": "application/json"}, method="POST"
        )
    return urllib.request.Request(f"{PYPI_URL}/pip/{pip_version}/json")


def service_problem(request: urllib.request.Request, timeout_s: int) -> str | None:
    """Why the service cannot be used (None: it answered the probe with JSON)."""
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            json.load(response)
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        return str(exc.reason)
    except (TimeoutError, OSError) as exc:
        return str(exc) or type(exc).__name__
    except ValueError:
        return "the answer is not JSON"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service", choices=["osv", "pypi"], default="osv")
    parser.add_argument("--osv-url", default=OSV_URL, help="the OSV query endpoint (default: %(default)s)")
    parser.add_argument("--timeout", type=int, default=15, help="seconds per request")
    parser.add_argument("pip_audit_args", nargs="*", help="after --: passed to pip-audit as they are")
    args = parser.parse_args(argv)

    pip_version = version("pip")
    request = probe_request(args.service, args.osv_url, pip_version)
    problem = service_problem(request, args.timeout)
    if problem is not None:
        print(
            f"audit: pip-audit cannot run here: the {args.service} vulnerability service did not answer "
            f"{request.get_method()} {request.full_url} (for pip {pip_version}): {problem}.\n"
            "Nothing was audited. Run `make audit` where that service is reachable (not in the offline "
            "CI); RELIABILITY.md, *pip-audit*, says what this network serves.",
            file=sys.stderr,
        )
        return UNREACHABLE
    command = [
        sys.executable, "-m", "pip_audit", "--skip-editable", "--progress-spinner", "off",
        "--timeout", str(args.timeout), "--vulnerability-service", args.service,
    ]  # fmt: skip
    if args.service == "osv":
        command += ["--osv-url", args.osv_url]
    return subprocess.run([*command, *args.pip_audit_args]).returncode


if __name__ == "__main__":
    sys.exit(main())
