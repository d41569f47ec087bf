"""lazy_import: a module's code runs on first attribute access, not at import."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bcd.lazy import lazy_import


@pytest.fixture
def module_dir(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [name for name in sys.modules if name.startswith("bcd_lazy_probe")]:
        del sys.modules[name]


def test_the_module_runs_on_first_use(module_dir: Path) -> None:
    (module_dir / "bcd_lazy_probe.py").write_text("import os\nos.environ['BCD_LAZY_PROBE'] = 'ran'\nVALUE = 42\n")
    module = lazy_import("bcd_lazy_probe")
    assert "BCD_LAZY_PROBE" not in __import__("os").environ
    assert module.VALUE == 42
    assert __import__("os").environ.pop("BCD_LAZY_PROBE") == "ran"
    assert lazy_import("bcd_lazy_probe") is module


def test_a_missing_module_fails_at_once() -> None:
    with pytest.raises(ModuleNotFoundError, match="bcd_no_such_module"):
        lazy_import("bcd_no_such_module")


def test_the_daemon_does_not_load_mqtt_until_used() -> None:
    import subprocess

    code = "import sys, bcd.app; print(type(sys.modules['paho.mqtt.client']).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "_LazyModule"


def test_the_daemon_does_not_load_dnspython_until_a_dns_probe_is_built() -> None:
    import subprocess

    code = ("import sys, bcd.app; print('dns.asyncquery' in sys.modules); "
            "from bcd.probes.registry import BY_NAME; from bcd.probes.dns import DnsSpec; "
            "from bcd.probes.base import ProbeContext; BY_NAME['dns'].build(DnsSpec(name='a', server='127.0.0.1'), 1.0, "
            "ProbeContext()); print('dns.asyncquery' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]
