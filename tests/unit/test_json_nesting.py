"""The bound on JSON nesting: brackets are counted outside strings, in linear time."""

from __future__ import annotations

import time

import pytest

from bcd.json_nesting import too_nested

LIMIT = 32


@pytest.mark.parametrize(("raw", "nested"), [
    (b"[" * LIMIT + b"]" * LIMIT, False),
    (b"[" * (LIMIT + 1) + b"]" * (LIMIT + 1), True),
    (b'{"a": ' * 40 + b"1" + b"}" * 40, True),
    (b'{"reason": "' + b"[" * 100 + b'"}', False),  # brackets inside a string
    (b'{"reason": "\\"' + b"[" * 100 + b'"}', False),  # after an escaped quote, still inside the string
    (b'["\\\\", ' + b"[" * 40 + b"]" * 41, True),  # an escaped backslash ends before the quote: outside again
    (b"", False),
])
def test_brackets_are_counted_outside_strings(raw: bytes, nested: bool) -> None:
    assert too_nested(raw, LIMIT) is nested


@pytest.mark.parametrize("raw", [b'"\\"' * 21_000, b'"' * 65_536, b"[" * 65_536, b'"[\\"' * 16_000])
def test_a_hostile_body_is_judged_quickly(raw: bytes) -> None:
    started = time.perf_counter()
    too_nested(raw, LIMIT)
    assert time.perf_counter() - started < 0.1  # C-speed byte operations: well under a millisecond
