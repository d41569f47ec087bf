"""Bearer tokens: stored as SHA-256 hex in the config, compared in constant time.

With no tokens configured, read endpoints are open (bcd binds to loopback by default) and operator
actions are refused. With tokens, reads need a viewer (or operator) token unless `auth.anonymous_read`.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import IntEnum

from aiohttp import web

from bcd.runbooks.specs import Auth


class Role(IntEnum):
    ANONYMOUS = 0
    VIEWER = 1
    OPERATOR = 2


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    role: Role


class Denied(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


def identify(auth: Auth, header: str | None) -> Caller:
    """Who sent this request (ANONYMOUS when no or an unknown token)."""
    if not header or not header.startswith("Bearer "):
        return Caller("anonymous", Role.ANONYMOUS)
    digest = hashlib.sha256(header.removeprefix("Bearer ").strip().encode()).hexdigest()
    found: Caller | None = None
    for token in auth.tokens:  # look at every token: the time taken does not depend on which one matched
        if hmac.compare_digest(digest, token.sha256):
            found = Caller(token.name, Role.OPERATOR if token.role == "operator" else Role.VIEWER)
    if found is None:
        raise Denied(401, "unknown token")
    return found


def require(auth: Auth, request: web.Request, role: Role) -> Caller:
    """The caller, if allowed `role`; else raises Denied (401 without a valid token, 403 if too weak)."""
    caller = identify(auth, request.headers.get("Authorization"))
    if role is Role.VIEWER and (not auth.tokens or auth.anonymous_read):
        return caller
    if role is Role.OPERATOR and not auth.tokens:
        raise Denied(403, "no operator tokens are configured (auth.tokens)")
    if caller.role is Role.ANONYMOUS:
        raise Denied(401, "a bearer token is required")
    if caller.role < role:
        raise Denied(403, f"{caller.name} is a {caller.role.name.lower()}; this needs an operator")
    return caller
