"""The seals' hashing compiled (bcd/journal/_chain.c) gives the hashes the Python reference gives, byte for byte, for
any row the journal can hold; for a row it would not write exactly as Python does it says so (None) and the seal
uses Python; and `make install` builds it (the Debian packages it needs are in `make deps`)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from bcd.journal import Journal, ledger
from bcd.journal.ledger import GENESIS, chain_hash, event_entry, python_seal_hashes, seal_hashes

try:
    from bcd.journal import _chain as compiled
except ImportError:  # not built: test_make_install_builds_the_compiled_hashing says so, the others fail too
    compiled = None  # type: ignore[assignment]

REASON = "3 consecutive failures: HTTP 503 from https://payroll.dorset.example.org/health (after 212 ms)"


def row(n: int, **changes: Any) -> tuple[Any, ...]:
    values = {"id": n, "at": 1.8e9 + n * 0.0513, "kind": "site_transition", "service": "payroll",
              "site": "dorset", "reason": REASON, "data": json.dumps({"from_state": "up", "to_state": "down"}),
              "seq": n + 10, **changes}
    return tuple(values.values())


def test_make_install_builds_the_compiled_hashing() -> None:
    """`make test` installs gcc, python3-dev and libssl-dev first (`make deps`): the build must not be skipped."""
    assert ledger.HASHING == "compiled", "bcd/journal/_chain.c was not built: is a C compiler and libssl-dev there?"


def test_the_start_says_which_hashes(tmp_path: Path) -> None:
    with capture_logs() as logs:
        Journal(tmp_path / "j.sqlite").close()  # a new journal: its chain starts
        Journal(tmp_path / "j.sqlite").close()  # then goes on from its head
    said = {line["event"]: line["hashing"] for line in logs if "hashing" in line}
    assert said == {"journal_chain_started": "compiled", "journal_chain_head": "compiled"}


def test_the_compiled_hashes_chain_like_one_entry_at_a_time() -> None:
    assert compiled is not None
    rows = [row(n) for n in range(1, 50)]
    prev, expected = GENESIS, []
    for values in rows:
        prev = chain_hash(prev, event_entry(values[7], *values[:7]))
        expected.append(prev)
    assert compiled.seal_hashes(GENESIS, rows) == expected
    assert compiled.seal_hashes(expected[-1], []) == []


text = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(["", "dorset", 'a"b\\c\n\r\t\b\f\x00\x1f\x7f'])
number = (st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**63), 2**63 - 1))
rows = st.lists(st.tuples(st.integers(-(2**63), 2**63 - 1), number, text, st.none() | text, st.none() | text,
                          text, text, st.integers(-(2**63), 2**63 - 1)), max_size=8)


@settings(max_examples=400, deadline=None)
@given(rows, st.text("0123456789abcdef", min_size=64, max_size=64))
def test_the_compiled_hashes_are_pythons_for_any_row(values: list[tuple[Any, ...]], prev: str) -> None:
    assert compiled is not None
    assert compiled.seal_hashes(prev, values) == python_seal_hashes(prev, values)


@pytest.mark.parametrize(("what", "changes"), [
    ("an int past 64 bits", {"seq": 2**64}),
    ("a bool", {"id": True}),
    ("a float that is not finite", {"at": math.inf}),
    ("a str subclass", {"reason": type("Reason", (str,), {})("why")}),
    ("None where only a str goes", {"kind": None}),
    ("a lone surrogate", {"reason": "\udc80"}),
])
def test_a_row_it_does_not_write_like_python_falls_back_to_python(what: str, changes: dict[str, Any]) -> None:
    assert compiled is not None
    values = [row(1), row(2, **changes)]
    assert compiled.seal_hashes(GENESIS, values) is None, what
    try:
        expected: list[str] | type[Exception] = python_seal_hashes(GENESIS, values)
    except (ValueError, TypeError, UnicodeEncodeError) as exc:  # what Python raises, the seal raises too
        expected = type(exc)
    if isinstance(expected, list):
        assert seal_hashes(GENESIS, values) == expected
    else:
        with pytest.raises(expected):
            seal_hashes(GENESIS, values)


def test_a_previous_hash_of_another_length_falls_back_to_python() -> None:
    assert compiled is not None
    assert compiled.seal_hashes("abc", [row(1)]) is None
    assert seal_hashes("abc", [row(1)]) == python_seal_hashes("abc", [row(1)])


def test_hashing_a_non_ascii_reason_leaves_no_utf8_copy_inside_it() -> None:
    """A reason in another script lives on with its event (the SSE replay): the seal must not grow it by a cached
    UTF-8 copy (what PyUnicode_AsUTF8AndSize would keep), and must still hash its UTF-8."""
    assert compiled is not None
    reason = "".join(["réunion à Dorchester: ", "débit réduit ", str(id(object()))])  # built now, not interned
    before = sys.getsizeof(reason)
    values = [row(1, reason=reason, service="paie-ü")]
    assert compiled.seal_hashes(GENESIS, values) == python_seal_hashes(GENESIS, values)
    assert sys.getsizeof(reason) == before
