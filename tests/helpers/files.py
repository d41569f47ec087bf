"""Real filesystem states a test needs to arrange."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
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


@contextmanager
def small_tmpfs(directory: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of `size` mounted on `directory`, unmounted at the end (skips the test where mount is refused)."""
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(directory: Path) -> Path:
    """Write a file into `directory` until the filesystem is full; returns it."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out, suppress(OSError):  # ENOSPC: full
        while True:
            out.write(b"\0" * 4096)
    return filler
