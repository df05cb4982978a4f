"""A real PostgreSQL for tests: the server named by $OCPP_TEST_POSTGRES_URL (CI starts
one), or a private cluster made with Debian's initdb in a temporary directory, on a free
loopback port, stopped and deleted at the end. Each test run works in databases of its
own, created here and dropped at the end.

As root, PostgreSQL refuses to run: the private cluster then runs as the `postgres` user
(`runuser -u postgres --`), which is given the temporary directory.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

from tests.ports import free_port

URL_ENV_VAR = "OCPP_TEST_POSTGRES_URL"
# Fast and unsafe: a test cluster is thrown away, never recovered.
_THROWAWAY_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


class PostgresUnavailable(Exception):
    """Neither $OCPP_TEST_POSTGRES_URL nor a local PostgreSQL installation to start."""


def postgres_bin_directory() -> Path:
    """The newest Debian PostgreSQL's bin directory (/usr/lib/postgresql/15/bin)."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not found:
        raise PostgresUnavailable(
            f"no PostgreSQL server here: `apt-get install postgresql`, or set ${URL_ENV_VAR} "
            "to a server's URL (postgresql://USER:PASSWORD@HOST:PORT/postgres)"
        )
    return Path(max(found, key=lambda path: int(Path(path).parts[-3]))).parent


class PostgresServer:
    """`server = PostgresServer.start(); url = server.create_database(); ...;
    server.stop()`. URLs are SQLAlchemy URLs for psycopg 3."""

    def __init__(self, admin_url: URL, cluster: Path | None, stop_command: list[str]) -> None:
        self.admin_url = admin_url
        self.cluster = cluster  # the private cluster's directory; None for an outside server
        self.stop_command = stop_command
        self.databases: list[str] = []

    @classmethod
    def start(cls) -> PostgresServer:
        """The outside server if $OCPP_TEST_POSTGRES_URL is set, else a private cluster."""
        outside = os.environ.get(URL_ENV_VAR)
        if outside:
            return cls(make_url(outside).set(drivername="postgresql+psycopg"), None, [])
        return cls._start_private_cluster()

    @classmethod
    def _start_private_cluster(cls) -> PostgresServer:
        binaries = postgres_bin_directory()
        directory = Path(tempfile.mkdtemp(prefix="ocpp-test-postgres-"))
        as_postgres: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres", "postgres")
            as_postgres = ["runuser", "-u", "postgres", "--"]
        data = str(directory / "data")
        port = free_port()
        options = [
            f"-c port={port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={directory}",
            *(f"-c {setting}" for setting in _THROWAWAY_SETTINGS),
        ]
        initdb = [str(binaries / "initdb"), "-D", data, "-U", "postgres", "-A", "trust"]
        pg_ctl = str(binaries / "pg_ctl")
        log = str(directory / "server.log")
        try:
            _run([*as_postgres, *initdb, "-E", "UTF8", "--no-sync"])
            _run(
                [
                    *as_postgres,
                    pg_ctl,
                    "start",
                    "-D",
                    data,
                    "-w",
                    "-l",
                    log,
                    "-o",
                    " ".join(options),
                ]
            )
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        admin_url = URL.create(
            "postgresql+psycopg", username="postgres", host="127.0.0.1", port=port
        ).set(database="postgres")
        # Immediate: nothing in a test cluster needs a clean shutdown.
        stop_command = [*as_postgres, pg_ctl, "stop", "-D", data, "-m", "immediate", "-w"]
        return cls(admin_url, directory, stop_command)

    def create_database(self) -> URL:
        """A new, empty database of this run's own."""
        name = f"ocpp_test_{os.getpid()}_{secrets.token_hex(4)}"
        with self._admin() as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.databases.append(name)
        return self.admin_url.set(database=name)

    def stop(self) -> None:
        """Drop this run's databases on an outside server; stop and delete a private one."""
        if self.cluster is None:
            with self._admin() as connection:
                for name in self.databases:
                    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                    connection.execute(drop.format(sql.Identifier(name)))
            return
        try:
            _run(self.stop_command)
        finally:
            shutil.rmtree(self.cluster, ignore_errors=True)

    def _admin(self) -> psycopg.Connection[tuple[Any, ...]]:
        url = self.admin_url.set(drivername="postgresql")
        return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)


def _run(arguments: list[str]) -> None:
    done = subprocess.run(arguments, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(arguments)} failed: {done.stdout}{done.stderr}")
