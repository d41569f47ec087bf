"""Nagios plugin output: summary and perfdata parsing, and the verdict of an exit status."""

from __future__ import annotations

import pytest

from bcd.model import Result
from bcd.probes.command import Perfdata, parse_output, parse_perfdata, verdict

OUTPUTS: list[tuple[str, str, str, Perfdata]] = [
    # (case, output, summary, perfdata)
    ("empty", "", "", ()),
    ("text only", "DISK OK\n", "DISK OK", ()),
    ("text and perfdata", "LOAD OK - 0.5 | load1=0.5;1;2;0; load5=0.4", "LOAD OK - 0.5",
     (("load1", "0.5;1;2;0;"), ("load5", "0.4"))),
    ("trimmed", "   PING OK   |   rta=1ms   ", "PING OK", (("rta", "1ms"),)),
    ("long text without perfdata", "OK\nline 2\nline 3", "OK", ()),
    ("perfdata continues on a later line", "OK - 3 disks | /=10%\nroot fine\nhome fine | /home=20%\n/var=30%",
     "OK - 3 disks", (("/", "10%"), ("/home", "20%"), ("/var", "30%"))),
    ("perfdata only on a later line", "OK\ndetails\n| a=1", "OK", (("a", "1"),)),
    ("a stray | in perfdata is skipped", "OK | a=1 | b=2", "OK", (("a", "1"), ("b", "2"))),
    ("CRLF line ends", "CRITICAL - down|x=1\r\nmore\r\n", "CRITICAL - down", (("x", "1"),)),
]


@pytest.mark.parametrize(("case", "output", "summary", "perfdata"), OUTPUTS, ids=[row[0] for row in OUTPUTS])
def test_parse_output(case: str, output: str, summary: str, perfdata: Perfdata) -> None:
    assert parse_output(output) == (summary, perfdata)


PERFDATA: list[tuple[str, str, Perfdata]] = [
    ("empty", "", ()),
    ("one", "time=0.01s;1;2;0;10", (("time", "0.01s;1;2;0;10"),)),
    ("several, extra spaces", "  a=1   b=2c  ", (("a", "1"), ("b", "2c"))),
    ("quoted label with spaces", "'free space /'=42%;80;90", (("free space /", "42%;80;90"),)),
    ("quoted label with an escaped quote", "'it''s'=1", (("it's", "1"),)),
    ("quoted label with =", "'a=b'=3", (("a=b", "3"),)),
    ("unknown value", "temp=U", (("temp", "U"),)),
    ("unquoted label stops at a space", "bad label=1 ok=2", (("label", "1"), ("ok", "2"))),
    ("no value", "a= b=2", (("b", "2"),)),
    ("no =", "garbage b=2", (("b", "2"),)),
    ("no label", "=5 b=2", (("b", "2"),)),
    ("unterminated quote", "'open=1 b=2", ()),
]


@pytest.mark.parametrize(("case", "text", "perfdata"), PERFDATA, ids=[row[0] for row in PERFDATA])
def test_parse_perfdata(case: str, text: str, perfdata: Perfdata) -> None:
    assert parse_perfdata(text) == perfdata


VERDICTS: list[tuple[int, str, Result, str]] = [
    (0, "OK: fine", Result.OK, "OK: fine"),
    (1, "WARNING: meh", Result.WARN, "WARNING: meh"),
    (2, "CRITICAL: down", Result.FAIL, "CRITICAL: down"),
    (3, "UNKNOWN: what", Result.FAIL, "unknown: UNKNOWN: what"),
    (0, "", Result.OK, "(no output)"),
    (4, "x", Result.FAIL, "unknown: exit status 4: x"),
    (127, "", Result.FAIL, "unknown: exit status 127: (no output)"),
    (-9, "", Result.FAIL, "unknown: killed by SIGKILL: (no output)"),
    (-200, "", Result.FAIL, "unknown: killed by signal 200: (no output)"),
]


@pytest.mark.parametrize(("code", "summary", "result", "reason"), VERDICTS)
def test_verdict(code: int, summary: str, result: Result, reason: str) -> None:
    assert verdict(code, summary) == (result, reason)
