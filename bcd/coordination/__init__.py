"""Coordination between bcd instances: exclusive run locks with fencing tokens, fenced records, shared views.

`EtcdCoordinator` coordinates one instance per site through etcd and satisfies `Coordinator` (base.py). A lone
instance (no `cluster:` section) has no coordinator: its runner runs alone, with the run id as `{fence_token}`.
"""

from bcd.coordination.base import (
    CoordinationError,
    CoordinationUnavailable,
    Coordinator,
    Keys,
    Lock,
    ViewsChanged,
    active_key,
    run_key,
)
from bcd.coordination.etcd_coordinator import EtcdCoordinator

__all__ = [
    "CoordinationError",
    "CoordinationUnavailable",
    "Coordinator",
    "EtcdCoordinator",
    "Keys",
    "Lock",
    "ViewsChanged",
    "active_key",
    "run_key",
]


def implementations() -> tuple[type[Coordinator], ...]:
    """Every Coordinator implementation (mypy checks here that each satisfies the Protocol)."""
    return (EtcdCoordinator,)
