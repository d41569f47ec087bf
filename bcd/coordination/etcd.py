"""A small asyncio client for etcd v3 over its JSON gateway (`POST /v3/...`), with aiohttp.

Why not a gRPC client: the maintained Python ones are gone or unmaintained (see issue 6); the JSON gateway is
served by every etcd member on its client port and needs nothing but HTTP. The gateway maps the protobuf
messages to JSON: keys and values are base64, int64 fields are strings, and fields holding their default value
(0, false, empty) are left out of responses.

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
import base64
import enum
import json
import ssl
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import structlog

log = structlog.get_logger("bcd.coordination.etcd")

# google.golang.org/grpc/codes, the ones this module looks at
GRPC_CANCELED = 1
GRPC_DEADLINE_EXCEEDED = 4
GRPC_NOT_FOUND = 5
GRPC_UNAVAILABLE = 14
_RETRY_ELSEWHERE = frozenset({GRPC_CANCELED, GRPC_DEADLINE_EXCEEDED, GRPC_UNAVAILABLE})

_HEADERS = {"Content-Type": "application/json", "Grpc-Metadata-hasleader": "true"}
_MAX_MESSAGE = 64 * 1024 * 1024  # a watch message larger than this is a broken stream, not a message


class EtcdError(Exception):
    """Base of every error this module raises."""


class EtcdUnavailable(EtcdError):
    """No endpoint answered in time (connection refused or reset, timeout, 5xx such as "no leader")."""


class EtcdRequestError(EtcdError):
    """etcd refused the request (a 4xx answer or a gRPC error in the payload)."""

    def __init__(self, message: str, *, status: int, code: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class EtcdCompacted(EtcdError):
    """A watch asked for revisions etcd has compacted away: re-read the current state and watch from there."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revisions before {compact_revision} were compacted")
        self.compact_revision = compact_revision


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _int(value: Any) -> int:
    """int64 fields arrive as strings; absent means 0."""
    return int(value) if value is not None else 0


def prefix_end(key: str) -> bytes:
    """The `range_end` that selects every key starting with `key`: the key with its last byte below 0xff
    incremented and the rest cut off ("\\0" when every byte is 0xff: all keys from `key` on)."""
    raw = bytearray(key.encode())
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"


