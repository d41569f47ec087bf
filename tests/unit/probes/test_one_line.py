"""Reasons are one line of printable text: a target's control bytes are escaped, never passed on raw."""

from __future__ import annotations

import pytest

from bcd.probes.base import one_line


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("all good", "all good"),
        ("  two\n lines\t\r\n", "two lines"),
        ("\x1b[31mred\x1b[0m", r"\x1b[31mred\x1b[0m"),
        ("nul\x00 del\x7f bell\x07", r"nul\x00 del\x7f bell\x07"),
        ("c1 \x9b csi", r"c1 \x9b csi"),
        ("bidi \u202eevil", r"bidi \u202eevil"),
        ("café ✓ \ufffd", "café ✓ \ufffd"),
        ("\x1b" * 300, "\\x1b" * 49 + "\\x1…"),
    ],
)
def test_one_line(text: str, line: str) -> None:
    assert one_line(text) == line
