"""Scoped roles: a token or an MQTT signing key limited to one council's services (by label) is refused on the
other council's, through the one place that decides (`bcd.operations`); `bcd token new` prints a token and a
config line that loads and authenticates; a scope that names no service is a config error at its line."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bcd.authority import Actor, Role, Selector
from bcd.bus import Bus
from bcd.cli import main
from bcd.config import ConfigError, load, parse
from bcd.engine import Engine
from bcd.journal import Journal
from bcd.mqtt.commands import Signer, sign
from bcd.mqtt.reader import CommandReader, MqttStats
from bcd.operations import Acknowledge, ApproveGate, Operations, Refusal, Refused, RunPlan
from bcd.web.auth import identify
from tests.unit.mqtt.test_commands import raw

ESTATE = """\
state_dir: {state}
sites: {{dorset: {{}}, hampshire: {{}}}}
services:
  payroll:
    active: dorset
    labels: {{owner: hampshire-cc}}
    sites:
      dorset: {{probes: [{{name: health, http: {{url: "http://127.0.0.1:1/"}}}}]}}
  library:
    active: dorset
    labels: {{owner: dorset-cc}}
    sites:
      dorset: {{probes: [{{name: health, http: {{url: "http://127.0.0.1:2/"}}}}]}}
"""
DORSET = Selector(labels={"owner": "dorset-cc"})
DORSET_KEY, HAMPSHIRE_KEY = b"dorset-cc-key-0123456789abcdef", b"hampshire-cc-key-0123456789abcd"


@pytest.fixture
async def operations(tmp_path: Path) -> AsyncIterator[Operations]:
    engine = Engine(parse(ESTATE.format(state=tmp_path)), Journal(tmp_path / "bcd.sqlite"), Bus())
    yield Operations(engine)
    engine.journal.close()


async def test_a_scoped_actor_is_refused_outside_its_scope_and_allowed_inside(operations: Operations) -> None:
    dorset_ops = Actor("dana", Role.OPERATOR, DORSET)
    refused = await operations.perform(Acknowledge("payroll", "dana"), dorset_ops)
    assert refused == Refused(Refusal.FORBIDDEN, "dana may act only on services labelled owner=dorset-cc; "
                                                 "payroll is not")
    allowed = await operations.perform(Acknowledge("library", "dana"), dorset_ops)
    assert allowed.detail == "nothing to acknowledge"  # type: ignore[union-attr]
    viewer = await operations.perform(Acknowledge("library", "vic"), Actor("vic", Role.VIEWER, DORSET))
    assert viewer == Refused(Refusal.FORBIDDEN, "vic is a viewer; this needs an operator")


async def test_an_mqtt_key_scoped_to_one_council_is_refused_on_the_other_councils_service(
    operations: Operations,
) -> None:
    keys = (Signer(DORSET_KEY, "dorset-cc", Role.OPERATOR, DORSET),
            Signer(HAMPSHIRE_KEY, "hampshire-cc", Role.OPERATOR, Selector(labels={"owner": "hampshire-cc"})))
    reader = CommandReader(operations, MqttStats())

    async def send(key: bytes, command_id: str, service: str) -> str:
        obj = {"id": command_id, "action": "ack", "service": service, "reason": "drill", "by": "dana",
               "ts": time.time()}
        _, text = await reader.handle(raw({**obj, "sig": sign(obj, key)}), keys, retained=False, max_age=60.0)
        return text

    assert await send(DORSET_KEY, "c1", "payroll") == (
        "refused: mqtt:dana may act only on services labelled owner=dorset-cc; payroll is not")
    assert await send(DORSET_KEY, "c2", "library") == "accepted: nothing to acknowledge"
    assert await send(HAMPSHIRE_KEY, "c3", "payroll") == "accepted: nothing to acknowledge"
    assert await send(b"someone-elses-key-0123456789", "c4", "library") == "refused: bad signature"


def test_token_new_prints_a_token_and_a_config_line_that_loads_and_authenticates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["token", "new", "dorset-ops", "--role", "operator", "--scope", "owner=dorset-cc"]) == 0
    lines = capsys.readouterr().out.splitlines()
    token, entry = lines[1], lines[3]
    assert len(token) >= 43 and entry.startswith("- {name: dorset-ops, role: operator, sha256: ")
    assert token not in entry  # only its hash goes into the config
    path = tmp_path / "bcd.yaml"
    path.write_text(ESTATE.format(state=tmp_path) + "auth:\n  tokens:\n    " + entry + "\n")
    config = load(path)
    assert identify(config.auth, f"Bearer {token}") == Actor("dorset-ops", Role.OPERATOR, DORSET)
    assert main(["token", "new", "ann", "--role", "approver"]) == 0
    other = capsys.readouterr().out.splitlines()
    assert other[1] != token  # random: a new one each time
    assert other[3] == f"- {{name: ann, role: approver, sha256: {hashlib.sha256(other[1].encode()).hexdigest()}}}"


def test_token_new_refuses_a_scope_that_is_not_label_equals_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "new", "x", "--role", "operator", "--scope", "dorset-cc"]) == 2
    assert "--scope 'dorset-cc': expected LABEL=VALUE" in capsys.readouterr().err


def test_a_scope_naming_no_service_is_an_error_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bcd.yaml"
    path.write_text(ESTATE.format(state=tmp_path) + f"""\
auth:
  tokens:
    - {{name: typo, role: operator, sha256: {"a" * 64}, scope: {{labels: {{owner: dorest-cc}}}}}}
mqtt:
  url: mqtt://127.0.0.1:1883
  commands:
    enabled: true
    keys:
      - name: hants
        hmac_key_file: hants-key
        scope: {{labels: {{owner: hants}}}}
""")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert [str(issue) for issue in caught.value.issues] == [
        f"{path}:16: auth.tokens.typo.scope: scope owner=dorest-cc matches no service (no service has those labels)",
        f"{path}:24: mqtt.commands.keys.hants.scope: scope owner=hants matches no service (no service has those "
        "labels)",
    ]


async def test_a_recovery_plan_is_an_operators_never_a_scoped_tokens_and_its_gate_an_approvers(
        operations: Operations) -> None:
    scoped = await operations.perform(RunPlan("evacuate", "dana", "drill"), Actor("dana", Role.OPERATOR, DORSET))
    assert scoped == Refused(Refusal.FORBIDDEN, "dana may act only on services labelled owner=dorset-cc; a recovery "
                                                "plan acts on services of every owner")
    approver = Actor("alice", Role.APPROVER)
    assert await operations.perform(RunPlan("evacuate", "alice", "drill"), approver) == Refused(
        Refusal.FORBIDDEN, "alice is an approver; this needs an operator")
    # allowed to ask: refused only because these bare operations have no plan runner
    gate = await operations.perform(ApproveGate(1, "alice"), approver)
    assert gate == Refused(Refusal.UNAVAILABLE, "recovery plans are not started")
    assert await operations.perform(ApproveGate(1, "vic"), Actor("vic", Role.VIEWER)) == Refused(
        Refusal.FORBIDDEN, "vic is a viewer; this needs an approver")
