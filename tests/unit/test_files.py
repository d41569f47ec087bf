"""`bcd files` in a checkout: the shipped files are the repository's own top-level ones (bcd/data/ holds only
symlinks to them, so there is one copy to edit), and `--copy DIR` copies them without ever overwriting.
The installed wheel is tested in tests/integration/test_wheel.py."""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

import pytest

from bcd import cli, files
from bcd.demo import DEMO_CONFIG

ROOT = Path(__file__).resolve().parents[2]


def test_bcd_data_holds_symlinks_to_the_top_level_directories() -> None:
    data = ROOT / "bcd" / "data"
    assert sorted(entry.name for entry in data.iterdir()) == sorted(files.TREES)
    for tree in files.TREES:
        assert (data / tree).is_symlink() and os.readlink(data / tree) == f"../../{tree}", tree


def test_bcd_files_prints_one_line_per_kind_naming_the_repository_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["files"]) == 0
    lines = [line.split(" ", 1) for line in capsys.readouterr().out.splitlines()]
    assert [kind for kind, _ in lines] == list(files.KINDS)
    for kind, printed in lines:
        assert Path(printed) == ROOT / files.KINDS[kind] and Path(printed).exists(), kind
    assert DEMO_CONFIG == ROOT / "config" / "demo.yaml"


def test_files_copy_writes_every_tree_and_then_refuses_to_overwrite(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["files", "--copy", str(tmp_path / "out")]) == 0
    printed = dict(line.split(" ", 1) for line in capsys.readouterr().out.splitlines())
    assert printed == {kind: str(tmp_path / "out" / relative) for kind, relative in files.KINDS.items()}
    for tree in files.TREES:
        compared = filecmp.dircmp(ROOT / tree, tmp_path / "out" / tree)
        assert not (compared.left_only or compared.right_only or compared.diff_files), tree
    (tmp_path / "out" / "systemd" / "bcd.service").write_text("# edited by the operator\n")
    (tmp_path / "out" / "grafana" / "dashboards" / "bcd-service.json").unlink()

    assert cli.main(["files", "--copy", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"bcd files: cannot copy into {tmp_path / 'out'}: would overwrite ")
    assert str(tmp_path / "out" / "systemd" / "bcd.service") in captured.err
    assert (tmp_path / "out" / "systemd" / "bcd.service").read_text() == "# edited by the operator\n"
    assert not (tmp_path / "out" / "grafana" / "dashboards" / "bcd-service.json").exists()  # nothing copied
