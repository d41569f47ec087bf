"""What the freeze of the first runs' survivors keeps for ever: a real daemon with N probes of one kind, all failing
against loopback (a port that refuses, or a server that accepts and never says a byte: timeouts), frozen by its
own ticker once every probe has run (`bcd.heap.freeze_survivors`). Once the runs in flight then have ended, the
heap is unfrozen and collected: what that collection finds is what the freeze had kept (garbage for good).

    python bench/bench_freeze.py --kind mqtt --target silent [--probes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import structlog

from bcd import heap
from bcd.app import Daemon, load_config

KINDS = {
    "http": "http: {{url: 'http://127.0.0.1:{port}/'}}",
    "https": "http: {{url: 'https://127.0.0.1:{port}/', tls_verify: false}}",
    "tcp": "tcp: {{host: 127.0.0.1, port: {port}, send: 'x', expect: 'y'}}",
    "mqtt": "mqtt: {{url: 'mqtt://127.0.0.1:{port}'}}",
}


@asynccontextmanager
async def target(kind: str) -> AsyncIterator[int]:
    """A port that refuses (`refused`) or a server that accepts and never answers (`silent`)."""
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    if kind == "refused":
        server.close()
        await server.wait_closed()
    try:
        yield port
    finally:
        server.close()


async def measure(kind: str, where: str, probes: int) -> None:
    in_flight: list[int] = []
    frozen = asyncio.Event()
    async with target(where) as port:
        with tempfile.TemporaryDirectory() as state_dir:
            path = Path(state_dir) / "bcd.yaml"
            lines = [f"instance: t\nstate_dir: {state_dir}\nserver: {{listen: '127.0.0.1:0'}}",
                     "sites: {dorset: {}, hampshire: {}}\ndefaults: {interval: 3s, timeout: 1s}\nservices:"]
            for index in range(probes // 2):
                probe = KINDS[kind].format(port=port)
                lines += [f"  svc{index:05d}:", "    active: dorset", "    sites:"]
                lines += [f"      {site}: {{probes: [{{name: p, {probe}}}]}}" for site in ("dorset", "hampshire")]
            path.write_text("\n".join(lines) + "\n")
            daemon = Daemon(str(path), load_config(str(path)))
            real = heap.freeze_survivors

            def freeze() -> None:
                in_flight.append(daemon.parts.scheduler.stats.in_flight)
                real()
                frozen.set()

            heap.freeze_survivors = freeze
            async with daemon.running():
                await frozen.wait()
                await asyncio.sleep(4.0)  # every run in flight at the freeze has ended (timeout 1 s + 0.5 s grace)
                gc.collect()
                gc.unfreeze()
                gc.set_debug(gc.DEBUG_SAVEALL)
                gc.collect()
                gc.set_debug(0)
                found = len(gc.garbage)  # not what collect() counts: that includes objects its finalizers resurrect
                size = sum(sys.getsizeof(thing) for thing in gc.garbage)
                kinds = collections.Counter(type(thing).__qualname__ for thing in gc.garbage).most_common(6)
                gc.garbage.clear()
                gc.freeze()
    print(f"{kind} {where}: {in_flight[0]} runs in flight at the freeze; it kept {found} objects, "
          f"{size / 1024:.0f} KiB (their own sizes){': ' if kinds else ''}{', '.join(f'{n} {k}' for k, n in kinds)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=sorted(KINDS), default="http")
    parser.add_argument("--target", choices=("refused", "silent"), default="silent")
    parser.add_argument("--probes", type=int, default=200)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(50))
    import uvloop

    uvloop.run(measure(args.kind, args.target, args.probes))
