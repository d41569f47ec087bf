"""A reload of the config through the operations layer (real Engine, real SQLite journal): who may ask (an
operator of no narrower scope), and what its outcome says. The reload itself is a recording stand-in here (the
daemon's is tested with the daemon: tests/integration/test_reload_sender.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bcd.authority import Actor, Role, Selector
from bcd.bus import Bus
from bcd.config import parse
from bcd.engine import Engine
from bcd.journal import Journal
from bcd.operations import Accepted, Operations, Refusal, Refused, Reload

CONFIG = """
state_dir: {state}
sites: {{dorset: {{}}}}
services:
  payroll:
    active: dorset
    sites: {{dorset: {{probes: [{{name: health, tcp: {{host: 127.0.0.1, port: 1}}}}]}}}}
"""


class Reloads:
    """Stands in for the daemon's reload: answers `problems`, remembers who asked."""

    def __init__(self, problems: list[str] | None) -> None:
        self.problems = problems
        self.asked: list[str] = []

    async def __call__(self, by: str) -> list[str] | None:
        self.asked.append(by)
        return self.problems


def operations(tmp_path: Path, reloads: Reloads | None) -> Operations:
    return Operations(Engine(parse(CONFIG.format(state=tmp_path)), Journal(tmp_path / "bcd.sqlite"), Bus()),
                      reload=reloads)


OPERATOR = Actor("alice", Role.OPERATOR)


async def test_an_operators_reload_is_carried_out_as_asked_by(tmp_path: Path) -> None:
    reloads = Reloads([])
    assert await operations(tmp_path, reloads).perform(Reload("api: alice"), OPERATOR) == Accepted("config reloaded")
    assert reloads.asked == ["api: alice"]


@pytest.mark.parametrize(("actor", "why"), [
    (Actor("grafana", Role.VIEWER), "grafana is a viewer; this needs an operator"),
    (Actor("bob", Role.APPROVER), "bob is an approver; this needs an operator"),
    (Actor("carol", Role.OPERATOR, Selector(labels={"owner": "dorset-cc"})),
     "carol may act only on services labelled owner=dorset-cc; a reload acts on services of every owner"),
])
async def test_a_reload_is_refused_to_a_lesser_role_or_a_scoped_operator(tmp_path: Path, actor: Actor,
                                                                          why: str) -> None:
    reloads = Reloads([])
    assert await operations(tmp_path, reloads).perform(Reload(f"api: {actor.name}"), actor) == Refused(
        Refusal.FORBIDDEN, why)
    assert reloads.asked == []


async def test_a_config_that_cannot_be_loaded_is_refused_as_invalid_with_its_problems(tmp_path: Path) -> None:
    problems = ["/etc/bcd/bcd.yaml:3: services.payroll.bogus: unknown key"]
    outcome = await operations(tmp_path, Reloads(problems)).perform(Reload("api: alice"), OPERATOR)
    assert outcome == Refused(Refusal.INVALID, "the config has 1 problem(s): the running config is kept",
                              problems=tuple(problems))


async def test_no_reload_while_the_daemon_starts_or_stops_or_without_one(tmp_path: Path) -> None:
    outcome = await operations(tmp_path, Reloads(None)).perform(Reload("api: alice"), OPERATOR)
    assert outcome == Refused(Refusal.UNAVAILABLE, "the daemon is starting or stopping: try again")
    outcome = await operations(tmp_path / "other", None).perform(Reload("api: alice"), OPERATOR)
    assert outcome == Refused(Refusal.UNAVAILABLE, "the daemon is starting or stopping: try again")
