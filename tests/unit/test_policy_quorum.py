"""The pure policy in a cluster: a failover needs a quorum of live vantages seeing the active site down,
no automatic action without coordination, and a vantage that sees everything down does not vote.

Tables of (snapshot with a `Quorum`) → status, guard, action, words in the reason; then operator requests."""

from __future__ import annotations

from typing import Any

import pytest

from bcd.model import Guard, RunKind, ServiceStatus, SiteState
from bcd.policy import Action, Quorum, Request, RunInfo, Vote, check_request, decide, quorum_needed
from tests.unit.test_policy import NOW, snap, transfer_rule

UP, DOWN, DEGRADED = SiteState.UP, SiteState.DOWN, SiteState.DEGRADED
FAILOVER, FAILBACK = RunKind.FAILOVER, RunKind.FAILBACK


def quorum(*votes: tuple[str, SiteState], needed: int | None = None, available: bool = True,
           suspect_self: bool = False, standbys: dict[str, tuple[tuple[str, SiteState], ...]] | None = None,
           executors: tuple[str, ...] | None = None) -> Quorum:
    """Votes on the active site as (vantage, state); `needed` defaults to a majority of them. `standbys`: votes
    on other sites, the same way (None: not counted)."""
    cast = tuple(Vote(vantage, state, "HTTP 503" if state is DOWN else "") for vantage, state in votes)
    others = None if standbys is None else {
        site: tuple(Vote(vantage, state, "HTTP 503" if state is DOWN else "") for vantage, state in site_votes)
        for site, site_votes in standbys.items()}
    return Quorum(available, cast, quorum_needed("majority", len(cast)) if needed is None else needed, suspect_self,
                  others, executors)


ALL_DOWN = quorum(("dorset", DOWN), ("hampshire", DOWN), ("witness", DOWN))
TWO_OF_THREE = quorum(("dorset", UP), ("hampshire", DOWN), ("witness", DOWN))
ONE_OF_TWO = quorum(("dorset", UP), ("hampshire", DOWN))
ONE_OF_THREE = quorum(("dorset", UP), ("hampshire", DOWN), ("witness", UP))
ALONE = quorum(("hampshire", DOWN))
BOTH_DOWN = (("dorset", DOWN), ("hampshire", DOWN))


def standby_votes(*hampshire: tuple[str, SiteState], kent: tuple[tuple[str, SiteState], ...] = ()) -> Quorum:
    """Both vantages see dorset (active) down; `hampshire` and `kent` are the votes on those standbys."""
    return quorum(*BOTH_DOWN, standbys={"hampshire": hampshire, "kent": kent})

