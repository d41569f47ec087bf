"""The garbage collector is switched only by the composition root: `bcd.config.load` leaves it alone (a reload
runs it in a thread, and a library call must not change the whole process), `bcd.app.load_config` turns it off
for the duration of the load (which is what keeps a large load fast)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bcd import config as config_module
from bcd.app import load_config


def estate(path: Path, services: int) -> Path:
    lines = ["instance: t", f"state_dir: {path.parent}", "sites: {dorset: {}, hampshire: {}}", "services:"]
    for index in range(services):
        lines += [f"  svc{index:05d}:", "    active: dorset", "    sites:"]
        for site in ("dorset", "hampshire"):
            lines.append(f"      {site}: {{probes: [{{name: health, http: {{url: 'http://127.0.0.1:1/'}}}}]}}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generation of each collection that starts while the test runs."""
    started: list[int] = []

    def record(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(info["generation"])

    gc.callbacks.append(record)
    try:
        yield started
    finally:
        gc.callbacks.remove(record)


def test_the_config_loader_leaves_the_collector_alone(tmp_path: Path, collections: list[int]) -> None:
    path = estate(tmp_path / "bcd.yaml", 1000)
    assert gc.isenabled()
    collections.clear()
    config_module.load(path)
    assert len(collections) > 10  # a large load with the collector on triggers collections (about 50 here)
    assert gc.isenabled()


def test_the_daemon_loads_with_the_collector_off(tmp_path: Path, collections: list[int]) -> None:
    path = estate(tmp_path / "bcd.yaml", 1000)
    collections.clear()  # writing the file may have collected
    config = load_config(str(path))
    during = len(collections)  # taken at once: the first container made after the load may collect
    assert during <= 1  # that one, made as the collector is switched back on (the plain load makes hundreds)
    assert gc.isenabled()  # on again afterwards
    assert len(list(config.all_probes())) == 2000
