"""A check that bcd could not run for want of its own resources is marked internal, not blamed on the target."""

from __future__ import annotations

import errno
import os

import pytest

from bcd.model import ProbeResult, Result
from bcd.probes.base import Attempt, guarded, local_shortage


def wrapped(inner: BaseException) -> Exception:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise RuntimeError("library wrapper") from exc
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize(("exc", "expected"), [
    (OSError(errno.EMFILE, os.strerror(errno.EMFILE)), "EMFILE"),
    (OSError(errno.ENFILE, os.strerror(errno.ENFILE)), "ENFILE"),
    (OSError(errno.ENOBUFS, os.strerror(errno.ENOBUFS)), "ENOBUFS"),
    (OSError(errno.ENOMEM, os.strerror(errno.ENOMEM)), "ENOMEM"),
    (MemoryError(), "ENOMEM"),
    (wrapped(OSError(errno.EMFILE, "Too many open files")), "EMFILE"),
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), None),
    (OSError(errno.EHOSTUNREACH, "no route"), None),
    (ValueError("bad"), None),
])
def test_local_shortages_are_told_from_target_failures(exc: BaseException, expected: str | None) -> None:
    assert local_shortage(exc) == expected


async def test_guarded_marks_a_shortage_as_internal_and_a_refusal_as_a_plain_failure() -> None:
    async def no_files() -> ProbeResult:
        raise OSError(errno.EMFILE, "Too many open files")

    async def refused() -> ProbeResult:
        raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")

    def describe(exc: Exception) -> str:
        return str(exc)

    result = await guarded(Attempt(1.0, lambda: 0.0, "connecting"), no_files(), describe)
    assert (result.result, result.internal) == (Result.FAIL, "EMFILE")
    assert result.reason.startswith("bcd could not run the check: ")
    result = await guarded(Attempt(1.0, lambda: 0.0, "connecting"), refused(), describe)
    assert (result.result, result.internal) == (Result.FAIL, None)
