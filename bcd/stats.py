"""Small typed figures the parts keep for /metrics: plain numbers, cheap to update on a hot path."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Histogram:
    """Cumulative-bucket histogram kept as plain numbers (cheap on the hot path)."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        for index, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[index] += 1
                break

    def cumulative(self) -> list[int]:
        running, out = 0, []
        for count in self.counts:
            running += count
            out.append(running)
        return out
