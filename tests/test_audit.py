"""`make audit` (scripts/audit.py): a clear refusal where no vulnerability service answers, and the real
pip-audit over the real environment where one does.

The real services (OSV, PyPI's JSON API) are on the internet, which tests never reach; an HTTP server on
127.0.0.1 stands in for OSV's query endpoint (`--osv-url`): once answering 404 to everything (as this
network's PyPI mirror answers per-release pages), once answering as OSV does, with one made-up advisory
for the installed pip. pip-audit itself runs for real over this virtualenv in the second test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version

from deepfake.settings import REPO_ROOT

ADVISORY = {
    "id": "TEST-2026-0001",
    "summary": "made up for the test",
    "affected": [
        {
            "package": {"name": "pip", "ecosystem": "PyPI"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "999.0"}]}],
        }
    ],
}


@contextmanager
def osv_stand_in(answer_404: bool) -> Iterator[tuple[str, list[dict]]]:
    """An OSV query endpoint on loopback; yields its URL and the queries it received."""
    queries: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            queries.append(query)
            if answer_404:
                self.send_error(404)
                return
            found = query["package"]["name"] == "pip"
            body = json.dumps({"vulns": [ADVISORY]} if found else {}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/query", queries
    finally:
        server.shutdown()
        server.server_close()


def audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "scripts/audit.py", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_an_unreachable_service_is_exit_3_with_nothing_audited():
    with osv_stand_in(answer_404=True) as (url, queries):
        run = audit("--osv-url", url, "--timeout", "5")
    assert run.returncode == 3, run.stdout + run.stderr
    assert "pip-audit cannot run here" in run.stderr and "Nothing was audited" in run.stderr
    assert f"POST {url}" in run.stderr and "HTTP 404" in run.stderr
    assert queries == [{"package": {"name": "pip", "ecosystem": "PyPI"}, "version": version("pip")}]


def test_a_known_vulnerability_fails_the_audit_and_names_its_fix(tmp_path):
    with osv_stand_in(answer_404=False) as (url, queries):
        run = audit("--osv-url", url, "--", "--format", "json", "--cache-dir", str(tmp_path / "cache"))
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    report = {dep["name"]: dep for dep in json.loads(run.stdout)["dependencies"]}
    assert [v["id"] for v in report["pip"]["vulns"]] == [ADVISORY["id"]]
    assert report["pip"]["vulns"][0]["fix_versions"] == ["999.0"]
    assert all(not dep.get("vulns") for name, dep in report.items() if name != "pip")
    # The editable project is on no index: listed as skipped, never asked about; every other installed
    # package was (the probe, then one query per package).
    assert report["deepfake-detector"]["skip_reason"] == "distribution marked as editable"
    assert {q["package"]["name"] for q in queries[1:]} == set(report) - {"deepfake-detector"}
    assert len(report) > 50
