"""Fixtures shared by the whole suite: a real mosquitto broker, a self-signed certificate."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import CertFiles, free_port, make_cert, wait_for_port


@dataclass(frozen=True)
class Broker:
    """A running broker: connect to host:port (anonymous clients allowed). `log` is its output."""

    host: str
    port: int
    log: Path


def start_mosquitto(directory: Path, config: str | None = None, port: int | None = None) -> tuple[subprocess.Popen[bytes], Broker]:
    """Start mosquitto on 127.0.0.1 (`-p PORT`, or `-c` with `config` text whose listener uses `port`);
    return once it accepts connections. The caller terminates it."""
    executable = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(executable).exists():
        pytest.fail("mosquitto is not installed (make deps installs it)")
    port = port or free_port()
    log = directory / f"mosquitto-{port}.log"
    if config is None:
        argv = [executable, "-p", str(port)]
    else:
        conf = directory / f"mosquitto-{port}.conf"
        conf.write_text(config)
        argv = [executable, "-c", str(conf)]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, alive=lambda: process.poll() is None)
    except (RuntimeError, TimeoutError) as exc:
        stop(process)
        pytest.fail(f"mosquitto did not start: {exc}\n{log.read_text(errors='replace')}")
    return process, Broker("127.0.0.1", port, log)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A real mosquitto on a free loopback port for the whole session (anonymous access)."""
    process, broker = start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    yield broker
    stop(process)


@pytest.fixture(scope="session")
def short_lived_cert(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    """A self-signed certificate for localhost/127.0.0.1 that expires in one day."""
    return make_cert(tmp_path_factory.mktemp("tls"), days=1)
