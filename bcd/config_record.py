"""A config load or reload, as the journal's ledger keeps it: the file's SHA-256 (and each included file's), who
asked, and what changed in the effective config since the last load this journal saw (secrets masked).

The effective config is flattened to `dotted.path → value`. Masked: every value that came from ${ENV}
(`Config.secrets`, also inside a longer string such as "Bearer …"), and every value under a key that names a
secret (`sha256` of an API token, `token`, `password`, `secret`, `key`). The flattened, masked config of the
last load is kept in `config_snapshot` (not chained: only the diff is history) so a restart diffs against it.

A masked value is compared by its fingerprint (PBKDF2 of the real value, salted with the instance and the path),
kept beside the snapshot and never journaled: a secret that changed shows as `["***", "*** (changed)"]`, not
dropped for looking the same masked.
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
from bcd.config.includes import Source
from bcd.config.includes import paths as included_paths
from bcd.journal import Journal

log = structlog.get_logger("bcd.config")

MASK = "***"
CHANGED = " (changed)"  # appended to a masked value whose secret changed though it looks the same masked
ROUNDS = 10_000  # PBKDF2 rounds of a fingerprint: a secret's fingerprint is not a cheap way to guess it
SECRET_KEYS = frozenset({"sha256", "token", "password", "secret", "key"})
SHOWN = 200  # paths listed in one entry's diff; beyond that counted
_SNAPSHOT = "CREATE TABLE IF NOT EXISTS config_snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), flat BLOB NOT NULL)"


class Flat(dict[str, Any]):
    """The effective config, flattened and masked, with the fingerprint of each masked value's real value."""

    fingerprints: dict[str, str]


def effective(config: Config) -> Flat:
    """The config as loaded (defaults filled in), flattened and masked."""
    secrets = [secret for secret in config.secrets if secret]
    flat, real = Flat(), {}
    for path, shown, value in _flatten(config.model_dump(mode="json"), "", secrets):
        flat[path] = shown
        if shown != value:
            real[path] = value
    flat.fingerprints = {path: _fingerprint(config.instance, path, value) for path, value in real.items()}
    return flat


def _fingerprint(instance: str, path: str, value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return hashlib.pbkdf2_hmac("sha256", text.encode(), f"bcd\0{instance}\0{path}".encode(), ROUNDS).hex()


def _flatten(value: Any, path: str, secrets: list[str]) -> Iterator[tuple[str, Any, Any]]:
    """(path, value as shown, real value) of each leaf."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if str(key) in SECRET_KEYS and item is not None:
                yield child, MASK, item
            else:
                yield from _flatten(item, child, secrets)
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            yield from _flatten(item, f"{path}[{index}]", secrets)
    elif isinstance(value, str):
        shown = value
        for secret in secrets:
            shown = shown.replace(secret, MASK)
        yield path, shown, value
    else:
        yield path, value, value


def diff(old: dict[str, Any] | None, new: dict[str, Any], old_prints: dict[str, str] | None = None,
         new_prints: dict[str, str] | None = None) -> dict[str, Any]:
    """What changed from `old` to `new` (None: no earlier load is known): added, removed, changed (old, new). A
    masked value that looks the same but whose fingerprint changed is changed (`["***", "*** (changed)"]`)."""
    if old is None:
        return {"first_load": True, "paths": len(new)}
    before, after = old_prints or {}, new_prints or {}
    added = {path: new[path] for path in new.keys() - old.keys()}
    removed = {path: old[path] for path in old.keys() - new.keys()}
    changed = {path: [old[path], new[path]] for path in new.keys() & old.keys() if old[path] != new[path]}
    changed.update({path: [old[path], f"{new[path]}{CHANGED}"] for path in before.keys() & after.keys()
                    if before[path] != after[path] and path not in changed})
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
    digest = _sha256(path)
    included = {name: _sha256(name) for name in _included(path, flat)}
    try:
        journal.execute(_SNAPSHOT)  # not Journal.create: a failure here must not close the journal
        with journal.transaction():
            row = journal.execute("SELECT flat FROM config_snapshot WHERE id = 1").fetchone()
            old, old_prints = _snapshot(json.loads(zlib.decompress(row[0]))) if row else (None, {})
            prints = flat.fingerprints if isinstance(flat, Flat) else {}
            changes = diff(old, flat, old_prints, prints)
            body = {"file": str(path), "sha256": digest, "by": by, "diff": changes}
            if included:
                body["included"] = included
            journal.record(time.time() if at is None else at, "config", str(path), body)
            snapshot = {"format": 2, "flat": flat, "fingerprints": prints}
            journal.execute("INSERT OR REPLACE INTO config_snapshot VALUES (1, ?)",
                            (zlib.compress(json.dumps(snapshot, sort_keys=True).encode()),))
    except sqlite3.Error as exc:
        log.warning("config_load_not_journaled", config=str(path), error=str(exc))
        return False
    log.info("config_load_journaled", config=str(path), sha256=digest, by=by,
             changed=sum(len(v) if isinstance(v, dict) else 0 for v in changes.values()))
    return True


def _sha256(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        return f"unreadable: {exc.strerror}"


def _included(path: str, flat: dict[str, Any]) -> list[str]:
    """The files `include:` names (as listed in `flat`), its globs matched now, as the load just matched them."""
    patterns = [value for key, value in flat.items() if key.startswith("include[")]
    return included_paths(Source(str(path), None, {"include": patterns}), lambda *_: None) if patterns else []


def _snapshot(stored: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The flat config and fingerprints a snapshot keeps (one written before fingerprints: the flat config alone)."""
    if stored.get("format") == 2:
        return stored["flat"], stored["fingerprints"]
    return stored, {}
