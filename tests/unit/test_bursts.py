"""When to re-probe a whole site at once: first failures of different services within a window, at most one
burst per site per gap."""

from __future__ import annotations

from bcd.bursts import Bursts


def test_two_services_failing_within_the_window_call_for_a_burst() -> None:
    bursts = Bursts(failures=2, window=2.0, gap=1.0)
    assert bursts.failed("dorset", "payroll", 10.0) is None
    assert bursts.failed("dorset", "intranet", 11.5) == "2 services failed at dorset within 2s (intranet, payroll)"


def test_the_same_service_twice_is_not_a_correlation() -> None:
    bursts = Bursts(failures=2, window=2.0, gap=1.0)
    assert bursts.failed("dorset", "payroll", 10.0) is None
    assert bursts.failed("dorset", "payroll", 10.5) is None


def test_failures_further_apart_than_the_window_or_at_other_sites_do_not_count() -> None:
    bursts = Bursts(failures=2, window=2.0, gap=1.0)
    assert bursts.failed("dorset", "payroll", 10.0) is None
    assert bursts.failed("dorset", "intranet", 12.5) is None
    assert bursts.failed("hampshire", "mail", 12.6) is None


def test_at_most_one_burst_per_site_per_gap_whoever_asks() -> None:
    bursts = Bursts(failures=2, window=2.0, gap=1.0)
    bursts.failed("dorset", "a", 10.0)
    assert bursts.failed("dorset", "b", 10.1) is not None
    assert not bursts.take("dorset", 10.5)  # e.g. another vantage's view: within the gap
    bursts.failed("dorset", "c", 10.6)
    assert bursts.failed("dorset", "d", 10.7) is None  # within the gap
    assert bursts.take("hampshire", 10.7)  # another site has its own gap
    assert bursts.take("dorset", 11.1)


def test_many_services_are_named_briefly() -> None:
    bursts = Bursts(failures=5, window=2.0, gap=1.0)
    reasons = [bursts.failed("dorset", f"svc{i}", 10.0 + i / 10) for i in range(5)]
    assert reasons[-1] == "5 services failed at dorset within 2s (svc0, svc1, svc2 and 2 more)"


def test_zero_failures_turns_bursts_off() -> None:
    bursts = Bursts(failures=0, window=2.0, gap=1.0)
    assert bursts.failed("dorset", "a", 1.0) is None
    assert bursts.failed("dorset", "b", 1.0) is None
    assert not bursts.take("dorset", 1.0)


def test_retain_forgets_removed_sites() -> None:
    bursts = Bursts(failures=2, window=2.0, gap=10.0)
    assert bursts.take("dorset", 1.0)
    bursts.retain({"hampshire"})
    assert bursts.take("dorset", 2.0)