DECISIONS: list[tuple[str, Any, ServiceStatus, Guard | None, Action | None, str]] = [
    ("every vantage sees it down: fail over", snap(DOWN, UP, quorum=ALL_DOWN), ServiceStatus.FAILING_OVER, None,
     Action(FAILOVER, "hampshire"), "quorum: 3 of 3 live vantages see dorset down, 2 needed"),
    ("a majority is enough", snap(DOWN, UP, quorum=TWO_OF_THREE), ServiceStatus.FAILING_OVER, None,
     Action(FAILOVER, "hampshire"), "2 of 3 live vantages see dorset down, 2 needed; down: hampshire, witness; "
     "dissenting: dorset up"),
    ("one of two is no majority", snap(DOWN, UP, quorum=ONE_OF_TWO), ServiceStatus.BLOCKED, Guard.NO_QUORUM, None,
     "payroll: failover blocked (no quorum: 1 of 2 live vantages see dorset down, 2 needed; down: hampshire; "
     "dissenting: dorset up): active dorset down"),
    ("one of three is no majority", snap(DOWN, UP, quorum=ONE_OF_THREE), ServiceStatus.BLOCKED, Guard.NO_QUORUM,
     None, "dissenting: dorset up, witness up"),
    ("the only live vantage decides alone", snap(DOWN, UP, quorum=ALONE), ServiceStatus.FAILING_OVER, None,
     Action(FAILOVER, "hampshire"), "1 of 1 live vantages see dorset down, 1 needed"),
    ("quorum all: one dissent blocks", snap(DOWN, UP, quorum=quorum(("a", DOWN), ("b", DOWN), ("c", UP), needed=3)),
     ServiceStatus.BLOCKED, Guard.NO_QUORUM, None, "2 of 3 live vantages see dorset down, 3 needed"),
    ("a fixed count beyond the live vantages cannot be reached",
     snap(DOWN, UP, quorum=quorum(("a", DOWN), needed=2)), ServiceStatus.BLOCKED, Guard.NO_QUORUM, None,
     "1 of 1 live vantages see dorset down, 2 needed"),
    ("a degraded vote is a dissent", snap(DOWN, UP, quorum=quorum(("a", DOWN), ("b", DEGRADED))),
     ServiceStatus.BLOCKED, Guard.NO_QUORUM, None, "dissenting: b degraded"),
    ("coordination unavailable: no automatic action",
     snap(DOWN, UP, quorum=quorum(("a", DOWN), ("b", DOWN), available=False)), ServiceStatus.BLOCKED,
     Guard.COORDINATION_UNAVAILABLE, None, "failover blocked (coordination unavailable: no automatic action)"),
    ("suspecting itself, a vantage does not vote",
     snap(DOWN, DOWN, quorum=quorum(("b", DOWN), suspect_self=True)), ServiceStatus.BLOCKED, Guard.NO_QUORUM, None,
     "suspecting its own network"),
    ("manual mode still needs the quorum", snap(DOWN, UP, quorum=ONE_OF_TWO, failover=transfer_rule("manual")),
     ServiceStatus.BLOCKED, Guard.NO_QUORUM, None, "no quorum"),
    ("manual mode with a quorum waits for an operator",
     snap(DOWN, UP, quorum=ALL_DOWN, failover=transfer_rule("manual")), ServiceStatus.FAILOVER_PENDING, None, None,
     "waits for an operator"),
    ("dry-run mode with a quorum", snap(DOWN, UP, quorum=ALL_DOWN, failover=transfer_rule("dry-run")),
     ServiceStatus.FAILOVER_PENDING, None, Action(FAILOVER, "hampshire", dry_run=True), "dry run of failover"),
    ("another vantage has the active site in maintenance: no automatic failover",
     snap(DOWN, UP, quorum=quorum(("a", DOWN), ("b", DOWN), ("c", SiteState.MAINTENANCE))), ServiceStatus.BLOCKED,
     Guard.MAINTENANCE, None, "site dorset in maintenance on c"),
    ("another vantage has the standby in maintenance: no automatic failover to it",
     snap(DOWN, UP, quorum=standby_votes(("dorset", UP), ("hampshire", UP), ("witness", SiteState.MAINTENANCE))),
     ServiceStatus.BLOCKED, Guard.MAINTENANCE, None, "site hampshire in maintenance on witness"),
    ("a guard of its own comes first (cooldown)",
     snap(DOWN, UP, quorum=ONE_OF_TWO, last_run_ended=NOW - 10), ServiceStatus.BLOCKED, Guard.COOLDOWN, None,
     "cooldown"),
    ("no standby up: nothing to vote about", snap(DOWN, DEGRADED, quorum=ONE_OF_TWO), ServiceStatus.BLOCKED,
     Guard.STANDBY_NOT_UP, None, "no standby up"),
    ("watch-only service: a human moves it", snap(DOWN, UP, quorum=ONE_OF_TWO, failover=None),
     ServiceStatus.FAILOVER_NEEDED, None, None, "active dorset down"),
    ("a run elsewhere in the cluster shows as in progress",
     snap(DOWN, UP, quorum=ALL_DOWN, running=RunInfo("hampshire:3", FAILOVER, "hampshire")),
     ServiceStatus.FAILING_OVER, Guard.RUN_IN_PROGRESS, None, "run hampshire:3 (failover to hampshire) in progress"),
    ("an interrupted run blocks whatever the votes", snap(DOWN, UP, quorum=ALL_DOWN,
                                                          unacknowledged=("7", Guard.RUN_INTERRUPTED)),
     ServiceStatus.BLOCKED, Guard.RUN_INTERRUPTED, None, "run 7 was interrupted"),
    ("healthy service: coordination does not matter", snap(UP, UP, quorum=quorum(("a", UP), available=False)),
     ServiceStatus.OK, None, None, "active site dorset up"),
    ("no automatic failback without coordination",
     snap(UP, UP, active="hampshire", quorum=quorum(("a", UP), available=False),
          failback=transfer_rule("auto", cooldown=0)),
     ServiceStatus.BLOCKED, Guard.COORDINATION_UNAVAILABLE, None, "failback to home site dorset blocked"),
    ("automatic failback with coordination",
     snap(UP, UP, active="hampshire", quorum=quorum(("a", UP)), failback=transfer_rule("auto", cooldown=0)),
     ServiceStatus.FAILING_OVER, None, Action(FAILBACK, "dorset"), "starting failback"),
    # the standby's health needs a quorum too
    ("a standby every vantage sees up is the target",
     snap(DOWN, UP, quorum=standby_votes(("dorset", UP), ("hampshire", UP))), ServiceStatus.FAILING_OVER, None,
     Action(FAILOVER, "hampshire"), "quorum: 2 of 2 live vantages see dorset down, 2 needed"),
    ("a standby up here only is not up for the cluster",
     snap(DOWN, UP, quorum=standby_votes(("dorset", UP), ("hampshire", DOWN))), ServiceStatus.BLOCKED,
     Guard.STANDBY_NOT_UP, None,
     "payroll: failover blocked: active dorset down (2 consecutive failures of health: HTTP 503); no standby up "
     "for a quorum of vantages (1 of 2 live vantages see hampshire up, 2 needed; dissenting: hampshire down "
     "(HTTP 503))"),
    ("a standby no peer has a view of is not up for the cluster",
     snap(DOWN, UP, quorum=standby_votes(("dorset", UP), ("hampshire", SiteState.UNKNOWN))), ServiceStatus.BLOCKED,
     Guard.STANDBY_NOT_UP, None, "dissenting: hampshire unknown"),
    ("the next standby a quorum sees up is the target",
     snap(DOWN, UP, UP, quorum=standby_votes(("dorset", UP), ("hampshire", DOWN),
                                             kent=(("dorset", UP), ("hampshire", UP)))),
     ServiceStatus.FAILING_OVER, None, Action(FAILOVER, "kent"), "standby kent up"),
    ("every standby short of a quorum: each one's votes are given",
     snap(DOWN, UP, UP, quorum=standby_votes(("dorset", UP), ("hampshire", DOWN),
                                             kent=(("dorset", UP), ("hampshire", DEGRADED)))),
     ServiceStatus.BLOCKED, Guard.STANDBY_NOT_UP, None,
     "(1 of 2 live vantages see hampshire up, 2 needed; dissenting: hampshire down (HTTP 503); 1 of 2 live "
     "vantages see kent up, 2 needed; dissenting: hampshire degraded)"),
    ("without coordination that guard speaks, not the standby's votes",
     snap(DOWN, UP, quorum=quorum(*BOTH_DOWN, available=False, standbys={"hampshire": (("dorset", UP),)})),
     ServiceStatus.BLOCKED, Guard.COORDINATION_UNAVAILABLE, None, "coordination unavailable"),
    ("a watch-only service: the standby needs a quorum to be named",
     snap(DOWN, UP, failover=None, quorum=standby_votes(("dorset", UP), ("hampshire", DOWN))),
     ServiceStatus.BLOCKED, Guard.STANDBY_NOT_UP, None, "no standby up for a quorum of vantages"),
    ("no automatic failback to a home only this vantage sees up",
     snap(UP, UP, active="hampshire", failback=transfer_rule("auto", cooldown=0),
          quorum=quorum(("dorset", UP), ("hampshire", UP), standbys={"dorset": (("dorset", UP), ("hampshire", DOWN))})),
     ServiceStatus.OK, None, None, "active site hampshire up"),
    ("automatic failback to a home a quorum sees up",
     snap(UP, UP, active="hampshire", failback=transfer_rule("auto", cooldown=0),
          quorum=quorum(("dorset", UP), ("hampshire", UP), standbys={"dorset": (("dorset", UP), ("hampshire", UP))})),
     ServiceStatus.FAILING_OVER, None, Action(FAILBACK, "dorset"), "starting failback"),
    # a witness (cluster.executor: false) votes; somebody live must execute
    ("a live executor: fail over", snap(DOWN, UP, quorum=quorum(*BOTH_DOWN, ("witness", DOWN),
                                                                  executors=("hampshire",))),
     ServiceStatus.FAILING_OVER, None, Action(FAILOVER, "hampshire"), "starting failover to hampshire"),
    ("only witnesses live: no executor",
     snap(DOWN, UP, quorum=quorum(("witness", DOWN), executors=())), ServiceStatus.BLOCKED, Guard.NO_EXECUTOR, None,
     "payroll: failover blocked (no executor: none of the live instances (witness) runs runbooks "
     "(cluster.executor: false); an executing instance must be live to take the lock): active dorset down"),
    ("no quorum speaks before no executor",
     snap(DOWN, UP, quorum=quorum(("witness", DOWN), ("other", UP), executors=())), ServiceStatus.BLOCKED,
     Guard.NO_QUORUM, None, "no quorum"),
    ("no automatic failback without an executor",
     snap(UP, UP, active="hampshire", quorum=quorum(("witness", UP), executors=()),
          failback=transfer_rule("auto", cooldown=0)),
     ServiceStatus.BLOCKED, Guard.NO_EXECUTOR, None, "failback to home site dorset blocked (no executor: "),
    ("manual mode without an executor is blocked too (nobody could run it)",
     snap(DOWN, UP, quorum=quorum(("witness", DOWN), executors=()), failover=transfer_rule("manual")),
     ServiceStatus.BLOCKED, Guard.NO_EXECUTOR, None, "no executor"),
]


