"""Which run records the lock holder deletes from etcd at the end of a run (`bcd.cluster.prunable`)."""

from __future__ import annotations

from typing import Any

import pytest

from bcd.cluster import prunable


def records(*runs: tuple[int, str, str | None]) -> dict[str, dict[str, Any]]:
    """(token, result, acknowledged_by) -> the records as read from the store, by key."""
    return {f"runs/web/{token}": {"token": token, "result": result, "acknowledged_by": by} for token, result, by in runs}


CASES: list[tuple[str, dict[str, dict[str, Any]], int, list[str]]] = [
    ("nothing beyond the newest", records((1, "succeeded", None), (2, "succeeded", None)), 2, []),
    ("the oldest finished ones go, newest first",
     records((3, "succeeded", None), (1, "succeeded", None), (4, "succeeded", None), (2, "succeeded", None)), 2,
     ["runs/web/2", "runs/web/1"]),
    ("by token, not by key order", records((9, "succeeded", None), (10, "succeeded", None), (100, "succeeded", None)),
     1, ["runs/web/10", "runs/web/9"]),
    ("an unfinished record stays whatever its age",
     records((1, "running", None), (2, "waiting_approval", None), (3, "succeeded", None), (4, "succeeded", None)), 1,
     ["runs/web/3"]),
    ("a failure nobody acknowledged stays; an acknowledged one goes",
     records((1, "failed", None), (2, "interrupted", "olive"), (3, "rolled_back", None), (4, "aborted", "olive"),
             (5, "succeeded", None)), 1, ["runs/web/4", "runs/web/2"]),
    ("keep 0 deletes every finished record", records((1, "succeeded", None), (2, "dry_run", None)), 0,
     ["runs/web/2", "runs/web/1"]),
    ("an unreadable record counts as the oldest", {"runs/web/x": {}, **records((1, "succeeded", None))}, 1,
     ["runs/web/x"]),
]


@pytest.mark.parametrize(("found", "keep", "deleted"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_prunable(found: dict[str, dict[str, Any]], keep: int, deleted: list[str]) -> None:
    assert prunable(found, keep) == deleted
