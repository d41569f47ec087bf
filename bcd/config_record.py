"""A config load or reload, as the journal's ledger keeps it: the file's SHA-256, who asked, and what changed in
the effective config since the last load this journal saw (secrets masked).

The effective config is flattened to `dotted.path → value`. Masked: every value that came from ${ENV}
(`Config.secrets`, also inside a longer string such as "Bearer …"), and every value under a key that names a
secret (`sha256` of an API token, `token`, `password`, `secret`, `key`). The flattened, masked config of the
last load is kept in `config_snapshot` (not chained: only the diff is history) so a restart diffs against it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog

from bcd.config import Config
from bcd.journal import Journal

log = structlog.get_logger("bcd.config")

MASK = "***"
SECRET_KEYS = frozenset({"sha256", "token", "password", "secret", "key"})
SHOWN = 200  # paths listed in one entry's diff; beyond that counted
_SNAPSHOT = "CREATE TABLE IF NOT EXISTS config_snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), flat BLOB NOT NULL)"


def effective(config: Config) -> dict[str, Any]:
    """The config as loaded (defaults filled in), flattened and masked."""
    secrets = [secret for secret in config.secrets if secret]
    return dict(_flatten(config.model_dump(mode="json"), "", secrets))


def _flatten(value: Any, path: str, secrets: list[str]) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if str(key) in SECRET_KEYS and item is not None:
                yield child, MASK
            else:
                yield from _flatten(item, child, secrets)
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            yield from _flatten(item, f"{path}[{index}]", secrets)
    elif isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, MASK)
        yield path, value
    else:
        yield path, value


def diff(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """What changed from `old` to `new` (None: no earlier load is known): added, removed, changed (old, new)."""
    if old is None:
        return {"first_load": True, "paths": len(new)}
    added = {path: new[path] for path in new.keys() - old.keys()}
    removed = {path: old[path] for path in old.keys() - new.keys()}
    changed = {path: [old[path], new[path]] for path in new.keys() & old.keys() if old[path] != new[path]}
    out: dict[str, Any] = {}
    for name, paths in (("added", added), ("removed", removed), ("changed", changed)):
        shown = dict(sorted(paths.items())[:SHOWN])
        if shown:
            out[name] = shown
        if len(paths) > SHOWN:
            out[f"{name}_not_shown"] = len(paths) - SHOWN
    return out


def record(journal: Journal, path: str, flat: dict[str, Any], by: str, at: float | None = None) -> bool:
    """Chain a `config` entry for a load of `path` whose effective config is `flat` (see `effective`); False
    (logged) when the journal cannot be written: a load is never refused for it."""
    try:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        digest = f"unreadable: {exc.strerror}"
    try:
        journal.execute(_SNAPSHOT)  # not Journal.create: a failure here must not close the journal
        with journal.transaction():
            row = journal.execute("SELECT flat FROM config_snapshot WHERE id = 1").fetchone()
            old = json.loads(zlib.decompress(row[0])) if row else None
            changes = diff(old, flat)
            body = {"file": str(path), "sha256": digest, "by": by, "diff": changes}
            journal.record(time.time() if at is None else at, "config", str(path), body)
            journal.execute("INSERT OR REPLACE INTO config_snapshot VALUES (1, ?)",
                            (zlib.compress(json.dumps(flat, sort_keys=True).encode()),))
    except sqlite3.Error as exc:
        log.warning("config_load_not_journaled", config=str(path), error=str(exc))
        return False
    log.info("config_load_journaled", config=str(path), sha256=digest, by=by,
             changed=sum(len(v) if isinstance(v, dict) else 0 for v in changes.values()))
    return True
