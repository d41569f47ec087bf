"""One rule for every `*_file:` key: absolute as given, relative to $CREDENTIALS_DIRECTORY (else the working
directory), whatever the file is for: probe TLS, the MQTT link's TLS, passwords and keys, steps, etcd."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bcd.config import Config, parse
from bcd.probes.base import ProbeContext, ProbeSetupError
from bcd.probes.registry import build_probe
from tests.helpers import CertFiles

SITES = "sites: {dorset: {}}\n"


def probe(kind: str, spec: str) -> str:
    return SITES + f"services: {{lib: {{active: dorset, sites: {{dorset: {{probes: [{{name: p, {kind}: {spec}}}]}}}}}}}}\n"


def spec_of(config: Config) -> Any:
    return config.services["lib"].sites["dorset"].probes[0].spec


MQTT = SITES + "mqtt: {url: 'mqtts://127.0.0.1:8883', password_file: pw, ca_file: ca.pem, cert_file: c.pem, " \
    "key_file: k.pem, commands: {enabled: true, hmac_key_file: hmac}}\n"
STEP = SITES + "runbooks: {rb: {steps: [{name: s, http: {url: 'https://127.0.0.1/', ca_file: ca.pem}}]}}\n"
WEBHOOK = SITES + "alerts: {webhooks: [{url: 'http://127.0.0.1/', secret_file: secret}]}\n"
ETCD = "vantage: dorset\n" + SITES + "cluster: {name: c, etcd: {endpoints: ['https://127.0.0.1:2379'], " \
    "ca_file: ca.pem, cert_file: c.pem, key_file: k.pem}}\n"

CASES: list[tuple[str, str, Callable[[Config], list[str | None]], list[str]]] = [
    ("http probe TLS", probe("http", "{url: 'https://127.0.0.1/', ca_file: ca.pem, cert_file: c.pem, key_file: k.pem}"),
     lambda c: [spec_of(c).ca_file, spec_of(c).cert_file, spec_of(c).key_file], ["ca.pem", "c.pem", "k.pem"]),
    ("tcp probe TLS", probe("tcp", "{host: 127.0.0.1, port: 1, tls: true, ca_file: ca.pem}"),
     lambda c: [spec_of(c).ca_file], ["ca.pem"]),
    ("mqtt probe", probe("mqtt", "{url: 'mqtts://127.0.0.1', password_file: pw, ca_file: ca.pem}"),
     lambda c: [spec_of(c).password_file, spec_of(c).ca_file], ["pw", "ca.pem"]),
    ("MQTT link", MQTT, lambda c: [c.mqtt.password_file, c.mqtt.ca_file, c.mqtt.cert_file, c.mqtt.key_file,
                                   c.mqtt.commands.hmac_key_file] if c.mqtt else [],
     ["pw", "ca.pem", "c.pem", "k.pem", "hmac"]),
    ("http step", STEP, lambda c: [c.runbooks["rb"].steps[0].spec.ca_file], ["ca.pem"]),  # type: ignore[attr-defined]
    ("webhook", WEBHOOK, lambda c: [c.alerts.webhooks[0].secret_file], ["secret"]),
    ("etcd TLS", ETCD, lambda c: [c.cluster.etcd.ca_file, c.cluster.etcd.cert_file, c.cluster.etcd.key_file]
     if c.cluster else [], ["ca.pem", "c.pem", "k.pem"]),
]


@pytest.mark.parametrize(("text", "files", "names"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_relative_files_are_read_from_the_credentials_directory(
    text: str, files: Callable[[Config], list[str | None]], names: list[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert files(parse(text)) == [str(tmp_path / name) for name in names]


@pytest.mark.parametrize(("text", "files", "names"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_without_a_credentials_directory_relative_files_stay_relative_to_the_working_directory(
    text: str, files: Callable[[Config], list[str | None]], names: list[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert files(parse(text)) == names


def test_an_absolute_path_is_used_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    config = parse(probe("tcp", "{host: 127.0.0.1, port: 1, tls: true, ca_file: /etc/ssl/ca.pem}"))
    assert spec_of(config).ca_file == "/etc/ssl/ca.pem"


def test_a_probe_loads_its_ca_file_from_the_credentials_directory(
    short_lived_cert: CertFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ca.pem").write_bytes(short_lived_cert.cert.read_bytes())
    text = probe("http", "{url: 'https://127.0.0.1/', ca_file: ca.pem}")
    monkeypatch.chdir(tmp_path.parent)  # not where ca.pem is
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ProbeSetupError, match=r"cannot load ca_file ca\.pem"):
        build_probe(parse(text).services["lib"].sites["dorset"].probes[0], 1.0, ProbeContext())
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    build_probe(parse(text).services["lib"].sites["dorset"].probes[0], 1.0, ProbeContext())  # loads, no error
