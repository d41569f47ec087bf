"""A bound on JSON nesting, checked before `json.loads` (which recurses once per level: a deep enough document
raises RecursionError). The same idea as the MQTT reader's bracket count; keep one copy of it."""

from __future__ import annotations


def too_nested(raw: bytes, limit: int) -> bool:
    """Whether `raw` has more than `limit` opening brackets outside JSON strings, which bounds how deep it can
    nest. Linear, without recursion, in C-speed byte operations: well under a millisecond for 64 KiB of
    crafted brackets and quotes."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")  # escaped backslashes, then escaped quotes
    outside = b"".join(unescaped.split(b'"')[::2])  # even pieces lie between strings
    return outside.count(b"[") + outside.count(b"{") > limit
