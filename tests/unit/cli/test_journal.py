"""`bcd journal verify` and `bcd journal export` as an operator runs them (a subprocess on real files), and the
config loads the ledger keeps (file hash, who, the effective config's diff with secrets masked)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bcd import config as config_module
from bcd import config_record
from bcd.journal import Journal
from bcd.journal.ledger_check import check_database, entries, open_readonly
from bcd.report.dates import period
from tests.helpers.daemon import write_config
from tests.helpers.sqlite_full import BIG, FullJournal
from tests.unit.journal.test_ledger import written

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def config_text(state_dir: Path, header: str = "Bearer ${PAYROLL_TOKEN}", interval: str = "10s",
                token: str = "a" * 64) -> str:
    return f"""
state_dir: {state_dir}
sites: {{dorset: {{}}, hampshire: {{}}}}
defaults: {{interval: {interval}}}
auth:
  tokens: [{{name: olive, role: operator, sha256: "{token}"}}]
services:
  payroll:
    active: dorset
    sites:
      dorset: {{probes: [{{name: health, http: {{url: "http://127.0.0.1:1/", headers: {{Authorization: "{header}"}}}}}}]}}
      hampshire: {{probes: [{{name: health, http: {{url: "http://127.0.0.1:2/"}}}}]}}
"""


def bcd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bcd", *args], capture_output=True, text=True, timeout=60,
                          env={"PAYROLL_TOKEN": "s3cret-token", "PATH": "/usr/bin:/bin"}, check=False)


@pytest.fixture
def estate(tmp_path: Path) -> Path:
    """A config whose state_dir holds a journal with events, a run and its steps."""
    written(tmp_path / "state" / "bcd.sqlite").close()
    return write_config(tmp_path / "bcd.yaml", config_text(tmp_path / "state"))


def test_verify_exits_0_when_intact_and_1_naming_the_first_break(estate: Path, tmp_path: Path) -> None:
    intact = bcd("journal", "verify", "-c", str(estate))
    assert intact.returncode == EXIT_OK, intact.stderr
    assert "bcd.sqlite: intact: 11 entries (seq 1..11) from genesis, 6 rows checked against them; head 11 " in (
        intact.stdout)
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "bcd.sqlite")) as db:
        db.execute("UPDATE events SET reason = 'nothing' WHERE id = 3")
        db.commit()
    broken = bcd("journal", "verify", "-c", str(estate))
    assert broken.returncode == EXIT_FAILED
    assert broken.stdout.splitlines()[0].endswith(
        "NOT intact: the chain breaks at entry 4: entry 4 (events 3) was changed: its hash does not match its "
        "content")


def test_an_export_verifies_offline_and_a_changed_line_fails(estate: Path, tmp_path: Path) -> None:
    out = tmp_path / "export.jsonl"
    done = bcd("journal", "export", "-c", str(estate), "--from", "1970-01-01", "--to", "1970-01-01T00:00:04Z", "-o",
               str(out))
    assert done.returncode == EXIT_OK and done.stderr.strip() == f"exported 3 entries from {tmp_path}/state/bcd.sqlite"
    lines = out.read_text().splitlines()
    assert [json.loads(line)["body"]["reason"] for line in lines] == ["change 0", "change 1", "change 2"]
    checked = bcd("journal", "verify", "--file", str(out))
    assert checked.returncode == EXIT_OK and "intact: 3 entries (seq 2..4) after " in checked.stdout
    out.write_text("\n".join([lines[0], lines[1].replace("change 1", "change X"), lines[2]]) + "\n")
    changed = bcd("journal", "verify", "--file", str(out))
    assert changed.returncode == EXIT_FAILED
    assert "the chain breaks at entry 3: entry 3 (events 2) was changed" in changed.stdout


def test_export_to_a_day_includes_that_whole_day_as_report_to_does(estate: Path, tmp_path: Path) -> None:
    out = tmp_path / "export.jsonl"
    done = bcd("journal", "export", "-c", str(estate), "--from", "1970-01-01", "--to", "1970-01-01", "-o", str(out))
    assert done.returncode == EXIT_OK, done.stderr
    with contextlib.closing(open_readonly(tmp_path / "state" / "bcd.sqlite")) as db:
        day = [entry[0] for entry in entries(db) if entry[1] < 86400]  # the three events at 1, 2 and 3 s
        assert len(day) < len(list(entries(db)))  # the entries made now (the run, its steps, …) are left out
    assert [json.loads(line)["seq"] for line in out.read_text().splitlines()] == day
    assert period("1970-01-01", "1970-01-01") == (0.0, 86400.0)  # `bcd report`'s period: the same day


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    empty = write_config(tmp_path / "bcd.yaml", config_text(tmp_path / "nothing"))
    missing = bcd("journal", "verify", "-c", str(empty))
    assert missing.returncode == EXIT_USAGE and "no journal there" in missing.stderr
    assert bcd("journal", "verify").returncode == EXIT_USAGE
    assert bcd("journal", "verify", "--file", str(tmp_path / "none.jsonl")).returncode == EXIT_USAGE
    bad_date = bcd("journal", "export", "-c", str(empty), "--from", "yesterday")
    assert bad_date.returncode == EXIT_USAGE and "expected a date such as 2026-07-01" in bad_date.stderr
    reversed_period = bcd("journal", "export", "-c", str(empty), "--from", "2026-12-08", "--to", "2026-12-01")
    assert reversed_period.returncode == EXIT_USAGE
    assert "the period must end after it starts" in reversed_period.stderr


def test_an_empty_file_is_not_called_intact(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    checked = bcd("journal", "verify", "--file", str(tmp_path / "empty.jsonl"))
    assert checked.returncode == EXIT_FAILED
    assert "nothing verified: the file holds no entries" in checked.stdout


@pytest.fixture
def loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Journal]:
    """A config whose header takes $PAYROLL_TOKEN (set), and a journal to record its loads in."""
    monkeypatch.setenv("PAYROLL_TOKEN", "s3cret-token")
    path = write_config(tmp_path / "bcd.yaml", config_text(tmp_path / "state"))
    journal = Journal(tmp_path / "state" / "bcd.sqlite")
    return path, journal


def load_and_record(journal: Journal, path: Path, by: str, at: float) -> config_module.Config:
    """Load the config at `path` and journal the load, as the daemon does at a start or reload."""
    config = config_module.load(str(path))
    assert config_record.record(journal, str(path), config_record.effective(config), by, at)
    return config


def test_config_loads_are_chained_with_the_file_hash_who_and_a_masked_diff(
    loads: tuple[Path, Journal], tmp_path: Path
) -> None:
    path, journal = loads
    load_and_record(journal, path, "start", 10.0)
    write_config(path, config_text(tmp_path / "state", "Bearer ${PAYROLL_TOKEN}-v2", interval="5s"))
    second = load_and_record(journal, path, "SIGHUP", 20.0)
    rows = journal.execute("SELECT body FROM ledger WHERE kind = 'config' ORDER BY seq").fetchall()
    journal.close()
    start, reload = (json.loads(row[0]) for row in rows)
    assert start["by"] == "start" and start["diff"]["first_load"] is True
    assert reload["by"] == "SIGHUP" and len(reload["sha256"]) == 64 and reload["sha256"] != start["sha256"]
    header = "services.payroll.sites.dorset.probes[0].http.headers.Authorization"
    assert reload["diff"] == {"changed": {"defaults.interval": ["10s", "5s"], header: ["Bearer ***", "Bearer ***-v2"]}}
    assert "s3cret" not in json.dumps(rows)
    assert config_record.effective(second)["auth.tokens[0].sha256"] == "***"


def test_a_changed_secret_is_marked_changed_in_the_diff_and_never_journaled_or_logged(
    loads: tuple[Path, Journal], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, journal = loads
    with capture_logs() as logs:
        load_and_record(journal, path, "start", 10.0)
        monkeypatch.setenv("PAYROLL_TOKEN", "n3w-s3cret")  # the same text masked: "Bearer ***"
        write_config(path, config_text(tmp_path / "state", token="b" * 64))  # "***" either way
        load_and_record(journal, path, "SIGHUP", 20.0)
        load_and_record(journal, path, "SIGHUP", 30.0)  # nothing changed since
    rows = journal.execute("SELECT body FROM ledger WHERE kind = 'config' ORDER BY seq").fetchall()
    snapshot = journal.execute("SELECT flat FROM config_snapshot").fetchone()[0]
    journal.close()
    _, changed, same = (json.loads(row[0])["diff"] for row in rows)
    header = "services.payroll.sites.dorset.probes[0].http.headers.Authorization"
    assert changed == {"changed": {"auth.tokens[0].sha256": ["***", "*** (changed)"],
                                   header: ["Bearer ***", "Bearer *** (changed)"]}}
    assert same == {}
    kept = json.dumps(rows) + zlib.decompress(snapshot).decode() + json.dumps(logs)
    assert not any(secret in kept for secret in ("s3cret-token", "n3w-s3cret", "a" * 64, "b" * 64))


def test_a_snapshot_kept_before_fingerprints_is_diffed_against_as_it_is(loads: tuple[Path, Journal]) -> None:
    path, journal = loads
    flat = dict(config_record.effective(config_module.load(str(path))))
    journal.execute("CREATE TABLE config_snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), flat BLOB NOT NULL)")
    journal.execute("INSERT INTO config_snapshot VALUES (1, ?)", (zlib.compress(json.dumps(flat).encode()),))
    load_and_record(journal, path, "start", 10.0)  # an upgrade: the old snapshot holds no fingerprints
    load_and_record(journal, path, "SIGHUP", 20.0)
    rows = journal.execute("SELECT body FROM ledger WHERE kind = 'config' ORDER BY seq").fetchall()
    journal.close()
    assert [json.loads(row[0])["diff"] for row in rows] == [{}, {}]


def test_a_journal_without_a_ledger_is_not_intact_and_one_that_is_no_database_exits_2(
    estate: Path, tmp_path: Path
) -> None:
    journal = tmp_path / "state" / "bcd.sqlite"
    with contextlib.closing(sqlite3.connect(journal)) as db:
        db.execute("DROP TABLE ledger")  # as a bcd before the chain left it
        db.commit()
    old = bcd("journal", "verify", "-c", str(estate))
    assert old.returncode == EXIT_FAILED and "has no ledger (written by a bcd before the chain existed)" in old.stdout
    journal.write_bytes(b"not a database at all" * 100)
    broken = bcd("journal", "verify", "-c", str(estate))
    assert broken.returncode == EXIT_USAGE and "cannot be read as a journal: file is not a database" in broken.stderr


def test_a_config_load_the_journal_cannot_take_is_logged_and_the_journal_stays_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYROLL_TOKEN", "s3cret-token")
    path = write_config(tmp_path / "bcd.yaml", config_text(tmp_path / "state"))
    journal = Journal(tmp_path / "state" / "bcd.sqlite")
    disk = FullJournal(journal)
    disk.fill()
    flat = {f"padding.{n}": BIG for n in range(4)}  # a snapshot that needs pages the full file does not have
    with capture_logs() as logs:
        assert not config_record.record(journal, str(path), flat, "start", 10.0)
    assert [line["event"] for line in logs] == ["config_load_not_journaled"]
    disk.free()
    assert config_record.record(journal, str(path), flat, "SIGHUP", 20.0)
    journal.close()
    with contextlib.closing(open_readonly(tmp_path / "state" / "bcd.sqlite")) as db:
        assert check_database(db).problems == []
