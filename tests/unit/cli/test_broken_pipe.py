"""A reader that stops early (`bcd schema | head -1`) ends the command quietly: no BrokenPipeError traceback."""

from __future__ import annotations

import subprocess
import sys


def test_a_reader_that_goes_away_gets_no_traceback() -> None:
    with subprocess.Popen([sys.executable, "-m", "bcd", "schema"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          bufsize=0) as bcd:
        assert bcd.stdout is not None and bcd.stderr is not None
        assert bcd.stdout.read(10)  # the first bytes of a long output, then the reader goes away
        bcd.stdout.close()
        errors = bcd.stderr.read().decode()
        assert bcd.wait(timeout=60) == 141, errors
    assert "Traceback" not in errors and "BrokenPipeError" not in errors, errors
