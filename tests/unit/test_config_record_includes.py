"""A config load with `include:` journals the SHA-256 of every included file as well as the main file's, so an
auditor can match each council's file on disk against the load that used it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bcd import config as config_module
from bcd import config_record
from bcd.journal import Journal

MAIN = """
state_dir: {state}
sites: {{dorset: {{}}, hampshire: {{}}}}
include: [conf.d/*.yaml]
"""
COUNCIL = """
services:
  {name}:
    active: dorset
    sites: {{dorset: {{probes: [{{name: web, tcp: {{host: 127.0.0.1, port: {port}}}}}]}}}}
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_included_files_hashes_are_journaled_with_each_load(tmp_path: Path) -> None:
    main = tmp_path / "bcd.yaml"
    main.write_text(MAIN.format(state=tmp_path / "state"))
    (tmp_path / "conf.d").mkdir()
    dorset, hants = tmp_path / "conf.d" / "dorset.yaml", tmp_path / "conf.d" / "hants.yaml"
    dorset.write_text(COUNCIL.format(name="payroll", port=1))
    hants.write_text(COUNCIL.format(name="library", port=2))
    journal = Journal(tmp_path / "state" / "bcd.sqlite")
    for at in (10.0, 20.0):
        config = config_module.load(str(main))
        assert config_record.record(journal, str(main), config_record.effective(config), "start", at)
        hants.write_text(COUNCIL.format(name="library", port=3))  # changed before the second load
    first, second = (json.loads(row[0]) for row in journal.execute(
        "SELECT body FROM ledger WHERE kind = 'config' ORDER BY seq").fetchall())
    journal.close()
    assert first["sha256"] == second["sha256"] == sha256(main)  # the main file did not change
    assert second["included"] == {str(dorset): sha256(dorset), str(hants): sha256(hants)}
    assert first["included"][str(hants)] != second["included"][str(hants)]
    assert second["diff"] == {"changed": {"services.library.sites.dorset.probes[0].tcp.port": [2, 3]}}
