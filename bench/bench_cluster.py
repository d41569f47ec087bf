"""The load a bcd cluster puts on etcd: 3 instances (dorset, hampshire, witness) watching 500 services, with
20 run records per service and an active site each already in etcd, as a cluster has them after a while.

Measured from etcd's own `/metrics` (one member, so it serves every request): calls started per second by
method (`grpc_server_started_total`; the JSON gateway's requests are gRPC calls inside etcd), watch messages
sent per second, and bytes per second etcd received and sent (`etcd_network_client_grpc_*_bytes_total`; the
gateway's JSON, base64 values included, is about a third larger on the wire). Also the CPU the three daemons
used. Both ways are measured over the same window after the same warm-up:

- "polling": the code as it was before watches (`--before`, a commit; run from a `git archive` of it),
  where every instance read the whole cluster prefix every 0.5 s;
- "watches": this tree, where each instance keeps one watch and reads everything only every 30 s.

    python bench/bench_cluster.py                      # both, 30 s windows (about 3 minutes)
    python bench/bench_cluster.py --quick              # 50 services, 5 s windows
    python bench/bench_cluster.py --before ''          # this tree only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bcd.cluster.records import ActiveSite, RemoteRun, RemoteStep  # noqa: E402
from bcd.coordination.etcd import EtcdClient, Op  # noqa: E402
from bcd.model import RunResult  # noqa: E402
from tests.helpers import free_port  # noqa: E402
from tests.helpers.etcd import EtcdCluster  # noqa: E402

CALL_TIMEOUT = "3s"  # not the default 1 s: on a shared, slow VM a 100 KB view put can take over 0.5 s
BEFORE = "17e7483"  # the last commit where every instance read the whole cluster prefix every 0.5 s
VANTAGES = ("dorset", "hampshire", "witness")
TROUBLES = ("coordination unavailable", "coordination lease lost", "views watch interrupted",
            "cluster_watch_interrupted", "cluster_watch_compacted", "cluster_watch_missed_keys")
METHODS = ("Range", "Put", "Txn", "DeleteRange", "LeaseGrant", "LeaseKeepAlive", "LeaseRevoke", "Watch")


@dataclass
class Load:
    label: str
    seconds: float
    calls: dict[str, float]  # method -> calls started per second
    watch_messages: float  # per second
    received: float  # bytes per second etcd received
    sent: float  # bytes per second etcd sent
    cpu: float  # the daemons' CPU, in cores
    troubles: dict[str, int]  # log events during the window that say a member lost etcd (or its watch)
    troubles_before: dict[str, int]  # the same, from the members' start to the window (the warm-up)

    def line(self) -> str:
        total = sum(self.calls.values())
        methods = "  ".join(f"{name} {rate:.1f}" for name, rate in self.calls.items() if rate)
        return (f"{self.label:<22} {total:8.1f} calls/s ({methods}); {self.watch_messages:6.1f} watch messages/s; "
                f"etcd received {self.received / 1e3:8.1f} KB/s, sent {self.sent / 1e6:7.3f} MB/s; "
                f"daemons' CPU {self.cpu * 100:5.1f} % of a core; "
                f"in the window {_listed(self.troubles)} (in the warm-up {_listed(self.troubles_before)})")


def counters(text: str) -> dict[str, float]:
    """The samples of etcd's /metrics this bench reads, summed over the labels it does not split by."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r'^(grpc_server_started_total|grpc_server_msg_sent_total)\{.*grpc_method="(\w+)".*\} (\S+)$',
                         line)
        if match:
            key = f"{match[1]}:{match[2]}"
            found[key] = found.get(key, 0.0) + float(match[3])
        elif line.startswith("etcd_network_client_grpc_"):
            name, value = line.split()
            found[name] = float(value)
    return found


