"""The bounded readers of request input: nesting depth is counted outside strings, in linear time."""

from __future__ import annotations

import time

import pytest

from bcd.web.inputs import MAX_DEPTH, too_deep


@pytest.mark.parametrize(("raw", "deep"), [
    (b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, False),
    (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), True),
    (b'{"a": ' * 40 + b"1" + b"}" * 40, True),
    (b'{"reason": "' + b"[" * 100 + b'"}', False),  # brackets inside a string
    (b'{"reason": "\\"' + b"[" * 100 + b'"}', False),  # after an escaped quote, still inside the string
    (b'["\\\\", ' + b"[" * 40 + b"]" * 41, True),  # an escaped backslash ends before the quote: outside again
    (b'{"open' + b"[" * 100, False),  # an unterminated string runs to the end (json.loads refuses it)
    (b"", False),
])
def test_depth_is_counted_outside_strings(raw: bytes, deep: bool) -> None:
    assert too_deep(raw) is deep


@pytest.mark.parametrize("raw", [b'"\\"' * 21_000, b'"' * 65_536, b"[" * 65_536, b'"[\\"' * 16_000])
def test_a_hostile_body_is_judged_quickly(raw: bytes) -> None:
    started = time.perf_counter()
    too_deep(raw)
    assert time.perf_counter() - started < 1.0  # linear: tens of ms for 64 kB
