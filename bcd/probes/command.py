"""`command:` probe: run a Nagios/monitoring-plugins check (no shell) and read its verdict.

Nagios plugin protocol: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. Output is `TEXT | perfdata` on the
first line; more lines may follow, and after a `|` on a later line the rest of the output is perfdata.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic.dataclasses import dataclass

from bcd.model import ProbeResult, Result
from bcd.probes.base import Attempt, ProbeContext, ProbeKind, guarded
from bcd.process import BASE_ENV, run_child, signal_name
from bcd.specs import FORBID, SHARED_EMPTY, absolute_argv

MAX_OUTPUT = 65536
_RESULTS = {0: Result.OK, 1: Result.WARN, 2: Result.FAIL}

Perfdata = tuple[tuple[str, str], ...]


def parse_output(text: str) -> tuple[str, Perfdata]:
    """(summary, perfdata) of a plugin's output: the summary is the first line before any `|`, trimmed;
    perfdata comes from after the `|` of the first line and from a `|` on a later line onwards."""
    lines = text.splitlines() or [""]
    summary, _, perf = lines[0].partition("|")
    chunks = [perf]
    for index, line in enumerate(lines[1:], start=1):
        if "|" in line:
            chunks.append(line.partition("|")[2])
            chunks.extend(lines[index + 1 :])
            break
    return summary.strip(), parse_perfdata(" ".join(chunks))


def parse_perfdata(text: str) -> Perfdata:
    """`'label'=value[UOM];[warn];[crit];[min];[max]` items, space separated, as (label, everything after
    `=`). Labels may be quoted with `'` (spaces allowed, `''` is a quote); malformed items are skipped."""
    items: list[tuple[str, str]] = []
    pos, end = 0, len(text)
    while pos < end:
        if text[pos].isspace():
            pos += 1
            continue
        label, pos = _label(text, pos)
        value_end = pos
        while value_end < end and not text[value_end].isspace():
            value_end += 1
        if label and pos < end and text[pos] == "=" and value_end > pos + 1:
            items.append((label, text[pos + 1 : value_end]))
        pos = value_end
    return tuple(items)


def _label(text: str, pos: int) -> tuple[str, int]:
    """The label starting at `pos` and the position just after it (at `=` when well formed)."""
    if text[pos] != "'":
        start = pos
        while pos < len(text) and text[pos] != "=" and not text[pos].isspace():
            pos += 1
        return text[start:pos], pos
    label: list[str] = []
    pos += 1
    while pos < len(text):
        if text[pos] == "'":
            if text[pos + 1 : pos + 2] != "'":
                return "".join(label), pos + 1
            pos += 1  # '' is a literal quote
        label.append(text[pos])
        pos += 1
    return "", pos  # unterminated quote: malformed


def verdict(code: int, summary: str) -> tuple[Result, str]:
    """Result and reason for an exit status (negative: killed by that signal) and the summary line."""
    said = summary or "(no output)"
    if code in _RESULTS:
        return _RESULTS[code], said
    if code == 3:
        return Result.FAIL, f"unknown: {said}"
    if code < 0:
        return Result.FAIL, f"unknown: killed by {signal_name(-code)}: {said}"
    return Result.FAIL, f"unknown: exit status {code}: {said}"


@dataclass(frozen=True, slots=True, kw_only=True, config=FORBID)
class CommandSpec:
    """`command:` probe: a Nagios/monitoring-plugins check run without a shell."""

    argv: Annotated[list[str], Field(min_length=1)]
    env: Annotated[dict[str, str], SHARED_EMPTY] = Field({}, validate_default=True)

    _absolute = field_validator("argv")(absolute_argv)


class CommandProbe:
    """Runs `argv` in its own session with a minimal environment (PATH, LANG, plus `env`) and no fd but
    0-2; the verdict is the exit status, the reason the summary line, perfdata parsed. The check is done
    when the plugin exits (a helper it left running is not waited for). On timeout or cancellation the
    whole process group is killed and reaped; output beyond 64 KiB is read and discarded."""

    __slots__ = ("_argv", "_ctx", "_env", "_timeout")

    def __init__(self, spec: CommandSpec, timeout: float, ctx: ProbeContext) -> None:
        self._argv = list(spec.argv)
        self._env = {**BASE_ENV, **spec.env}
        self._timeout = timeout
        self._ctx = ctx

    async def run(self) -> ProbeResult:
        """Check once (see the class docstring); never raises except CancelledError."""
        attempt = Attempt(self._timeout, self._ctx.clock, f"running {self._argv[0]}")
        return await guarded(attempt, self._check(attempt), self._describe)

    async def _check(self, attempt: Attempt) -> ProbeResult:
        finished = await run_child(self._argv, self._env, limit=MAX_OUTPUT)
        summary, perfdata = parse_output(finished.output.decode(errors="replace"))
        result, reason = verdict(finished.code, summary)
        return attempt.result(result, reason, perfdata=perfdata)

    def _describe(self, exc: Exception) -> str:
        if isinstance(exc, OSError):
            return f"unknown: cannot run {self._argv[0]}: {exc.strerror or exc}"
        return f"unknown: {type(exc).__name__}: {exc}"


KIND = ProbeKind("command", CommandSpec, CommandProbe)
