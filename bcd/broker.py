"""How to reach bcd's MQTT broker: one description, built from the `mqtt:` section, shared by the MQTT
output (state, events, commands) and runbook `mqtt_publish` steps, so both use the same TLS settings."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import structlog

from bcd.credentials import read_credential

if TYPE_CHECKING:
    from bcd.config.mqtt import MqttSettings


@dataclass(frozen=True, slots=True)
class BrokerLink:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    tls_insecure: bool | None = None  # for aiomqtt: None on plain TCP

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def link_from_url(url: str, username: str | None = None, password: str | None = None,
                  tls: ssl.SSLContext | None = None, tls_verify: bool = True) -> BrokerLink:
    """mqtt://host:port or mqtts://host:port (with `tls`, else verified against the system's trust store)."""
    parts = urlsplit(url)
    secure = parts.scheme == "mqtts"
    return BrokerLink(
        host=parts.hostname or "127.0.0.1", port=parts.port or (8883 if secure else 1883),
        username=username, password=password,
        tls=(tls or ssl.create_default_context()) if secure else None, tls_insecure=not tls_verify if secure else None,
    )


def broker_link(settings: MqttSettings) -> BrokerLink:
    """The configured broker with its credentials and TLS files read. Raises OSError (a file that cannot be
    read) or ssl.SSLError (a certificate or key that does not load)."""
    password = read_credential(settings.password_file) if settings.password_file else None
    tls = None
    if urlsplit(settings.url).scheme == "mqtts":
        tls = ssl.create_default_context(cafile=settings.ca_file)
        if not settings.tls_verify:
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
        if settings.cert_file is not None:
            tls.load_cert_chain(settings.cert_file, settings.key_file)
    return link_from_url(settings.url, settings.username, password, tls, settings.tls_verify)


def steps_broker_link(settings: MqttSettings | None) -> BrokerLink | None:
    """`broker_link` for runbook `mqtt_publish` steps: None without an `mqtt:` section, or (logged) when its files
    are unusable."""
    if settings is None:
        return None
    try:
        return broker_link(settings)
    except (OSError, ssl.SSLError) as exc:  # mqtt_publish steps will fail and say so; the daemon goes on
        structlog.get_logger("bcd.app").error("mqtt_broker_settings_unusable", error=str(exc),
                                              hint="fix the mqtt section's files, then reload")
        return None
