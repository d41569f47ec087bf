"""The configuration: the models (`models.py`, with each plug-in's spec beside its code), the file reader with
`FILE:LINE: path: message` errors (`loader.py`, `yaml_data.py`, `yaml_lines.py`) and the `*_file` rule
(`bcd/credentials.py`)."""

from __future__ import annotations

from bcd.config.loader import (
    SHOWN_ISSUES,
    ConfigError,
    ConfigIssue,
    Problem,
    first_issues,
    issues_in_file,
    load,
    parse,
    printable,
)
from bcd.config.models import (
    Alerts,
    Cluster,
    Config,
    Defaults,
    EtcdSettings,
    Flapping,
    ProbeConfig,
    SchedulerSettings,
    Server,
    ServiceConfig,
    ServiceSite,
    SiteInfo,
    Timing,
    TimingOverrides,
    json_schema,
    split_listen,
)
from bcd.config.mqtt import MqttCommands, MqttSettings
from bcd.credentials import credential_path, read_credential

__all__ = [
    "SHOWN_ISSUES",
    "Alerts",
    "Cluster",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "Defaults",
    "EtcdSettings",
    "Flapping",
    "MqttCommands",
    "MqttSettings",
    "ProbeConfig",
    "Problem",
    "SchedulerSettings",
    "Server",
    "ServiceConfig",
    "ServiceSite",
    "SiteInfo",
    "Timing",
    "TimingOverrides",
    "credential_path",
    "first_issues",
    "issues_in_file",
    "json_schema",
    "load",
    "parse",
    "printable",
    "read_credential",
    "split_listen",
]
