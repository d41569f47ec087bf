"""A minimal HTTP/1.1 responder for benchmarks: answers every request with 200 "UP" and closes.

Runs in its own process (on uvloop when available) so that its CPU is not counted against bcd.
Usage: python bench/target_server.py PORT_FILE — binds 127.0.0.1:0 and writes the port to PORT_FILE.
"""

from __future__ import annotations

import asyncio
import sys

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nUP"


class Responder(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" in self.buffer:
            self.transport.write(RESPONSE)  # type: ignore[attr-defined]
            self.transport.close()


async def main(port_file: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Responder, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    with open(port_file, "w") as handle:
        handle.write(str(port))
    await server.serve_forever()


if __name__ == "__main__":
    import resource

    _soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))
    try:
        import uvloop

        uvloop.run(main(sys.argv[1]))
    except ImportError:
        asyncio.run(main(sys.argv[1]))