@pytest.mark.parametrize(("snapshot", "status", "guard", "action", "words"),
                         [case[1:] for case in DECISIONS], ids=[case[0] for case in DECISIONS])
def test_decide_in_a_cluster(snapshot: Any, status: ServiceStatus, guard: Guard | None, action: Action | None,
                             words: str) -> None:
    decision = decide(snapshot, NOW)
    assert (decision.status, decision.guard, decision.action) == (status, guard, action), decision.reason
    assert words in decision.reason


def test_without_a_quorum_view_the_lone_instance_rules_hold() -> None:
    assert decide(snap(DOWN, UP), NOW) == decide(snap(DOWN, UP, quorum=None), NOW)
    assert decide(snap(DOWN, UP), NOW).action == Action(FAILOVER, "hampshire")


@pytest.mark.parametrize(("setting", "live", "needed"), [
    ("majority", 1, 1), ("majority", 2, 2), ("majority", 3, 2), ("majority", 4, 3), ("majority", 5, 3),
    ("all", 1, 1), ("all", 3, 3), ("all", 0, 1), (2, 3, 2), (2, 1, 2),
])
def test_quorum_needed(setting: str | int, live: int, needed: int) -> None:
    assert quorum_needed(setting, live) == needed


REQUESTS: list[tuple[str, Any, Request, str | None, Guard | None, str]] = [
    ("coordination unavailable refuses an operator", snap(DOWN, UP, quorum=quorum(("a", DOWN), available=False)),
     Request(FAILOVER), None, Guard.COORDINATION_UNAVAILABLE, "use force to act from this instance alone"),
    ("force acts without coordination", snap(DOWN, UP, quorum=quorum(("a", DOWN), available=False)),
     Request(FAILOVER, force=True), "hampshire", None, "forced failover to hampshire"),
    ("an operator is the quorum: no votes needed", snap(UP, UP, quorum=ONE_OF_TWO), Request(FAILOVER),
     "hampshire", None, "failover to hampshire"),
    ("a run elsewhere in the cluster conflicts", snap(DOWN, UP, quorum=ALL_DOWN,
                                                      running=RunInfo("hampshire:3", FAILOVER, "hampshire")),
     Request(FAILOVER, force=True), None, Guard.RUN_IN_PROGRESS, "run hampshire:3 of payroll is in progress"),
]


