"""The chaos soak's end-of-run checks (bench/soak.py): what the recorder, the journal and the daemon's logs
say about the run, compared. Each check returns a `Check` with the lines that explain it."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GROUP_COMMIT_SPAN = 1.0  # s: events of one group commit are emitted within 50 ms; slack for a loaded loop
WARM_UP = 30.0  # s after an incarnation is ready before its memory and fd samples count
MIN_SPAN = 30.0  # s of samples after warm-up needed to judge an incarnation's slope
RSS_SLOPE_LIMIT = 30.0  # MB/h
RSS_GROWTH_LIMIT = 3.0  # MB over the judged window: below this, a slope is noise
FD_SLOPE_LIMIT = 60.0  # fds/h
FD_GROWTH_LIMIT = 5.0  # fds over the judged window


@dataclass
class Incarnation:
    """One run of the daemon under the supervisor."""

    number: int
    pid: int
    spawned: float
    log_path: Path
    lines: list[dict[str, Any]] = field(default_factory=list)
    ready_at: float | None = None
    died: float | None = None
    exit_code: int | None = None
    ended_by: str = ""  # "kill -9", "kill -9 mid-step", "SIGTERM", or "" (died on its own)
    samples: list[tuple[float, float, int]] = field(default_factory=list)  # (time, RSS MB, open fds)

    @property
    def killed(self) -> bool:
        return self.ended_by.startswith("kill -9")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    summary: str
    details: tuple[str, ...] = ()


@dataclass(frozen=True)
class StepRun:
    """One execution of soak_step.py as the recorder saw it."""

    run_id: int
    step: str
    pid: int
    start: float
    end: float | None


def read_recorder(path: Path) -> tuple[list[StepRun], list[str]]:
    """Executions by start line, and lines that do not parse (a torn line would be a finding)."""
    starts: dict[tuple[int, str, int], float] = {}
    ends: dict[tuple[int, str, int], float] = {}
    bad: list[str] = []
    order: list[tuple[int, str, int]] = []
    for line in path.read_text().splitlines() if path.exists() else []:
        parts = line.split()
        if len(parts) != 5 or parts[3] not in ("start", "end") or not parts[0].isdigit():
            bad.append(line)
            continue
        key = (int(parts[0]), parts[1], int(parts[2]))
        if parts[3] == "start":
            starts[key] = float(parts[4])
            order.append(key)
        else:
            ends[key] = float(parts[4])
    return [StepRun(*key, starts[key], ends.get(key)) for key in order], bad


@dataclass(frozen=True)
class JournalView:
    runs: dict[int, str]  # id -> result
    services: dict[int, str]  # run id -> service
    steps: dict[tuple[int, str], tuple[str, str, float | None]]  # (run, name) -> (kind, outcome, ended)
    transitions: list[tuple[float, tuple[str, str, str, str, str]]]  # (at, (service, site, from, to, reason))


def read_journal(path: Path) -> JournalView:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        runs = dict(db.execute("SELECT id, result FROM runs"))
        services = dict(db.execute("SELECT id, service FROM runs"))
        rows = db.execute("SELECT run_id, name, kind, outcome, ended FROM steps")
        steps = {(run, name): (kind, outcome, ended) for run, name, kind, outcome, ended in rows}
        transitions = []
        for at, service, site, reason, data in db.execute(
            "SELECT at, service, site, reason, data FROM events WHERE kind = 'site_transition' ORDER BY id"
        ):
            fields = json.loads(data)
            transitions.append((at, (service, site, fields["from"], fields["to"], reason)))
    db.close()
    return JournalView(runs, services, steps, transitions)


def owner(incarnations: list[Incarnation], at: float) -> Incarnation | None:
    """The incarnation alive at `at` (incarnations never overlap: the supervisor starts one after another)."""
    for inc in incarnations:
        if inc.spawned <= at and (inc.died is None or at <= inc.died):
            return inc
    return None


def successor(incarnations: list[Incarnation], inc: Incarnation) -> Incarnation | None:
    later = [other for other in incarnations if other.number > inc.number]
    return later[0] if later else None


def check_steps_once(executions: list[StepRun], bad_lines: list[str]) -> Check:
    counts = Counter((e.run_id, e.step) for e in executions)
    twice = sorted(key for key, n in counts.items() if n > 1)
    details = [f"run {run} step {step} started {counts[(run, step)]} times" for run, step in twice]
    details += [f"unreadable recorder line: {line!r}" for line in bad_lines]
    return Check("no step ran twice", not details,
                 f"{len(executions)} step executions, {len(counts)} distinct (run, step), {len(twice)} twice",
                 tuple(details))


def check_runs_kept(executions: list[StepRun], journal: JournalView) -> Check:
    """Every run and step the recorder saw is journaled; every command step the journal says finished
    (succeeded or failed) ran, to its end; none is left `running` after the clean stop."""
    details: list[str] = []
    seen = {(e.run_id, e.step): e for e in executions}
    for run_id in sorted({e.run_id for e in executions} - set(journal.runs)):
        details.append(f"run {run_id} ran steps but is not in the journal")
    for (run_id, step) in sorted(seen):
        if (run_id, step) not in journal.steps:
            details.append(f"run {run_id} step {step} ran but is not in the journal")
    commands = {key: value for key, value in journal.steps.items() if value[0] == "command"}
    for key, (_kind, outcome, _ended) in sorted(commands.items()):
        execution = seen.get(key)
        if outcome in ("succeeded", "failed") and (execution is None or execution.end is None):
            details.append(f"run {key[0]} step {key[1]} is {outcome} in the journal but the recorder saw "
                           + ("no start" if execution is None else "no end"))
        if outcome in ("running", ""):
            details.append(f"run {key[0]} step {key[1]} still `running` in the journal after the clean stop")
    unfinished = sorted(run for run, result in journal.runs.items() if result == "running")
    details += [f"run {run} still `running` in the journal after the clean stop" for run in unfinished]
    results = Counter(journal.runs.values())
    summary = (f"{len(journal.runs)} runs journaled ({', '.join(f'{n} {r}' for r, n in sorted(results.items()))}), "
               f"{len(commands)} command steps; recorder saw {len({e.run_id for e in executions})} runs")
    return Check("no run lost", not details, summary, tuple(details))


def check_ran_on(executions: list[StepRun], journal: JournalView, incarnations: list[Incarnation],
                 alive_at_ready: set[tuple[int, str]]) -> tuple[Check, list[str]]:
    """A step whose daemon was killed must not run on unknown: still running when the next daemon was ready
    fails the soak; finishing in the gap before (nobody alive could stop it) is reported, not failed."""
    failing: list[str] = []
    info: list[str] = []
    for e in executions:
        inc = owner(incarnations, e.start)
        if inc is None or not inc.killed or inc.died is None or (e.end is not None and e.end <= inc.died):
            continue
        outcome = journal.steps.get((e.run_id, e.step), ("", "?", None))[1]
        nxt = successor(incarnations, inc)
        ready = nxt.ready_at if nxt is not None else None
        what = f"run {e.run_id} step {e.step} (pid {e.pid}, journal: {outcome})"
        if (e.run_id, e.step) in alive_at_ready or (e.end is not None and ready is not None and e.end > ready):
            end = f"ended {e.end - inc.died:.1f}s after" if e.end is not None else "never ended after"
            failing.append(f"{what} ran on after its daemon's kill -9: still running when incarnation "
                           f"{nxt.number if nxt else '?'} was ready; {end} the kill")
        elif e.end is not None:
            info.append(f"{what} finished {e.end - inc.died:.1f}s after its daemon's kill -9, before the restarted "
                        "daemon was ready")
    gaps = restart_times(incarnations)
    gap = f"; kill -9 to ready again {min(gaps):.1f}-{max(gaps):.1f}s" if gaps else ""
    return Check("no step outlived a crash", not failing,
                 f"{len(failing)} step processes ran on past the restart, {len(info)} finished during the restart gap"
                 + gap,
                 tuple(failing)), info


def logged_transitions(inc: Incarnation) -> list[tuple[str, str, str, str, str]]:
    return [(line.get("service", ""), line.get("site", ""), line.get("from_state", ""), line.get("to_state", ""),
             line.get("reason", "")) for line in inc.lines if line.get("event") == "site_transition"]


def check_transitions(journal: JournalView, incarnations: list[Incarnation]) -> Check:
    """Per incarnation, the logged transitions are the journaled ones in the same order (a line is logged
    only after its group commit). A daemon killed by kill -9 may have committed its last group and died
    before writing its lines: then the missing lines are a tail of its journal, within one group commit."""
    details: list[str] = []
    allowed = 0
    journaled: dict[int, list[tuple[float, tuple[str, str, str, str, str]]]] = {i.number: [] for i in incarnations}
    for at, transition in journal.transitions:
        inc = owner(incarnations, at)
        if inc is None:
            details.append(f"journaled transition at {at:.3f} by no incarnation: {transition}")
        else:
            journaled[inc.number].append((at, transition))
    for inc in incarnations:
        wanted, logged = journaled[inc.number], logged_transitions(inc)
        if [t for _, t in wanted[:len(logged)]] != logged:
            diverge = next((i for i, (a, b) in enumerate(zip(wanted, logged, strict=False)) if a[1] != b), None)
            where = diverge if diverge is not None else min(len(wanted), len(logged))
            details.append(f"incarnation {inc.number}: log and journal differ at transition {where} "
                           f"({len(logged)} logged, {len(wanted)} journaled)")
            continue
        tail = wanted[len(logged):]
        if not tail:
            continue
        span = tail[-1][0] - tail[0][0]
        if inc.killed and span <= GROUP_COMMIT_SPAN:
            allowed += len(tail)
        else:
            details.append(f"incarnation {inc.number} ({inc.ended_by or 'died'}): {len(tail)} journaled transitions "
                           f"never logged (spanning {span:.2f}s), first {tail[0][1]}")
    total_logged = sum(len(logged_transitions(i)) for i in incarnations)
    return Check("every transition journaled and logged", not details,
                 f"{len(journal.transitions)} journaled, {total_logged} logged; {allowed} unlogged in the last group "
                 "commit before a kill -9 (allowed)", tuple(details))


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of value over time, per hour."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return 3600 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var


def check_flat(incarnations: list[Incarnation], which: int, name: str, unit: str, *, slope_limit: float,
               growth_limit: float) -> Check:
    """Slope of RSS (which=1) or fds (which=2) per incarnation over its samples after warm-up; an
    incarnation is judged when those span MIN_SPAN; it fails when both slope and fitted growth are above limits."""
    details: list[str] = []
    lines: list[str] = []
    peak = max((s[which] for inc in incarnations for s in inc.samples), default=0)
    judged = 0
    worst = 0.0
    for inc in incarnations:
        if inc.ready_at is None:
            continue
        points = [(s[0], float(s[which])) for s in inc.samples if s[0] >= inc.ready_at + WARM_UP]
        if len(points) < 5 or points[-1][0] - points[0][0] < MIN_SPAN:
            continue
        judged += 1
        slope = slope_per_hour(points)
        worst = max(worst, slope)
        growth = slope * (points[-1][0] - points[0][0]) / 3600
        lines.append(f"incarnation {inc.number}: {slope:+.1f} {unit}/h over {points[-1][0] - points[0][0]:.0f}s "
                     f"({points[0][1]:.1f} → {points[-1][1]:.1f} {unit})")
        if slope > slope_limit and growth > growth_limit:
            details.append(lines[-1] + f": above {slope_limit:g} {unit}/h")
    summary = (f"max {peak:.1f} {unit}; worst slope {worst:+.1f} {unit}/h over {judged} incarnations judged "
               f"(fails above {slope_limit:g} {unit}/h with more than {growth_limit:g} {unit} fitted growth)")
    return Check(name, not details, summary, tuple(details or lines))


def check_memory(incarnations: list[Incarnation]) -> Check:
    return check_flat(incarnations, 1, "memory flat", "MB", slope_limit=RSS_SLOPE_LIMIT, growth_limit=RSS_GROWTH_LIMIT)


def check_fds(incarnations: list[Incarnation]) -> Check:
    return check_flat(incarnations, 2, "fds flat", "fds", slope_limit=FD_SLOPE_LIMIT, growth_limit=FD_GROWTH_LIMIT)


UNHANDLED = ("Task exception was never retrieved", "Exception in callback", "Unhandled exception")


def check_one_run_at_a_time(members: list[tuple[list[StepRun], JournalView, list[Incarnation]]]) -> Check:
    """No two runs of one service had steps running at the same moment, in one daemon or across a cluster.
    A step with no `end` line counts until its daemon died."""
    spans: dict[str, list[tuple[float, float, str]]] = {}
    for index, (executions, journal, incarnations) in enumerate(members):
        for e in executions:
            inc = owner(incarnations, e.start)
            end = e.end if e.end is not None else (inc.died if inc is not None and inc.died else e.start)
            who = f"member {index + 1} run {e.run_id}" if len(members) > 1 else f"run {e.run_id}"
            spans.setdefault(journal.services.get(e.run_id, "?"), []).append((e.start, end, who))
    details: list[str] = []
    for service, items in sorted(spans.items()):
        items.sort()
        last_end, last_who = float("-inf"), ""
        for start, end, who in items:
            if start < last_end and who != last_who:
                details.append(f"{service}: {who} started a step {last_end - start:.1f}s before {last_who} ended")
            if end > last_end:
                last_end, last_who = end, who
    count = sum(len(items) for items in spans.values())
    return Check("one run per service at a time", not details, f"{count} step executions over {len(spans)} services",
                 tuple(details))


def last_error(traceback: str) -> str:
    """The exception line of a (possibly grouped) traceback: its last line that is not a frame."""
    for line in reversed(traceback.splitlines()):
        text = line.strip(" |+-")
        if text:
            return text[:200]
    return "?"


def restart_times(incarnations: list[Incarnation]) -> list[float]:
    """Seconds from each kill -9 to the next incarnation's readiness."""
    times = []
    for inc in incarnations:
        nxt = successor(incarnations, inc)
        if inc.killed and inc.died is not None and nxt is not None and nxt.ready_at is not None:
            times.append(nxt.ready_at - inc.died)
    return times


