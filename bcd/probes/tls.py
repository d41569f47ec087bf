"""TLS helpers shared by the probes: client contexts, and certificate expiry read from DER.

The `cryptography` package is not a dependency, and with verification off `getpeercert()` returns an empty
dict, so the expiry (`notAfter`) is read from the DER bytes of `getpeercert(binary_form=True)` with a
minimal ASN.1 walk: Certificate → tbsCertificate → validity → notAfter.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime

from bcd.durations import format_duration
from bcd.model import Result
from bcd.probes.base import ProbeSetupError


def client_context(
    verify: bool = True,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> ssl.SSLContext:
    """A client SSLContext; raises ProbeSetupError naming the file that cannot be loaded."""
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ProbeSetupError(f"cannot load ca_file {ca_file}: {exc}") from None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ProbeSetupError(f"cannot load client certificate {cert_file}: {exc}") from None
    return context


def peer_cert_expiry(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> float | None:
    """Unix time at which the peer's certificate expires, or None when there is none or it is unreadable.

    Python 3.11 exposes only the leaf certificate of the chain the server presented, so this is the leaf's
    expiry (with a verified chain, intermediates that expire sooner are not seen).
    """
    if ssl_object is None:
        return None
    return cert_expiry(ssl_object.getpeercert(binary_form=True))


def cert_expiry(der: bytes | None) -> float | None:
    """`notAfter` of a DER certificate as Unix time, or None when absent or unreadable."""
    if not der:
        return None
    try:
        return der_not_after(der)
    except ValueError:
        return None


def der_not_after(der: bytes) -> float:
    """`notAfter` of a DER-encoded X.509 certificate as Unix time; ValueError if it is malformed."""
    _, start, _ = _tlv(der, 0)  # Certificate ::= SEQUENCE
    _, pos, _ = _tlv(der, start)  # tbsCertificate ::= SEQUENCE
    tag, _, end = _tlv(der, pos)
    if tag == 0xA0:  # [0] EXPLICIT version, optional
        pos = end
    for _ in range(3):  # serialNumber, signature, issuer
        pos = _tlv(der, pos)[2]
    _, validity, _ = _tlv(der, pos)
    not_before_end = _tlv(der, validity)[2]
    tag, start, end = _tlv(der, not_before_end)
    return _asn1_time(tag, der[start:end].decode("ascii"))


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at `pos`."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _asn1_time(tag: int, text: str) -> float:
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ; years 50-99 are 19xx (RFC 5280)
        parsed = datetime.strptime(text, "%y%m%d%H%M%SZ")
        if parsed.year >= 2050:
            parsed = parsed.replace(year=parsed.year - 100)
    elif tag == 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        parsed = datetime.strptime(text, "%Y%m%d%H%M%SZ")
    else:
        raise ValueError(f"unexpected ASN.1 time tag {tag:#x}")
    return parsed.replace(tzinfo=UTC).timestamp()


def expiry_verdict(expiry: float | None, now: float, warn: float | None, host: str) -> tuple[Result, str] | None:
    """With `cert_expiry_warn` set (`warn`): FAIL for a certificate that has expired (verified or not: with
    tls_verify false nothing else would notice), WARN for one expiring within `warn`; else None."""
    if warn is None or expiry is None or expiry - now >= warn:
        return None
    if expiry <= now:
        return Result.FAIL, f"certificate of {host} {describe_expiry(expiry, now)}"
    return Result.WARN, f"certificate of {host} {describe_expiry(expiry, now)}, within cert_expiry_warn " \
                        f"{format_duration(warn)}"


def describe_expiry(expiry: float, now: float) -> str:
    """'expires in 23h (2026-05-01 12:00 UTC)' or 'expired 2d ago (…)'."""
    when = datetime.fromtimestamp(expiry, UTC).strftime("%Y-%m-%d %H:%M UTC")
    left = expiry - now
    if left < 0:
        return f"expired {_span(-left)} ago ({when})"
    return f"expires in {_span(left)} ({when})"


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
