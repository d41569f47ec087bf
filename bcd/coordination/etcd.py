"""A small asyncio client for etcd v3 over its JSON gateway (`POST /v3/...`), with aiohttp: the calls and the
endpoint rotation. The gateway's message forms are in `etcd_wire.py`, watch streams in `etcd_watch.py`; every
public name of both is importable from here too.

Why not a gRPC client: the maintained Python ones are gone or unmaintained (see issue 6); the JSON gateway is
served by every etcd member on its client port and needs nothing but HTTP.

Failure model:
- A call tries the endpoints in turn, starting with the last one that answered. Each attempt has its own
  deadline (`request_timeout`) and the whole call has an overall deadline (`deadline`). A connection error, a
  timeout or a 5xx answer moves on to the next endpoint; when every endpoint was tried once, or the overall
  deadline passed, the call raises EtcdUnavailable.
- Every request carries `Grpc-Metadata-hasleader: true`: a member cut off from its leader then answers
  "no leader" (503) at once instead of holding a write, a lease call or a linearizable read for seconds, and
  cancels our watch streams when it loses its leader, so they move to a member that has one.
- A 4xx answer (a gRPC error such as "lease not found" or "key is not provided") raises EtcdRequestError; it
  is not retried elsewhere, since another member would answer the same.
- A write whose answer was lost may have been applied before the client moved to the next endpoint and tried
  again: callers make writes safe to repeat (transactions with a compare, or puts of the same value).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import aiohttp

from bcd.coordination.etcd_watch import Messages, confirmed, follow, watch_request
from bcd.coordination.etcd_wire import (
    GRPC_CANCELED,
    GRPC_DEADLINE_EXCEEDED,
    GRPC_NOT_FOUND,
    GRPC_UNAVAILABLE,
    RETRY_ELSEWHERE,
    Compare,
    CompareOp,
    EtcdCompacted,
    EtcdError,
    EtcdRequestError,
    EtcdUnavailable,
    EventType,
    KeyValue,
    Op,
    OpResult,
    TryElsewhere,
    TxnResult,
    WatchEvent,
    b64,
    describe,
    error_of,
    int64,
    prefix_end,
    range_fields,
)

__all__ = [
    "GRPC_CANCELED", "GRPC_DEADLINE_EXCEEDED", "GRPC_NOT_FOUND", "GRPC_UNAVAILABLE", "Compare", "CompareOp",
    "EtcdClient", "EtcdCompacted", "EtcdError", "EtcdRequestError", "EtcdUnavailable", "EventType", "KeyValue", "Op",
    "OpResult", "TxnResult", "WatchEvent", "prefix_end", "ssl_context",
]

_HEADERS = {"Content-Type": "application/json", "Grpc-Metadata-hasleader": "true"}
T = TypeVar("T")


def ssl_context(ca_file: str | None, cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
    """A client TLS context: verify the server against `ca_file` (the system store when None); present
    `cert_file`/`key_file` as the client certificate when given (both or neither)."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("cert_file and key_file go together")
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file is not None and key_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context


