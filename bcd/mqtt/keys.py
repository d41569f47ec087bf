"""The signing keys of MQTT commands, read from their credential files: `commands.hmac_key_file` (an operator
of every service) and each of `commands.keys` (its own role and scope, e.g. one key per council)."""

from __future__ import annotations

import structlog

from bcd.authority import Role
from bcd.config import read_credential
from bcd.config.mqtt import MqttCommands
from bcd.mqtt.commands import Keys, Signer

log = structlog.get_logger("bcd.mqtt")


def _secret(path: str) -> bytes | None:
    try:
        return read_credential(path).encode("utf-8") or None
    except OSError as exc:
        log.error("mqtt_command_key_unreadable", file=path, error=str(exc),
                  hint="commands it signs are refused until it can be read (reload or reconnect)")
        return None


def signing_keys(commands: MqttCommands) -> Keys | None:
    """The keys that can be read; None when there is none (every command is then refused)."""
    only = _secret(commands.hmac_key_file) if commands.hmac_key_file else None
    if not commands.keys:
        return only
    signers = [] if only is None else [Signer(only)]
    for key in commands.keys:
        secret = _secret(key.hmac_key_file)
        if secret is not None:
            signers.append(Signer(secret, key.name, Role[key.role.upper()], key.scope))
    return tuple(signers) or None