@pytest.mark.parametrize(("snapshot", "request_", "target", "guard", "words"),
                         [case[1:] for case in REQUESTS], ids=[case[0] for case in REQUESTS])
def test_operator_requests_in_a_cluster(snapshot: Any, request_: Request, target: str | None, guard: Guard | None,
                                        words: str) -> None:
    verdict = check_request(snapshot, request_, NOW)
    assert (verdict.to_site, verdict.guard) == (target, guard), verdict.reason
    assert words in verdict.reason


def test_describe_lists_votes_and_dissent_with_reasons() -> None:
    votes = Quorum(True, (Vote("dorset", UP, "all probes passing"), Vote("hampshire", DOWN, "HTTP 503")), 2)
    assert votes.describe("dorset") == ("1 of 2 live vantages see dorset down, 2 needed; down: hampshire; "
                                        "dissenting: dorset up (all probes passing)")
    assert votes.live == ("dorset", "hampshire")
    assert votes.down == ("hampshire",)
    assert not votes.reached


def test_describe_standby_counts_up_votes_only() -> None:
    votes = Quorum(True, (), 2, standbys={"hampshire": (Vote("dorset", UP), Vote("hampshire", DEGRADED, "slow"),
                                                        Vote("witness", UP))})
    assert votes.standby_up("hampshire")
    assert votes.describe_standby("hampshire") == ("2 of 3 live vantages see hampshire up, 2 needed; "
                                                   "dissenting: hampshire degraded (slow)")
    assert not votes.standby_up("kent")  # no votes on it at all
    assert Quorum(True, (), 2).standby_up("kent")  # standby votes not counted: this vantage's view decides
