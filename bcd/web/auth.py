"""Bearer tokens: stored as SHA-256 hex in the config, compared in constant time.

With no tokens configured, read endpoints are open (bcd binds to loopback by default) and operator
actions are refused. With tokens, reads need a token unless `auth.anonymous_read`. This module only says
who is asking (an `Actor`: name, role, scope); what that actor may do is decided in `bcd.operations`.
"""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

from bcd.authority import Actor, Role
from bcd.runbooks.specs import Auth

__all__ = ["Actor", "Denied", "Role", "authenticate", "identify", "require"]


class Denied(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


def identify(auth: Auth, header: str | None) -> Actor:
    """Who sent this request (ANONYMOUS when no token; Denied 401 for an unknown one)."""
    if not header or not header.startswith("Bearer "):
        return Actor("anonymous", Role.ANONYMOUS)
    digest = hashlib.sha256(header.removeprefix("Bearer ").strip().encode()).hexdigest()
    found: Actor | None = None
    for token in auth.tokens:  # look at every token: the time taken does not depend on which one matched
        if hmac.compare_digest(digest, token.sha256):
            found = Actor(token.name, Role[token.role.upper()], token.scope)
    if found is None:
        raise Denied(401, "unknown token")
    return found


def require(auth: Auth, request: web.Request, role: Role = Role.VIEWER) -> Actor:
    """The caller, if it may read; else raises Denied (401 without a valid token)."""
    caller = identify(auth, request.headers.get("Authorization"))
    if role is Role.VIEWER and (not auth.tokens or auth.anonymous_read):
        return caller
    return authenticate(auth, request, caller)


def authenticate(auth: Auth, request: web.Request, caller: Actor | None = None) -> Actor:
    """The caller of an action, known by its token (Denied 401 without one, 403 with no tokens configured);
    whether it may do what it asks is for `bcd.operations` to say."""
    if caller is None:
        caller = identify(auth, request.headers.get("Authorization"))
    if not auth.tokens:
        raise Denied(403, "no operator tokens are configured (auth.tokens)")
    if caller.role is Role.ANONYMOUS:
        raise Denied(401, "a bearer token is required")
    return caller
