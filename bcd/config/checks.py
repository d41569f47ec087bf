"""The config's cross checks: problems between its parts, each with its own location (a tuple: names may
contain dots or be all digits). `config` is a `bcd.config.models.Config` (not imported: that module calls this)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from bcd import dependencies
from bcd.runbooks.specs import Transfer

Problem = tuple[tuple[str, ...], str]


def undeclared_site(site: str) -> str:
    """The one wording of a site named somewhere that `sites:` does not declare."""
    return f"site {site!r} is not declared under sites"


def problems(config: Any) -> list[Problem]:
    """Every cross-check problem of `config`, in a stable order."""
    return [*_undeclared_sites(config), *_timeouts(config), *_fast_intervals(config), *_runbook_refs(config),
            *_step_sites(config), *_step_commands(config), *_cluster_vantage(config), *_dependencies(config),
            *_scopes(config)]


def _undeclared_sites(config: Any) -> Iterator[Problem]:
    for service_name, service in config.services.items():
        for site in service.sites:
            if site not in config.sites:
                loc = ("services", service_name, "sites", site)
                yield loc, undeclared_site(site)


def _scopes(config: Any) -> Iterator[Problem]:
    """A scope that matches no service is a typo (an owner misspelt), not a token for nothing."""
    scoped = [(("auth", "tokens", t.name, "scope"), t.scope) for t in config.auth.tokens]
    for loc, scope in scoped + (config.mqtt.commands.scopes() if config.mqtt is not None else []):
        if scope is not None and not any(scope.matches(s.labels) for s in config.services.values()):
            yield loc, f"scope {scope} matches no service (no service has those labels)"


def _dependencies(config: Any) -> Iterator[Problem]:
    graph = {name: service.depends_on for name, service in config.services.items()}
    for name, needs in graph.items():
        unknown = [need for need in needs if need not in graph]
        if unknown:
            yield ("services", name, "depends_on"), f"unknown service {', '.join(map(repr, unknown))}"
    known = {name: [need for need in needs if need in graph] for name, needs in graph.items()}
    loop = dependencies.cycle(known)
    if loop is not None:
        yield ("services", loop[0], "depends_on"), f"dependency cycle: {' -> '.join(loop)}"


def _cluster_vantage(config: Any) -> Iterator[Problem]:
    if config.cluster is not None and config.vantage is None:
        yield ("cluster",), "a cluster member needs a vantage (in the file, --vantage or BCD_VANTAGE)"


def _step_commands(config: Any) -> Iterator[Problem]:
    """A runbook command that exists here but cannot be executed is an error (missing: a warning)."""
    for name, runbook in config.runbooks.items():
        for phase in ("steps", "rollback"):
            for step in getattr(runbook, phase):
                program = step.command.argv[0] if step.command is not None else None
                if program is not None and os.path.exists(program) and not _executable(program):
                    loc = ("runbooks", name, phase, step.name, "command", "argv")
                    yield loc, f"{program} is not an executable file"


def _runbook_refs(config: Any) -> Iterator[Problem]:
    for name, service in config.services.items():
        for which in ("failover", "failback"):
            transfer: Transfer | None = getattr(service, which)
            if transfer is not None and transfer.runbook not in config.runbooks:
                yield ("services", name, which, "runbook"), f"unknown runbook {transfer.runbook!r}"


def _step_sites(config: Any) -> Iterator[Problem]:
    for name, runbook in config.runbooks.items():
        for phase in ("steps", "rollback"):
            for step in getattr(runbook, phase):
                site = step.wait_healthy.site if step.wait_healthy is not None else None
                if site is not None and "{" not in site and site not in config.sites:
                    loc = ("runbooks", name, phase, step.name, "wait_healthy", "site")
                    yield loc, undeclared_site(site)


def _timeouts(config: Any) -> Iterator[Problem]:
    for service_name, site_name, probe in config.all_probes():
        timing = config.timing(service_name, probe)
        if timing.timeout >= timing.interval:
            loc = ("services", service_name, "sites", site_name, "probes", probe.name)
            yield loc, f"timeout ({timing.timeout:g}s) must be shorter than interval ({timing.interval:g}s)"


def _fast_intervals(config: Any) -> Iterator[Problem]:
    """A fast_interval set explicitly must be longer than the timeout and not longer than the interval; each
    problem is reported once, where the fast_interval is set."""
    seen: set[tuple[str, ...]] = set()
    for service_name, site_name, probe in config.all_probes():
        loc = _fast_interval_set_at(config, service_name, site_name, probe)
        if loc is None or loc in seen:
            continue
        timing = config.timing(service_name, probe)
        fast, at = timing.fast_interval, f"{service_name}/{site_name}/{probe.name}"
        if fast <= timing.timeout:
            seen.add(loc)
            yield loc, f"fast_interval ({fast:g}s) must be longer than the timeout ({timing.timeout:g}s of {at})"
        elif fast > timing.interval:
            seen.add(loc)
            yield loc, (f"fast_interval ({fast:g}s) must not exceed the interval ({timing.interval:g}s of {at}; "
                        "equal to it turns fast confirmation off)")


def _fast_interval_set_at(config: Any, service_name: str, site_name: str, probe: Any) -> tuple[str, ...] | None:
    if probe.fast_interval is not None:
        return ("services", service_name, "sites", site_name, "probes", probe.name, "fast_interval")
    if config.services[service_name].fast_interval is not None:
        return ("services", service_name, "fast_interval")
    return ("defaults", "fast_interval") if config.defaults.fast_interval is not None else None


def _executable(path: str) -> bool:
    # mode bits, not os.access: for root, access(X_OK) can say yes to a file nobody may execute
    return os.path.isfile(path) and bool(os.stat(path).st_mode & 0o111) and os.access(path, os.X_OK)
