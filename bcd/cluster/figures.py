"""The cluster link's figures for /metrics (`bcd.outputs.metrics.ClusterCollector`): a plain value the link makes
at scrape time from the views it holds (`Views.figures`), so that the collector reads numbers, not the link."""

from __future__ import annotations

from dataclasses import dataclass

from bcd.model import SiteState


@dataclass(frozen=True, slots=True)
class ClusterFigures:
    vantage: str
    available: bool  # coordination (etcd and our lease) is up
    members: dict[str, float]  # live vantage → seconds since its view was written (ours first: 0, unless suspect)
    votes: dict[tuple[str, str], dict[SiteState, int]]  # (service, site) → live vantages seeing it in each state
    held: dict[str, bool]  # service → whether this instance holds its run lock