async def etcd_counters(endpoint: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(endpoint + "/metrics") as response:
        return counters(await response.text())


def troubles(logs: list[Path], start: dict[Path, int], end: dict[Path, int] | None = None) -> dict[str, int]:
    """How often each of TROUBLES was logged between the byte offsets `start` and `end` of each log."""
    found: Counter[str] = Counter()
    for log in logs:
        with log.open("rb") as handle:
            handle.seek(start[log])
            text = handle.read(None if end is None else end[log] - start[log]).decode(errors="replace")
        found.update(event for line in text.splitlines() for event in TROUBLES if f'"{event}"' in line)
    return dict(found)


def _listed(counts: dict[str, int]) -> str:
    return ", ".join(f"{event} x{count}" for event, count in counts.items()) or "nothing lost"


def cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def config(state: Path, vantage: str, port: int, *, services: int, url: str, etcd: str) -> Path:
    """One member's config (every member the same estate): `services` services in dorset and hampshire,
    manual failover (nothing moves during the bench), the defaults of a cluster (lease 10 s) but CALL_TIMEOUT."""
    state.mkdir(parents=True, exist_ok=True)
    path = state / "bcd.yaml"
    lines = [f"instance: bench-{vantage}", f"vantage: {vantage}", f"state_dir: {state}",
             f"server: {{listen: '127.0.0.1:{port}'}}", "sites: {dorset: {}, hampshire: {}, witness: {}}",
             "defaults: {interval: 10s, timeout: 3s, rise: 2, fall: 3}",
             "runbooks: {move: {steps: [{name: settle, sleep: {duration: 10ms}}]}}",
             f"cluster: {{name: bench, etcd: {{endpoints: ['{etcd}']}}, call_timeout: {CALL_TIMEOUT}}}", "services:"]
    for i in range(services):
        lines += [f"  svc{i:04d}:", "    active: dorset", "    failover: {runbook: move, mode: manual}",
                  "    sites:"]
        lines += [f"      {site}: {{probes: [{{name: health, http: {{url: '{url}'}}}}]}}" for site in
                  ("dorset", "hampshire")]
    path.write_text("\n".join(lines) + "\n")
    return path


async def seed(etcd: EtcdClient, services: int, runs: int) -> int:
    """Write `runs` finished run records and the active site of every service; the bytes written."""
    written = 0
    token = 1_000
    steps = tuple(RemoteStep(seq, "steps", name, "ok") for seq, name in enumerate(("drain", "switch", "check")))
    for i in range(services):
        service = f"svc{i:04d}"
        ops = [Op.put(f"/bcd/bench/active/{service}", ActiveSite("dorset").to_json())]
        for n in range(runs):
            token += 1
            record = RemoteRun("hampshire", token, service, RunResult.SUCCEEDED, run_id=n + 1, runbook="move",
                               trigger="olive", reason="planned switchover (drill)", from_site="dorset",
                               to_site="hampshire", started=1.7e9 + n, ended=1.7e9 + n + 30,
                               detail=f"{service} now active in hampshire", steps=steps)
            ops.append(Op.put(f"/bcd/bench/runs/{service}/{token}", record.to_json()))
        await etcd.txn([], ops)
        written += sum(len(op.value) for op in ops)
    return written


@contextlib.contextmanager
def source_tree(ref: str) -> Iterator[Path]:
    """The bcd package as of commit `ref`, unpacked in a temporary directory (run with `python -m bcd` there)."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "src.tar"
        subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), ref, "bcd"], check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp)


async def ready(port: int, timeout: float = 120.0) -> None:
    async with asyncio.timeout(timeout), aiohttp.ClientSession() as http:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)


def spawn(source: Path, path: Path) -> subprocess.Popen[bytes]:
    """`bcd run -c path` from the tree at `source`, its log beside its config."""
    with (path.parent / "bcd.log").open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "bcd", "run", "-c", str(path)], cwd=source,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def measure(label: str, source: Path, args: argparse.Namespace, url: str, base: Path) -> Load:
    """Start an etcd, seed it, start the three members from `source`, warm up, measure one window."""
    (base / "etcd").mkdir(parents=True, exist_ok=True)
    etcd = EtcdCluster(base / "etcd", size=1)
    etcd.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        endpoint = etcd.endpoints[0]
        async with EtcdClient([endpoint], request_timeout=5, deadline=10) as client:
            size = await seed(client, args.services, args.runs)
        print(f"  {label}: seeded {args.services * args.runs:,} run records ({size / 1e6:.1f} MB) and "
              f"{args.services} active sites; starting {len(VANTAGES)} members", flush=True)
        ports = [free_port() for _ in VANTAGES]
        procs = [spawn(source, config(base / label / vantage, vantage, port, services=args.services, url=url,
                                      etcd=endpoint)) for vantage, port in zip(VANTAGES, ports, strict=True)]
        await asyncio.gather(*(ready(port) for port in ports))
        await asyncio.sleep(args.warmup)  # mirroring the seeded runs, first views, first probes
        logs = [base / label / vantage / "bcd.log" for vantage in VANTAGES]
        marks = {log: log.stat().st_size for log in logs}
        before, cpu_before, started = await etcd_counters(endpoint), cpu_seconds([p.pid for p in procs]), \
            time.monotonic()
        await asyncio.sleep(args.window)
        after, cpu_after, took = await etcd_counters(endpoint), cpu_seconds([p.pid for p in procs]), \
            time.monotonic() - started

        def rate(key: str) -> float:
            return (after.get(key, 0.0) - before.get(key, 0.0)) / took

        return Load(label, took, {name: rate(f"grpc_server_started_total:{name}") for name in METHODS},
                    rate("grpc_server_msg_sent_total:Watch"), rate("etcd_network_client_grpc_received_bytes_total"),
                    rate("etcd_network_client_grpc_sent_bytes_total"), (cpu_after - cpu_before) / took,
                    troubles(logs, marks), troubles(logs, dict.fromkeys(marks, 0), marks))
    finally:
        stop(procs)
        etcd.stop_all()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 services, 5 s warm-up and window")
    parser.add_argument("--services", type=int, default=500)
    parser.add_argument("--runs", type=int, default=20, help="run records per service in etcd")
    parser.add_argument("--window", type=float, default=30.0, help="seconds (the safety net reads every 30 s)")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds (every site up: views settle)")
    parser.add_argument("--before", default=BEFORE, help="the commit measured as 'polling' ('' to skip)")
    parser.add_argument("--keep", metavar="DIR", help="keep the members' state and logs in DIR (else a temporary one)")
    args = parser.parse_args()
    if args.quick:
        args.services, args.window, args.warmup = 50, 5.0, 5.0
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_pipeline import target_server

    print(f"etcd load of {len(VANTAGES)} bcd instances x {args.services} services "
          f"({args.runs} run records per service in etcd), {args.window:g} s window after {args.warmup:g} s:",
          flush=True)
    results = []
    with target_server() as url, tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        if args.before:
            with source_tree(args.before) as old:
                results.append(await measure(f"polling ({args.before})", old, args, url, Path(tmp) / "before"))
        results.append(await measure("watches (this tree)", ROOT, args, url, Path(tmp) / "after"))
    for load in results:
        print(load.line())
    if len(results) == 2:
        old, new = results
        ratio = (sum(old.calls.values()) / max(sum(new.calls.values()), 1e-9), old.sent / max(new.sent, 1e-9))
        print(f"watches against polling: {ratio[0]:.0f}x fewer calls, {ratio[1]:.0f}x fewer bytes sent by etcd")
    print(json.dumps([load.__dict__ for load in results]))


if __name__ == "__main__":
    asyncio.run(main())
