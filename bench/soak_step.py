"""A runbook `command` step for the chaos soak (bench/soak.py): appends `RUN STEP PID start T` to the recorder
file, sleeps, then appends `RUN STEP PID end T`.

Usage: soak_step.py RECORDER RUN_ID STEP SECONDS. Each line is one write(2) on an O_APPEND descriptor, so
steps running at once never interleave a line, and a kill mid-step leaves a `start` without an `end`.
"""

from __future__ import annotations

import os
import sys
import time


def note(path: str, run_id: str, step: str, what: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{run_id} {step} {os.getpid()} {what} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    path, run_id, step, seconds = argv[1], argv[2], argv[3], float(argv[4])
    note(path, run_id, step, "start")
    time.sleep(seconds)
    note(path, run_id, step, "end")
    print(f"{step} done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
