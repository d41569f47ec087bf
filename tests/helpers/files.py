"""Real filesystem states a test needs to arrange."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    """`chattr +i` on `path` for the block: not even root may write it, or create files in it if it is a
    directory (root ignores permission bits, so this is how a read-only state_dir is made in CI as root).
    Skips the test where that is impossible (no CAP_LINUX_IMMUTABLE, or tmpfs/overlayfs)."""
    done = subprocess.run(["chattr", "+i", str(path)], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot make {path} immutable here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