def check_logs(incarnations: list[Incarnation], broker_stops: list[float]) -> Check:
    """No unhandled exception in any log; the MQTT link of an incarnation drops only when the broker stops."""
    details: list[str] = []
    errors: Counter[str] = Counter()
    for inc in incarnations:
        for line in inc.lines:
            event = str(line.get("event", ""))
            if line.get("level") in ("error", "critical"):
                errors[event.split("\n", 1)[0][:60]] += 1
            if event.startswith(UNHANDLED) or "exception" in line:
                cause = f" ({last_error(str(line['exception']))})" if "exception" in line else ""
                details.append(f"{event.splitlines()[0][:160]}{cause}")
        end = inc.died if inc.died is not None else float("inf")
        stops = sum(1 for at in broker_stops if inc.spawned <= at <= end)
        losses = sum(1 for line in inc.lines if line.get("event") == "mqtt_connection_lost")
        if losses > stops:
            details.append(f"incarnation {inc.number}: MQTT link lost {losses} times, broker stopped {stops}")
    summary = "error lines: " + (", ".join(f"{n} {e}" for e, n in sorted(errors.items())) or "none")
    counted = Counter(details)
    return Check("no unexplained error", not details, summary,
                 tuple(f"{n}x {line}" if n > 1 else line for line, n in counted.items()))


def resources(pid: int) -> tuple[float, float, int]:
    """(now, resident MB, open fds) of `pid`, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
    return time.time(), rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def step_alive(pid: int) -> bool:
    """True if `pid` is still a soak step process (not a reused pid)."""
    try:
        return b"soak_step.py" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def print_summary(figures: dict[str, Counter[str]], notes: list[str], results: list[Check]) -> None:
    """What the soak did (counts), notes, then one line per check with its findings under it."""
    for name, counts in figures.items():
        print(f"{name}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    for line in notes:
        print(f"note: {line}")
    width = max(len(c.name) for c in results)
    print(f"\n{'check':<{width}}  result  figures")
    for c in results:
        print(f"{c.name:<{width}}  {'ok' if c.ok else 'FAIL':<6}  {c.summary}")
        for detail in c.details[:20]:
            print(f"{'':<{width}}          {'' if c.ok else 'finding: '}{detail}")
        if len(c.details) > 20:
            print(f"{'':<{width}}          … and {len(c.details) - 20} more")
