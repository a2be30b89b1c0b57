"""A real PostgreSQL server for the tests: initdb + pg_ctl in a temporary folder, on a free loopback port.

WHY a real server: the shared job store's guarantees (claims under ``FOR UPDATE SKIP LOCKED``, leases
across connections) are PostgreSQL's behaviour, which nothing else reproduces. The binaries come from
``DEEPFAKE_PG_BIN`` (default /usr/local/bin, where every machine of this project has PostgreSQL 15).
PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` user (created as a system
user when the machine has none), in a folder that user owns. It listens on 127.0.0.1 only, trusts local
connections (nothing else can reach it) and runs without fsync: a test server, thrown away at the end.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from cli.local_stack import free_port
from tests.settings import SuiteSettings

BIN_DIR = SuiteSettings().pg_bin
BINARIES = ("initdb", "pg_ctl", "postgres")
SERVICE_USER = "postgres"


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if not os.access(BIN_DIR / name, os.X_OK)]


def _service_user() -> str | None:
    """The user the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:  # a fresh machine: the PostgreSQL binaries are there, their user is not
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin",
             SERVICE_USER],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
    return SERVICE_USER


class PostgresServer:
    def __init__(self) -> None:
        self.user = _service_user()
        self.root = Path(tempfile.mkdtemp(prefix="deepfake-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def _run(self, *args: str, timeout_s: float = 120) -> None:
        command = [str(BIN_DIR / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        if completed.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({completed.returncode}): {completed.stderr}\n{log}")

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--no-sync", "--no-instructions")  # fmt: skip
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60",
                  "start")  # fmt: skip

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)
