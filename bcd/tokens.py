"""`bcd token new NAME --role ROLE [--scope LABEL=VALUE]`: a new random API token, printed once, and the line
that configures it (its SHA-256 under `auth.tokens`), so that nobody hashes a secret by hand."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import secrets
import sys
from typing import Any

from bcd.authority import ROLES
from bcd.runbooks.specs import NAME

TOKEN_BYTES = 32  # 256 bits of randomness, URL-safe base64 (43 characters)


def add_commands(commands: Any) -> None:
    token = commands.add_parser("token", help="API tokens").add_subparsers(metavar="ACTION")
    new = token.add_parser("new", help="print a new random token once, and its config line (sha256)")
    new.add_argument("name", help="who holds it (journaled as `by`)")
    new.add_argument("--role", required=True, choices=ROLES)
    new.add_argument("--scope", action="append", default=[], metavar="LABEL=VALUE",
                     help="only services with this label (repeat: all of them must match)")
    new.set_defaults(handler=cmd_token_new)


def scope_of(pairs: list[str]) -> dict[str, str]:
    """`owner=dorset-cc` pairs as labels; ValueError naming the bad one."""
    labels: dict[str, str] = {}
    for pair in pairs:
        label, sep, value = pair.partition("=")
        if not sep or not label or not value:
            raise ValueError(f"--scope {pair!r}: expected LABEL=VALUE, e.g. owner=dorset-cc")
        labels[label] = value
    return labels


def config_line(name: str, role: str, token: str, labels: dict[str, str]) -> str:
    """The `auth.tokens` entry of `token` (YAML flow; label values quoted, so `tier: "1"` stays a string)."""
    digest = hashlib.sha256(token.encode()).hexdigest()
    scope = ""
    if labels:
        inner = ", ".join(f"{json.dumps(key)}: {json.dumps(value)}" for key, value in labels.items())
        scope = f", scope: {{labels: {{{inner}}}}}"
    return f"- {{name: {name}, role: {role}, sha256: {digest}{scope}}}"


def cmd_token_new(args: argparse.Namespace) -> int:
    if not re.match(NAME, args.name):
        print(f"bcd token new: name {args.name!r}: letters, digits, '_', '.', '-' (not first)", file=sys.stderr)
        return 2
    try:
        labels = scope_of(args.scope)
    except ValueError as exc:
        print(f"bcd token new: {exc}", file=sys.stderr)
        return 2
    token = secrets.token_urlsafe(TOKEN_BYTES)
    print(f"# the token, shown only now (bcd keeps its SHA-256): give it to {args.name}, send it as a bearer token")
    print(token)
    print("# add under auth.tokens in the config, then reload (systemctl reload bcd):")
    print(config_line(args.name, args.role, token, labels))
    return 0
