"""Coordination between bcd instances: exclusive run locks with fencing tokens, fenced records, shared views.

`LocalCoordinator` is the single-instance default; `EtcdCoordinator` coordinates one instance per site
through etcd. Both satisfy `Coordinator` (base.py).
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
from bcd.coordination.local import LocalCoordinator

__all__ = [
    "CoordinationError",
    "CoordinationUnavailable",
    "Coordinator",
    "EtcdCoordinator",
    "Keys",
    "LocalCoordinator",
    "Lock",
    "ViewsChanged",
    "active_key",
    "run_key",
]


def implementations() -> tuple[type[Coordinator], ...]:
    """Every Coordinator implementation (mypy checks here that each satisfies the Protocol)."""
    return (LocalCoordinator, EtcdCoordinator)
