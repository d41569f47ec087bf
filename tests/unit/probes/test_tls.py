"""Reading a certificate's notAfter from DER without the cryptography package."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bcd.probes.tls import cert_expiry, der_not_after, describe_expiry


def tlv(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    size = (length.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + length.to_bytes(size, "big") + content


def certificate(not_after: bytes, version: bool = True, padding: int = 0) -> bytes:
    """A skeleton certificate: only the fields der_not_after walks past are filled in."""
    validity = tlv(0x30, tlv(0x17, b"200101000000Z") + not_after)
    issuer = tlv(0x30, tlv(0x31, b"x" * padding))  # padding makes long-form lengths appear
    tbs = (tlv(0xA0, tlv(0x02, b"\x02")) if version else b"") + tlv(0x02, b"\x01") + tlv(0x30, b"") + issuer + validity
    return tlv(0x30, tlv(0x30, tbs) + tlv(0x30, b"") + tlv(0x03, b"\x00"))


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("der", "expected"),
    [
        (certificate(tlv(0x17, b"300615123000Z")), ts(2030, 6, 15, 12, 30)),
        (certificate(tlv(0x17, b"490101000000Z")), ts(2049, 1, 1)),
        (certificate(tlv(0x17, b"500101000000Z")), ts(1950, 1, 1)),
        (certificate(tlv(0x18, b"21000101000000Z")), ts(2100, 1, 1)),
        (certificate(tlv(0x17, b"300615123000Z"), version=False), ts(2030, 6, 15, 12, 30)),
        (certificate(tlv(0x17, b"300615123000Z"), padding=300), ts(2030, 6, 15, 12, 30)),
    ],
)
def test_der_not_after(der: bytes, expected: float) -> None:
    assert der_not_after(der) == expected


@pytest.mark.parametrize("der", [b"", b"\x30", b"\x30\x05\x30\x00", certificate(tlv(0x04, b"soon"))])
def test_malformed_der(der: bytes) -> None:
    with pytest.raises(ValueError):
        der_not_after(der)
    assert cert_expiry(der) is None


def test_describe_expiry() -> None:
    now = ts(2026, 5, 1)
    assert describe_expiry(now + 23 * 3600 + 59, now) == "expires in 23h (2026-05-01 23:00 UTC)"
    assert describe_expiry(now - 2 * 86400, now) == "expired 2d ago (2026-04-29 00:00 UTC)"
