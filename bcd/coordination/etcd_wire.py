"""The messages of etcd's JSON gateway (`POST /v3/...`): the protobuf messages mapped to JSON, where keys and
values are base64, int64 fields are strings, and fields holding their default value (0, false, empty) are left
out of responses. Values here are frozen; `to_json`/`from_json` convert at the edge."""

from __future__ import annotations

import base64
import enum
from dataclasses import dataclass, field
from typing import Any, Literal

# google.golang.org/grpc/codes, the ones the client looks at
GRPC_CANCELED = 1
GRPC_DEADLINE_EXCEEDED = 4
GRPC_NOT_FOUND = 5
GRPC_UNAVAILABLE = 14
RETRY_ELSEWHERE = frozenset({GRPC_CANCELED, GRPC_DEADLINE_EXCEEDED, GRPC_UNAVAILABLE})


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


class TryElsewhere(Exception):
    """This endpoint cannot serve the call now (a 5xx such as "no leader", an answer that is not JSON, a stream
    that broke before it was confirmed): the client tries the next endpoint. The message says why."""


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def int64(value: Any) -> int:
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


def range_fields(key: str, prefix: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {"key": b64(key)}
    if prefix:
        fields["range_end"] = b64(prefix_end(key))
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
            key=unb64(data.get("key", "")).decode("utf-8", "surrogateescape"),
            value=unb64(data.get("value", "")),
            create_revision=int64(data.get("create_revision")),
            mod_revision=int64(data.get("mod_revision")),
            version=int64(data.get("version")),
            lease=int64(data.get("lease")),
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
    range_end: bytes | None = None  # compare every key from `key` to this one (excluded), as a range does

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
    def mod_revisions(cls, key: str, range_end: bytes, op: CompareOp, revision: int) -> Compare:
        """The mod revision of every key in [key, range_end): the condition holds if it holds for each (a
        range with no key holds)."""
        return cls(key, "MOD", op, revision, range_end)

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
        operand = b64(self.operand) if isinstance(self.operand, bytes) else str(self.operand)
        compared = {"key": b64(self.key), "target": self.target, "result": _COMPARE_RESULTS[self.op],
                    field_name: operand}
        if self.range_end is not None:
            compared["range_end"] = b64(self.range_end)
        return compared


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
            fields: dict[str, Any] = {"key": b64(self.key), "value": b64(self.value)}
            if self.lease:
                fields["lease"] = str(self.lease)
            return {"request_put": fields}
        name = "request_range" if self.kind == "range" else "request_delete_range"
        return {name: range_fields(self.key, self.prefix)}


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
            return cls("delete", deleted=int64(data["response_delete_range"].get("deleted")))
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


def error_of(data: Any) -> tuple[int | None, str] | None:
    """(gRPC code, message) when `data` is a gateway error payload, unary or streaming form; else None."""
    if not isinstance(data, dict) or "error" not in data:
        return None
    error = data["error"]
    if isinstance(error, dict):  # streaming form: {"error": {"grpc_code", "http_code", "message"}}
        code = error.get("grpc_code")
        return (int(code) if code is not None else None), str(error.get("message", error))
    code = data.get("code")
    return (int(code) if code is not None else None), str(data.get("message") or error)


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
