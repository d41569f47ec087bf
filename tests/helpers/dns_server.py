"""A tiny authoritative DNS server for tests (UDP and TCP on the same port), written with dnspython."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import cast

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Records = dict[tuple[str, str], list[str]]
"""(name, type) → rdata texts, e.g. {("db.example.", "A"): ["10.0.0.1"]}; names are absolute."""


class DnsServer:
    """Answers from `records` (following CNAMEs); names it does not know get NXDOMAIN, names in `servfail`
    get SERVFAIL; a known name asked for a type it lacks gets an empty NOERROR answer. With `truncate_udp`
    every UDP answer is an empty one with the TC bit set (the full answer comes over TCP)."""

    def __init__(self, records: Records, servfail: tuple[str, ...] = (), truncate_udp: bool = False) -> None:
        self.truncate_udp = truncate_udp
        self.records = {(dns.name.from_text(name), kind.upper()): texts for (name, kind), texts in records.items()}
        self.servfail = {dns.name.from_text(name) for name in servfail}
        self.port = 0
        self.queries = 0

    def answer(self, wire: bytes, udp: bool = False) -> bytes:
        query = dns.message.from_wire(wire)
        self.queries += 1
        response = dns.message.make_response(query)
        if udp and self.truncate_udp:
            response.flags |= dns.flags.TC
            return response.to_wire()
        question = query.question[0]
        kind = dns.rdatatype.to_text(question.rdtype)
        if question.name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif not any(name == question.name for name, _ in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            response.answer.extend(self._rrsets(question.name, kind))
        return response.to_wire()

    def _rrsets(self, name: dns.name.Name, kind: str) -> list[dns.rrset.RRset]:
        """The records of `name`, following one CNAME like a resolver would."""
        if (name, kind) in self.records:
            return [dns.rrset.from_text_list(name, 60, "IN", kind, self.records[(name, kind)])]
        if (name, "CNAME") in self.records:
            target = dns.name.from_text(self.records[(name, "CNAME")][0])
            cname = dns.rrset.from_text_list(name, 60, "IN", "CNAME", self.records[(name, "CNAME")])
            return [cname, *self._rrsets(target, kind)]
        return []


class _Udp(asyncio.DatagramProtocol):
    """Answers each datagram with `reply(datagram)`."""

    def __init__(self, reply: Callable[[bytes], bytes]) -> None:
        self.reply = reply
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(self.reply(data), addr)


async def _tcp(server: DnsServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
        reply = server.answer(await reader.readexactly(length))
        writer.write(struct.pack("!H", len(reply)) + reply)
        await writer.drain()
    except asyncio.IncompleteReadError:
        pass
    finally:
        writer.close()


@asynccontextmanager
async def dns_server(
    records: Records, servfail: tuple[str, ...] = (), truncate_udp: bool = False
) -> AsyncIterator[DnsServer]:
    """A DnsServer on 127.0.0.1, UDP and TCP on one port chosen by the kernel."""
    server = DnsServer(records, servfail, truncate_udp)
    loop = asyncio.get_running_loop()
    tcp = await asyncio.start_server(lambda r, w: _tcp(server, r, w), "127.0.0.1", 0)
    server.port = tcp.sockets[0].getsockname()[1]
    udp, _ = await loop.create_datagram_endpoint(
        lambda: _Udp(lambda data: server.answer(data, udp=True)), local_addr=("127.0.0.1", server.port)
    )
    try:
        yield server
    finally:
        udp.close()
        tcp.close()
        await tcp.wait_closed()


@asynccontextmanager
async def mute_udp_server() -> AsyncIterator[int]:
    """A UDP socket on 127.0.0.1 that receives queries and never answers; yields its port."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    try:
        yield transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


@asynccontextmanager
async def garbage_udp_server(reply: Callable[[bytes], bytes]) -> AsyncIterator[int]:
    """A UDP socket on 127.0.0.1 that answers each query with `reply(query)` (no TCP); yields its port."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(reply), local_addr=("127.0.0.1", 0))
    try:
        yield transport.get_extra_info("sockname")[1]
    finally:
        transport.close()