class EtcdClient:
    """The etcd v3 calls bcd needs, over the JSON gateway of one or more members.

    `request_timeout` bounds one attempt at one endpoint, `deadline` a whole call across endpoints.
    `watch_idle_timeout` bounds the silence on a watch stream (etcd sends progress notifications on idle
    watches, every 10 minutes by default); after it the stream is reopened from where it was.
    Use as an async context manager, or call close().
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        request_timeout: float = 1.0,
        deadline: float = 3.0,
        watch_idle_timeout: float = 60.0,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        if request_timeout <= 0 or deadline <= 0 or watch_idle_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self.endpoints = tuple(endpoint.rstrip("/") for endpoint in endpoints)
        self.request_timeout = request_timeout
        self.deadline = deadline
        self.watch_idle_timeout = watch_idle_timeout
        self._ssl: ssl.SSLContext | None = None
        if ca_file is not None or cert_file is not None or key_file is not None:
            self._ssl = ssl_context(ca_file, cert_file, key_file)
        self._preferred = 0
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self.requests: Counter[str] = Counter()  # calls made, by path (a watch stream opened counts once)

    @property
    def preferred_endpoint(self) -> str:
        """The endpoint the next call tries first: the last one that answered."""
        return self.endpoints[self._preferred]

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection, watch streams included; calls after this raise EtcdUnavailable."""
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._closed:
            raise EtcdUnavailable("the etcd client is closed")
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=None), raise_for_status=False,
            )
        return self._session

    def _rotation(self) -> list[int]:
        count = len(self.endpoints)
        return [(self._preferred + step) % count for step in range(count)]

    async def _across(self, path: str, attempt: Callable[[str], Awaitable[T]],
                      failed: str = "no etcd endpoint answered") -> T:
        """`attempt(endpoint)` at the endpoints in turn, each under `request_timeout`, all under `deadline`: the
        first that succeeds wins; a transport error, a timeout or TryElsewhere moves on; EtcdUnavailable (saying
        `failed` and every endpoint's reason) when none did."""
        self.requests[path] += 1
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.deadline
        failures: list[str] = []
        for index in self._rotation():
            endpoint = self.endpoints[index]
            remaining = give_up - loop.time()
            if remaining <= 0:
                failures.append("overall deadline reached")
                break
            try:
                async with asyncio.timeout(min(self.request_timeout, remaining)):
                    result = await attempt(endpoint)
            except TryElsewhere as exc:
                failures.append(f"{endpoint}: {exc}")
                continue
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                failures.append(f"{endpoint}: {describe(exc)}")
                continue
            self._preferred = index
            return result
        raise EtcdUnavailable(f"{path}: {failed} ({'; '.join(failures)})")

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST `body` to `path` at the endpoints in turn; the first answer that is not a 5xx wins."""
        payload = json.dumps(body, separators=(",", ":"))

        async def attempt(endpoint: str) -> dict[str, Any]:
            async with self._http().post(endpoint + path, data=payload, headers=_HEADERS) as response:
                status, raw = response.status, await response.read()
            try:
                data = json.loads(raw)
            except ValueError:
                raise TryElsewhere(f"HTTP {status}, not JSON") from None
            error = error_of(data)
            if status >= 500 or (error is not None and error[0] in RETRY_ELSEWHERE):
                raise TryElsewhere(f"HTTP {status} {error[1] if error else ''}".rstrip())
            if status >= 400 or error is not None or not isinstance(data, dict):
                code, message = error if error is not None else (None, f"HTTP {status}")
                raise EtcdRequestError(f"{path}: {message}", status=status, code=code)
            return data

        return await self._across(path, attempt)

    async def range(self, key: str, *, prefix: bool = False) -> tuple[list[KeyValue], int]:
        """The key (or every key under the prefix), and the store revision they were read at."""
        data = await self._call("/v3/kv/range", range_fields(key, prefix))
        kvs = [KeyValue.from_json(kv) for kv in data.get("kvs", [])]
        return kvs, int64(data.get("header", {}).get("revision"))

    async def range_all(self, prefix: str, *, page: int = 500, keys_only: bool = False,
                        ) -> tuple[list[KeyValue], int]:
        """Every key under `prefix` and the store revision they were read at, in pages of `page` keys all read
        at that one revision (so no answer grows too big for `request_timeout`, however many keys there are).
        `keys_only`: without their values. A revision compacted between two pages raises EtcdRequestError."""
        fields, revision, kvs = range_fields(prefix, True), 0, []
        while True:
            body: dict[str, Any] = {**fields, "limit": str(page)}
            if revision:
                body["revision"] = str(revision)
            if keys_only:
                body["keys_only"] = True
            data = await self._call("/v3/kv/range", body)
            revision = revision or int64(data.get("header", {}).get("revision"))
            batch = [KeyValue.from_json(kv) for kv in data.get("kvs", [])]
            kvs += batch
            if not data.get("more") or not batch:
                return kvs, revision
            fields = {**fields, "key": b64(batch[-1].key.encode("utf-8", "surrogateescape") + b"\0")}

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Write the key (bound to `lease` unless 0); returns the revision of the write."""
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = str(lease)
        data = await self._call("/v3/kv/put", body)
        return int64(data.get("header", {}).get("revision"))

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        """Delete the key (or every key under the prefix); returns how many keys were deleted."""
        data = await self._call("/v3/kv/deleterange", range_fields(key, prefix))
        return int64(data.get("deleted"))

    async def txn(self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        """If every compare holds, run `success`, else `failure`, atomically."""
        body = {
            "compare": [item.to_json() for item in compare],
            "success": [op.to_json() for op in success],
            "failure": [op.to_json() for op in failure],
        }
        data = await self._call("/v3/kv/txn", body)
        return TxnResult(
            succeeded=bool(data.get("succeeded", False)),
            revision=int64(data.get("header", {}).get("revision")),
            responses=tuple(OpResult.from_json(item) for item in data.get("responses", [])),
        )

    async def lease_grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: (its id, the TTL granted, which etcd may raise to its minimum)."""
        data = await self._call("/v3/lease/grant", {"TTL": str(ttl)})
        return int64(data.get("ID")), int64(data.get("TTL"))

    async def lease_keepalive(self, lease_id: int) -> int:
        """Refresh the lease; returns its TTL from now, 0 when the lease has expired or never existed."""
        data = await self._call("/v3/lease/keepalive", {"ID": str(lease_id)})
        result = data.get("result", {})
        return int64(result.get("TTL")) if isinstance(result, dict) else 0

    async def lease_revoke(self, lease_id: int) -> None:
        """End the lease now, deleting every key bound to it. Raises EtcdRequestError (code GRPC_NOT_FOUND)
        when the lease does not exist."""
        await self._call("/v3/lease/revoke", {"ID": str(lease_id)})

    def watch(
        self, key: str, *, prefix: bool = True, start_revision: int | None = None,
        opened: Callable[[int], None] | None = None,
    ) -> AsyncGenerator[WatchEvent, None]:
        """Changes to the key (or the keys under the prefix) from `start_revision` on (from now when None).

        A broken stream (member killed, member lost its leader, idle past `watch_idle_timeout`) is reopened on
        any endpoint from the revision after the last event seen, so no event is lost or repeated. Raises
        EtcdUnavailable when no endpoint accepts a new stream within the call deadline, EtcdCompacted when
        the revisions to resume from were compacted. `opened(revision)` is called each time a stream is confirmed.
        Close the iterator (contextlib.aclosing) to end the watch.
        """
        return follow(partial(self._open_watch, key, prefix), key=key, idle=self.watch_idle_timeout,
                      start_revision=start_revision, endpoint=lambda: self.preferred_endpoint, opened=opened)

    async def _open_watch(self, key: str, prefix: bool, start_revision: int | None) -> tuple[Messages, int]:
        """A watch stream whose creation etcd confirmed: (its messages, the revision at creation)."""
        payload = watch_request(key, prefix, start_revision)

        async def attempt(endpoint: str) -> tuple[Messages, int]:
            response = await self._http().post(endpoint + "/v3/watch", data=payload, headers=_HEADERS)
            return await confirmed(response)

        return await self._across("/v3/watch", attempt, "no etcd endpoint accepted a watch")
