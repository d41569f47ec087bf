"""A real PostgreSQL primary and a streaming replica on loopback (Debian `postgresql`), for the data-lag tests.

Both clusters are made with initdb / pg_basebackup and run with pg_ctl on free ports, listening on 127.0.0.1
only, trusting local connections (loopback, throwaway data). PostgreSQL refuses to run as root: under root
the server programs run as the `postgres` user (`runuser`), in a directory of their own under /tmp that the
fixture creates and removes (pytest's tmp_path lies under a root-only 0700 directory that user cannot enter).
A writer commits a row on the primary every 200 ms, so that `now() - pg_last_xact_replay_timestamp()` on the
replica measures how far replay trails: paused (`pause_replay`), it grows by a second each second.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.daemon import free_port

BIN = Path(os.environ.get("BCD_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PSQL = shutil.which("psql") or "/usr/bin/psql"
WRITE_EVERY = 0.2  # seconds between two commits of the writer
START_TIMEOUT = 60.0


def missing() -> str | None:
    """Why the clusters cannot run here (None when they can)."""
    for program in ("initdb", "pg_ctl", "pg_basebackup", "postgres"):
        if not (BIN / program).exists():
            return f"PostgreSQL server binaries not found in {BIN} (Debian package postgresql)"
    if not Path(PSQL).exists():
        return "psql not found (Debian package postgresql-client)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the server as"
    return None


def _as_server_user() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _run(argv: list[str], timeout: float = START_TIMEOUT) -> str:
    done = subprocess.run([*_as_server_user(), *argv], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stdout}{done.stderr}")
    return done.stdout


@dataclass
class PostgresPair:
    """A primary and its streaming replica; `sql(port, query)` runs one statement through psql."""

    base: Path
    primary_port: int
    replica_port: int
    writer: subprocess.Popen[bytes] | None = None

    def sql(self, port: int, query: str) -> str:
        done = subprocess.run([PSQL, "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "postgres",
                               "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", query],
                              capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"psql on port {port}: {done.stderr.strip()}")
        return done.stdout.strip()

    def replay_lag(self) -> float | None:
        """Seconds since the last transaction the replica replayed was committed (None: none yet)."""
        text = self.sql(self.replica_port, "SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())")
        return float(text) if text else None

    def pause_replay(self) -> None:
        self.sql(self.replica_port, "SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        self.sql(self.replica_port, "SELECT pg_wal_replay_resume()")

    def start_writer(self) -> None:
        """Commit a row on the primary every WRITE_EVERY seconds until stopped (one psql, a server-side loop)."""
        self.sql(self.primary_port, "CREATE TABLE IF NOT EXISTS ticks (at timestamptz NOT NULL)")
        loop = (f"DO $$ BEGIN LOOP INSERT INTO ticks VALUES (now()); COMMIT; PERFORM pg_sleep({WRITE_EVERY}); "
                "END LOOP; END $$")
        self.writer = subprocess.Popen([PSQL, "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
                                        "-d", "postgres", "-Xq", "-c", loop],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_replaying(self, below: float, timeout: float = START_TIMEOUT) -> float:
        """Wait until the replica's replay lag is measured below `below` seconds; return it."""
        deadline = time.monotonic() + timeout
        lag: float | None = None
        while time.monotonic() < deadline:
            lag = self.replay_lag()
            if lag is not None and lag < below:
                return lag
            time.sleep(0.1)
        raise AssertionError(f"replica replay lag not below {below}s within {timeout}s (last {lag})")


def _init_primary(data: Path, port: int, sockets: Path) -> None:
    _run([str(BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
    settings = {"port": port, "listen_addresses": "'127.0.0.1'", "unix_socket_directories": f"'{sockets}'",
                "wal_level": "replica", "max_wal_senders": 4, "hot_standby": "on", "fsync": "off",
                "synchronous_commit": "off", "full_page_writes": "off"}
    _append(data / "postgresql.conf", settings)


def _append(conf: Path, settings: dict[str, object]) -> None:
    text = "".join(f"{name} = {value}\n" for name, value in settings.items())
    with conf.open("a") as handle:  # root may write the server user's file; the server only reads it
        handle.write(text)


def _start(data: Path) -> None:
    _run([str(BIN / "pg_ctl"), "-D", str(data), "-l", str(data.parent / f"{data.name}.log"), "-w", "-t", "60",
          "start"])


def _stop(data: Path) -> None:
    if (data / "postmaster.pid").exists():
        # already gone, or not stopping: the directory is removed anyway
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            _run([str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], timeout=30)


@contextmanager
def postgres_pair() -> Iterator[PostgresPair]:
    """A running primary and streaming replica with the writer on; everything stopped and removed after."""
    base = Path(tempfile.mkdtemp(prefix="bcd-pg-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(base, account.pw_uid, account.pw_gid)
    pair = PostgresPair(base, free_port(), free_port())
    primary, replica = base / "primary", base / "replica"
    try:
        _init_primary(primary, pair.primary_port, base)
        _start(primary)
        _run([str(BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(pair.primary_port), "-U", "postgres",
              "-D", str(replica), "-R", "-X", "stream", "--no-sync"])
        _append(replica / "postgresql.conf", {"port": pair.replica_port})
        _start(replica)
        pair.start_writer()
        pair.wait_replaying(below=2.0)
        yield pair
    finally:
        if pair.writer is not None:
            pair.writer.kill()
            pair.writer.wait()
        _stop(replica)
        _stop(primary)
        shutil.rmtree(base, ignore_errors=True)
