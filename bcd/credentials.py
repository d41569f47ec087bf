"""The one rule for every `*_file:` key (passwords, HMAC keys, TLS CAs, certificates and keys): an absolute path
is used as it is, a relative one is read from `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`), or from
the working directory when that is not set."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator


def credential_path(name: str) -> Path:
    """A `*_file:` value: absolute, else relative to $CREDENTIALS_DIRECTORY (systemd LoadCredential=)."""
    path = Path(name)
    if path.is_absolute():
        return path
    return Path(os.environ.get("CREDENTIALS_DIRECTORY", ".")) / path


def _resolved(name: str) -> str:
    return str(credential_path(name)) if os.environ.get("CREDENTIALS_DIRECTORY") else name


CredentialFile = Annotated[str, AfterValidator(_resolved)]
"""The type of every `*_file:` key: resolved by the rule above when the config is read, so that each user
(probe TLS, the MQTT link, runbook steps, webhooks, etcd) opens the path it is given."""


def read_credential(name: str) -> str:
    """The contents of a `*_file:` (whitespace-trimmed)."""
    return credential_path(name).read_text(encoding="utf-8").strip()