def _range_fields(key: str, prefix: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {"key": _b64(key)}
    if prefix:
        fields["range_end"] = _b64(prefix_end(key))
    return fields


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as etcd stores it. `lease` is 0 when the key is not bound to a lease."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeyValue:
        return cls(
            key=_unb64(data.get("key", "")).decode("utf-8", "surrogateescape"),
            value=_unb64(data.get("value", "")),
            create_revision=_int(data.get("create_revision")),
            mod_revision=_int(data.get("mod_revision")),
            version=_int(data.get("version")),
            lease=_int(data.get("lease")),
        )


_COMPARE_RESULTS = {"=": "EQUAL", "!=": "NOT_EQUAL", "<": "LESS", ">": "GREATER"}
CompareOp = Literal["=", "!=", "<", ">"]


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction: `target` of `key` compared with `operand` (`op` is =, !=, < or >).
    A key that does not exist has create_revision, mod_revision and version 0."""

    key: str
    target: Literal["CREATE", "MOD", "VERSION", "VALUE", "LEASE"]
    op: CompareOp
    operand: int | bytes

    def __post_init__(self) -> None:
        if self.op not in _COMPARE_RESULTS:
            raise ValueError(f"compare operator must be one of {sorted(_COMPARE_RESULTS)}, not {self.op!r}")
        if (self.target == "VALUE") != isinstance(self.operand, bytes):
            raise ValueError(f"a {self.target} compare needs {'bytes' if self.target == 'VALUE' else 'an int'}")

    @classmethod
    def create_revision(cls, key: str, op: CompareOp, revision: int) -> Compare:
        return cls(key, "CREATE", op, revision)

    @classmethod
    def mod_revision(cls, key: str, op: CompareOp, revision: int) -> Compare:
        return cls(key, "MOD", op, revision)

    @classmethod
    def version(cls, key: str, op: CompareOp, version: int) -> Compare:
        return cls(key, "VERSION", op, version)

    @classmethod
    def value(cls, key: str, op: CompareOp, value: bytes) -> Compare:
        return cls(key, "VALUE", op, value)

    @classmethod
    def lease(cls, key: str, op: CompareOp, lease_id: int) -> Compare:
        return cls(key, "LEASE", op, lease_id)

    def to_json(self) -> dict[str, Any]:
        field_name = {"CREATE": "create_revision", "MOD": "mod_revision", "VERSION": "version",
                      "VALUE": "value", "LEASE": "lease"}[self.target]
        operand = _b64(self.operand) if isinstance(self.operand, bytes) else str(self.operand)
        return {"key": _b64(self.key), "target": self.target, "result": _COMPARE_RESULTS[self.op],
                field_name: operand}


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of a transaction branch."""

    kind: Literal["put", "delete", "range"]
    key: str
    value: bytes = b""
    lease: int = 0
    prefix: bool = False

    @classmethod
    def put(cls, key: str, value: bytes, lease: int = 0) -> Op:
        return cls("put", key, value, lease)

    @classmethod
    def delete(cls, key: str, *, prefix: bool = False) -> Op:
        return cls("delete", key, prefix=prefix)

    @classmethod
    def range(cls, key: str, *, prefix: bool = False) -> Op:
        return cls("range", key, prefix=prefix)

    def to_json(self) -> dict[str, Any]:
        if self.kind == "put":
            fields: dict[str, Any] = {"key": _b64(self.key), "value": _b64(self.value)}
            if self.lease:
                fields["lease"] = str(self.lease)
            return {"request_put": fields}
        name = "request_range" if self.kind == "range" else "request_delete_range"
        return {name: _range_fields(self.key, self.prefix)}


@dataclass(frozen=True, slots=True)
class OpResult:
    """What one operation of the branch that ran returned: the keys a range found, the count a delete removed."""

    kind: Literal["put", "delete", "range"]
    kvs: tuple[KeyValue, ...] = ()
    deleted: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OpResult:
        if "response_range" in data:
            kvs = tuple(KeyValue.from_json(kv) for kv in data["response_range"].get("kvs", []))
            return cls("range", kvs=kvs)
        if "response_delete_range" in data:
            return cls("delete", deleted=_int(data["response_delete_range"].get("deleted")))
        return cls("put")


@dataclass(frozen=True, slots=True)
class TxnResult:
    """`succeeded`: whether every compare held (the success branch ran). `revision`: the store revision after
    the transaction (the revision of its writes, if it wrote)."""

    succeeded: bool
    revision: int
    responses: tuple[OpResult, ...] = field(default=())


class EventType(enum.Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """A change to a watched key. For a DELETE, `kv` has the key and the deletion's revision only."""

    type: EventType
    kv: KeyValue

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


def ssl_context(ca_file: str | None, cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
    """A client TLS context: verify the server against `ca_file` (the system store when None); present
    `cert_file`/`key_file` as the client certificate when given (both or neither)."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("cert_file and key_file go together")
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file is not None and key_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context


class _StreamBroken(Exception):
    """The watch stream ended, stalled past the idle timeout, or reported an error worth a reconnect."""

    def __init__(self, reason: str, *, idle: bool = False) -> None:
        super().__init__(reason)
        self.idle = idle


class _Messages:
    """Newline-delimited JSON messages from a streaming gateway response."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self._buffer = bytearray()

    async def next(self, idle: float | None) -> dict[str, Any]:
        """The next message; raises _StreamBroken at the end of the stream or after `idle` seconds of silence."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                if line.strip():
                    return self._decode(line)
                continue
            if len(self._buffer) > _MAX_MESSAGE:
                raise _StreamBroken("a watch message exceeded 64 MiB")
            try:
                async with asyncio.timeout(idle):
                    chunk = await self.response.content.readany()
            except TimeoutError:
                raise _StreamBroken(f"no message for {idle}s", idle=True) from None
            if not chunk:
                if self._buffer.strip():
                    line = bytes(self._buffer)
                    self._buffer.clear()
                    return self._decode(line)
                raise _StreamBroken("the stream ended")
            self._buffer += chunk

    @staticmethod
    def _decode(line: bytes) -> dict[str, Any]:
        try:
            message = json.loads(line)
        except ValueError:
            raise _StreamBroken("a watch message is not JSON") from None
        if not isinstance(message, dict):
            raise _StreamBroken("a watch message is not a JSON object")
        return message


def _error_of(data: Any) -> tuple[int | None, str] | None:
    """(gRPC code, message) when `data` is a gateway error payload, unary or streaming form; else None."""
    if not isinstance(data, dict) or "error" not in data:
        return None
    error = data["error"]
    if isinstance(error, dict):  # streaming form: {"error": {"grpc_code", "http_code", "message"}}
        code = error.get("grpc_code")
        return (int(code) if code is not None else None), str(error.get("message", error))
    code = data.get("code")
    return (int(code) if code is not None else None), str(data.get("message") or error)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


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

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST `body` to `path` at the endpoints in turn; the first answer that is not a 5xx wins."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.deadline
        payload = json.dumps(body, separators=(",", ":"))
        failures: list[str] = []
        for index in self._rotation():
            endpoint = self.endpoints[index]
            remaining = give_up - loop.time()
            if remaining <= 0:
                failures.append("overall deadline reached")
                break
            try:
                async with asyncio.timeout(min(self.request_timeout, remaining)):
                    async with self._http().post(endpoint + path, data=payload, headers=_HEADERS) as response:
                        status, raw = response.status, await response.read()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                failures.append(f"{endpoint}: {_describe(exc)}")
                continue
            try:
                data = json.loads(raw)
            except ValueError:
                failures.append(f"{endpoint}: HTTP {status}, not JSON")
                continue
            error = _error_of(data)
            if status >= 500 or (error is not None and error[0] in _RETRY_ELSEWHERE):
                failures.append(f"{endpoint}: HTTP {status} {error[1] if error else ''}".rstrip())
                continue
            if status >= 400 or error is not None or not isinstance(data, dict):
                code, message = error if error is not None else (None, f"HTTP {status}")
                raise EtcdRequestError(f"{path}: {message}", status=status, code=code)
            self._preferred = index
            return data
        raise EtcdUnavailable(f"{path}: no etcd endpoint answered ({'; '.join(failures)})")

    async def range(self, key: str, *, prefix: bool = False) -> tuple[list[KeyValue], int]:
        """The key (or every key under the prefix), and the store revision they were read at."""
        data = await self._call("/v3/kv/range", _range_fields(key, prefix))
        kvs = [KeyValue.from_json(kv) for kv in data.get("kvs", [])]
        return kvs, _int(data.get("header", {}).get("revision"))

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Write the key (bound to `lease` unless 0); returns the revision of the write."""
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        data = await self._call("/v3/kv/put", body)
        return _int(data.get("header", {}).get("revision"))

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        """Delete the key (or every key under the prefix); returns how many keys were deleted."""
        data = await self._call("/v3/kv/deleterange", _range_fields(key, prefix))
        return _int(data.get("deleted"))

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
            revision=_int(data.get("header", {}).get("revision")),
            responses=tuple(OpResult.from_json(item) for item in data.get("responses", [])),
        )

    async def lease_grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: (its id, the TTL granted, which etcd may raise to its minimum)."""
        data = await self._call("/v3/lease/grant", {"TTL": str(ttl)})
        return _int(data.get("ID")), _int(data.get("TTL"))

    async def lease_keepalive(self, lease_id: int) -> int:
        """Refresh the lease; returns its TTL from now, 0 when the lease has expired or never existed."""
        data = await self._call("/v3/lease/keepalive", {"ID": str(lease_id)})
        result = data.get("result", {})
        return _int(result.get("TTL")) if isinstance(result, dict) else 0

    async def lease_revoke(self, lease_id: int) -> None:
        """End the lease now, deleting every key bound to it. Raises EtcdRequestError (code GRPC_NOT_FOUND)
        when the lease does not exist."""
        await self._call("/v3/lease/revoke", {"ID": str(lease_id)})

    async def watch(
        self, key: str, *, prefix: bool = True, start_revision: int | None = None
    ) -> AsyncGenerator[WatchEvent, None]:
        """Changes to the key (or the keys under the prefix) from `start_revision` on (from now when None).

        A broken stream (member killed, member lost its leader, idle past `watch_idle_timeout`) is reopened on
        any endpoint from the revision after the last event seen, so no event is lost or repeated. Raises
        EtcdUnavailable when no endpoint accepts a new stream within the call deadline, EtcdCompacted when
        the revisions to resume from were compacted. Close the iterator (contextlib.aclosing) to end the watch.
        """
        next_revision = start_revision
        while True:
            messages, created_revision = await self._open_watch(key, prefix, next_revision)
            if next_revision is None:
                next_revision = created_revision + 1
            try:
                while True:
                    message = await messages.next(self.watch_idle_timeout)
                    error = _error_of(message)
                    if error is not None:
                        if error[0] in _RETRY_ELSEWHERE:
                            raise _StreamBroken(error[1])
                        raise EtcdRequestError(f"/v3/watch: {error[1]}", status=200, code=error[0])
                    result = message.get("result", {})
                    if not isinstance(result, dict):
                        raise _StreamBroken("a watch message without a result")
                    if _int(result.get("compact_revision")):
                        raise EtcdCompacted(_int(result["compact_revision"]))
                    if result.get("canceled"):  # e.g. permission denied: reopening would not help
                        reason = result.get("cancel_reason", "no reason given")
                        raise EtcdRequestError(f"/v3/watch: canceled: {reason}", status=200, code=None)
                    events = result.get("events", [])
                    if not events:
                        # a progress notification: every event up to this revision was delivered
                        revision = _int(result.get("header", {}).get("revision"))
                        next_revision = max(next_revision, revision + 1)
                        continue
                    for raw in events:
                        kind = EventType.DELETE if raw.get("type") == "DELETE" else EventType.PUT
                        event = WatchEvent(kind, KeyValue.from_json(raw.get("kv", {})))
                        next_revision = max(next_revision, event.revision + 1)
                        yield event
            except (_StreamBroken, aiohttp.ClientError, OSError) as exc:
                report = log.debug if isinstance(exc, _StreamBroken) and exc.idle else log.info
                report("etcd watch stream reopened", key=key, revision=next_revision,
                       endpoint=self.preferred_endpoint, reason=_describe(exc))
                await asyncio.sleep(0.05)  # a member that drops every new stream must not cost a busy loop
            finally:
                messages.response.close()

    async def _open_watch(self, key: str, prefix: bool, start_revision: int | None) -> tuple[_Messages, int]:
        """A watch stream whose creation etcd confirmed: (its messages, the revision at creation)."""
        request: dict[str, Any] = {**_range_fields(key, prefix), "progress_notify": True}
        if start_revision is not None:
            request["start_revision"] = str(start_revision)
        payload = json.dumps({"create_request": request}, separators=(",", ":"))
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.deadline
        failures: list[str] = []
        for index in self._rotation():
            endpoint = self.endpoints[index]
            remaining = give_up - loop.time()
            if remaining <= 0:
                failures.append("overall deadline reached")
                break
            response: aiohttp.ClientResponse | None = None
            try:
                async with asyncio.timeout(min(self.request_timeout, remaining)):
                    response = await self._http().post(endpoint + "/v3/watch", data=payload, headers=_HEADERS)
                    messages = _Messages(response)
                    first = await messages.next(None)
            except (aiohttp.ClientError, TimeoutError, OSError, _StreamBroken) as exc:
                if response is not None:
                    response.close()
                failures.append(f"{endpoint}: {_describe(exc)}")
                continue
            error = _error_of(first)
            result = first.get("result")
            if response.status >= 500 or (error is not None and error[0] in _RETRY_ELSEWHERE):
                response.close()
                failures.append(f"{endpoint}: HTTP {response.status} {error[1] if error else ''}".rstrip())
                continue
            if error is not None or response.status >= 400 or not isinstance(result, dict) \
                    or not result.get("created"):
                response.close()
                code, text = error if error is not None else (None, f"unexpected first message {first}")
                raise EtcdRequestError(f"/v3/watch: {text}", status=response.status, code=code)
            self._preferred = index
            return messages, _int(result.get("header", {}).get("revision"))
        raise EtcdUnavailable(f"/v3/watch: no etcd endpoint accepted a watch ({'; '.join(failures)})")
