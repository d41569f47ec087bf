"""How long bcd takes to load a large config, to report the errors of a large invalid one, and to stop on
SIGTERM while such a reload is running.

Prints, each case in a fresh process (a case that takes longer than --limit seconds is reported as such), the
wall-clock and CPU time of `bcd.config.load` (CPU time is the steadier figure on a shared machine):
the load of a valid 20,000-probe file (the pipeline benchmark's estate, 3 MB); the report of 5k, 20k and
100k errors (one unknown key per service); a 5 MB file with a syntax error at its end; and the time from
SIGTERM to exit of a daemon that was reloading the 100k-error file.

    python bench/bench_config_errors.py
    python bench/bench_config_errors.py --limit 60
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAD = "sites: {dorset: {}, hampshire: {}}\nservices:\n"


def valid_estate(probes: int) -> str:
    """The pipeline benchmark's estate: one HTTP probe per site, two sites per service."""
    parts = [HEAD]
    for i in range(probes // 2):
        parts.append(f"  svc{i:05d}:\n    active: dorset\n    sites:\n")
        for site in ("dorset", "hampshire"):
            parts.append(f"      {site}:\n        probes:\n          - {{name: health, http: {{url: 'http://127.0.0.1:1/health'}}}}\n")
    return "".join(parts)


def invalid_estate(errors: int) -> str:
    """`errors` services, each with one unknown key (the services mapping is where placing errors on lines
    used to be quadratic)."""
    parts = [HEAD]
    for i in range(errors):
        parts.append(f"  svc{i:06d}: {{active: dorset, bogus: 1, sites: {{dorset: {{probes: [{{name: p, tcp: "
                     "{host: h, port: 1}}]}}}\n")
    return "".join(parts)


def syntax_error_at_end(size: int) -> str:
    text = valid_estate(size // 122)
    return text + "  broken: [1, 2\n"


CASES = {
    "valid 20,000 probes": lambda: valid_estate(20_000),
    "5,000 errors": lambda: invalid_estate(5_000),
    "20,000 errors": lambda: invalid_estate(20_000),
    "100,000 errors": lambda: invalid_estate(100_000),
    "5 MB, syntax error at the end": lambda: syntax_error_at_end(5_000_000),
}


def one(case: str, path: Path) -> None:
    """In a fresh process: load the file and print the figures as JSON."""
    from bcd.app import load_config
    from bcd.config import ConfigError

    began, cpu = time.perf_counter(), time.process_time()
    try:
        load_config(str(path))
        issues = 0
    except ConfigError as exc:
        issues = len(exc.issues)
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    print(json.dumps({"case": case, "seconds": seconds, "cpu": cpu, "printed": issues}))


def run_case(case: str, tmp: Path, limit: float) -> str:
    path = tmp / "case.yaml"
    path.write_text(CASES[case]())
    size = path.stat().st_size / 1e6
    try:
        result = subprocess.run([sys.executable, __file__, "--one", case, str(path)], capture_output=True,
                                text=True, timeout=limit, check=True)
    except subprocess.TimeoutExpired:
        return f"{case:<32} {size:5.1f} MB  > {limit:.0f} s (stopped)"
    except subprocess.CalledProcessError as exc:
        return f"{case:<32} {size:5.1f} MB  failed: {exc.stderr.strip().splitlines()[-1:]}"
    figures = json.loads(result.stdout)
    return (f"{case:<32} {size:5.1f} MB  {figures['seconds']:7.2f} s  (CPU {figures['cpu']:.2f} s; "
            f"{figures['printed']} lines printed)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def sigterm_during_reload(tmp: Path, limit: float) -> str:
    """Start a small daemon, make it reload the 100k-error file, SIGTERM it one second into the reload."""
    path = tmp / "daemon.yaml"
    head = f"state_dir: {tmp / 'state'}\nserver: {{listen: '127.0.0.1:{free_port()}'}}\n"
    path.write_text(head + "sites: {dorset: {}}\n")
    proc = subprocess.Popen([sys.executable, "-m", "bcd", "run", "-c", str(path)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if '"started"' in line:
                break
        else:
            return "the daemon did not start"
        path.write_text(head + invalid_estate(100_000))
        proc.send_signal(signal.SIGHUP)
        for line in proc.stderr:
            if '"reloading"' in line:
                break
        time.sleep(1.0)
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            return f"{'SIGTERM during a reload':<32} {'':8}  > {limit:.0f} s (killed)"
        return f"{'SIGTERM during a reload':<32} {'':8}  {time.monotonic() - began:7.2f} s  (exit {code})"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=float, default=120.0, help="seconds before a case is given up")
    parser.add_argument("--no-daemon", action="store_true", help="skip the SIGTERM-during-a-reload case")
    parser.add_argument("--one", nargs=2, metavar=("CASE", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one[0], Path(args.one[1]))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            print(run_case(case, Path(tmp), args.limit), flush=True)
        if not args.no_daemon:
            print(sigterm_during_reload(Path(tmp), args.limit), flush=True)


if __name__ == "__main__":
    main()
