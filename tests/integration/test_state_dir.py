"""`bcd run` against its state_dir and its port, as a subprocess on real files: one daemon per state_dir,
the port bound before any probe, a lost journal set aside loudly, a corrupt journal or an unwritable
state_dir refused with one line and exit 2 — never a traceback, never a probe or a step."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.daemon import free_port, write_config
from tests.helpers.files import fill, immutable, small_tmpfs
from tests.integration.runbooks.daemon_kit import WAIT, Bcd, Estate, open_estate

EXIT_USAGE = 2


@pytest.fixture
async def estate(tmp_path: Path) -> AsyncIterator[Estate]:
    async with open_estate(tmp_path) as estate:
        yield estate


async def refused(estate: Estate, config: dict[str, Any], path: Path | None = None) -> tuple[int, list[str], Bcd]:
    """Start `bcd run` on `config`, which must make it exit: its exit code and the stderr lines that are
    not JSON log lines."""
    path = write_config(path or estate.config_path, config)
    daemon = Bcd(path, int(config["server"]["listen"].rsplit(":", 1)[1]))
    await daemon.start()
    code = await daemon.exit_code(WAIT)
    return code, [line["line"] for line in daemon.log_lines if line.get("event") == "raw"], daemon


def no_probe_ran(estate: Estate) -> bool:
    return estate.dorset.requests == 0 and estate.hampshire.requests == 0


async def test_a_second_daemon_on_the_same_state_dir_exits_naming_the_first_and_touches_nothing(
    estate: Estate, tmp_path: Path
) -> None:
    hold = {"name": "hold", "command": {"argv": ["/bin/sleep", "60"]}}
    config = estate.config(steps=[hold], services={"payroll": estate.service(mode="manual")})
    first = await estate.start(config)
    started = await first.transfer("failover", force=True)
    assert started.status == 202, started
    run_id = started.body["id"]
    await first.wait_run(run_id, lambda r: bool(r["steps"]) and r["steps"][0]["outcome"] == "running")

    second_config = {**config, "server": {"listen": f"127.0.0.1:{free_port()}"}}
    code, lines, _ = await refused(estate, second_config, tmp_path / "second.yaml")
    assert first.proc is not None
    assert code == EXIT_USAGE
    assert lines == [f"bcd: state_dir {estate.state_dir} is in use by another bcd (pid {first.proc.pid}, which "
                     f"holds {estate.state_dir / 'bcd.lock'}): stop that daemon first, or give this one its own "
                     "state_dir"]

    run = await first.run(run_id)  # the second did not mark the first's live run interrupted
    assert (run["result"], run["steps"][0]["outcome"]) == ("running", "running")
    assert (await first.get("/healthz"))[0] == 200
    aborted = await first.call("POST", f"/api/v1/runs/{run_id}/abort", json_body={"reason": "test over"})
    assert aborted.status == 202, aborted
    assert (await first.wait_run(run_id))["result"] == "aborted"


async def test_a_port_in_use_is_one_line_and_exit_2_before_any_probe(estate: Estate) -> None:
    with socket.socket() as occupier:
        occupier.bind(("127.0.0.1", estate.port))
        occupier.listen()
        code, lines, daemon = await refused(estate, estate.config())
    assert code == EXIT_USAGE
    assert lines == [f"bcd: cannot listen on 127.0.0.1:{estate.port}: the address is in use (another bcd, or another "
                     "program): stop it, or set server.listen to a free address"]
    assert no_probe_ran(estate)
    assert not any(line.get("event") == "started" for line in daemon.log_lines)

    # the state_dir was left unlocked: the daemon starts once the port is free
    await estate.start(estate.config())


async def test_an_empty_journal_is_kept_aside_and_reported_as_an_error(estate: Estate) -> None:
    first = await estate.start(estate.config())
    await first.stop()
    journal = estate.state_dir / "bcd.sqlite"
    journal.write_bytes(b"")  # what a truncating backup tool or a full disk's recovery can leave

    daemon = await estate.start(estate.config())
    (kept,) = estate.state_dir.glob("bcd.sqlite.empty-*")
    lost = await daemon.wait_log(lambda line: line.get("event") == "journal_lost")
    assert lost["level"] == "error"
    assert (lost["journal"], lost["kept"]) == (str(journal), str(kept))
    assert "every service's active site reset to its home site" in lost["reason"]
    assert kept.stat().st_size == 0
    assert journal.stat().st_size > 0  # the new journal


async def test_a_fresh_state_dir_starts_quietly(estate: Estate) -> None:
    daemon = await estate.start(estate.config())
    assert not [line for line in daemon.log_lines if line.get("level") == "error"]
    assert not list(estate.state_dir.glob("bcd.sqlite.*"))


async def test_a_file_that_is_not_a_database_is_refused_and_left_as_it_is(estate: Estate) -> None:
    estate.state_dir.mkdir()
    journal = estate.state_dir / "bcd.sqlite"
    garbage = b"this is not an SQLite database\n" * 200
    journal.write_bytes(garbage)
    code, lines, _ = await refused(estate, estate.config())
    assert code == EXIT_USAGE
    assert lines == [f"bcd: the journal {journal} is not a usable SQLite database (file is not a database): restore "
                     "it from a backup, or move it (and any -wal/-shm files beside it) aside to start afresh with "
                     "every service on its home site"]
    assert journal.read_bytes() == garbage
    assert no_probe_ran(estate)


async def test_a_read_only_state_dir_is_one_line_and_exit_2(estate: Estate) -> None:
    estate.state_dir.mkdir()
    with immutable(estate.state_dir):
        code, lines, _ = await refused(estate, estate.config())
    assert code == EXIT_USAGE
    assert lines == [f"bcd: cannot write {estate.state_dir} (Operation not permitted): the state_dir and the files "
                     "in it must be writable by the user bcd runs as (check ownership, permissions, a read-only "
                     "mount, free space)"]
    assert no_probe_ran(estate)


async def test_a_read_only_state_dir_holding_a_journal_is_one_line_and_exit_2(estate: Estate) -> None:
    first = await estate.start(estate.config())
    await first.stop()
    with immutable(estate.state_dir):  # the lock file and journal can be opened, their WAL cannot be created
        code, lines, _ = await refused(estate, estate.config())
    assert code == EXIT_USAGE
    assert len(lines) == 1 and lines[0].startswith(f"bcd: cannot write {estate.state_dir / 'bcd.sqlite'} ("), lines
    assert lines[0].endswith("must be writable by the user bcd runs as (check ownership, permissions, a read-only "
                             "mount, free space)")


async def test_an_unwritable_journal_file_is_one_line_and_exit_2(estate: Estate) -> None:
    first = await estate.start(estate.config())
    await first.stop()
    journal = estate.state_dir / "bcd.sqlite"
    with immutable(journal):  # SQLite would quietly open it read-only
        code, lines, _ = await refused(estate, estate.config())
    assert code == EXIT_USAGE
    assert len(lines) == 1 and lines[0].startswith(f"bcd: cannot write {journal} ("), lines


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")
@pytest.mark.parametrize("free_kb", [8, 64])
async def test_a_new_state_dir_on_a_nearly_full_disk_is_one_line_and_exit_2(estate: Estate, free_kb: int) -> None:
    """Room for the lock and the open's check, not for the schema: this was a traceback."""
    with small_tmpfs(estate.state_dir.parent / "small", "1m") as disk:
        filler = fill(disk)
        os.truncate(filler, filler.stat().st_size - free_kb * 1024)
        config = estate.config()
        config["state_dir"] = str(disk / "state")
        code, lines, _ = await refused(estate, config)
    assert code == EXIT_USAGE
    assert len(lines) == 1 and lines[0].startswith(f"bcd: cannot write {disk / 'state' / 'bcd.sqlite'} ("), lines
    assert no_probe_ran(estate)
