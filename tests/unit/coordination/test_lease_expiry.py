"""The lease's expiry timer: uvloop may fire a timer a little early; the lease must still be declared lost."""

from __future__ import annotations

import time

from bcd.coordination.etcd import EtcdClient
from bcd.coordination.etcd_coordinator import EtcdCoordinator
from tests.helpers.etcd import wait_for


async def test_an_expiry_timer_that_fires_early_comes_back_until_the_validity_really_ends() -> None:
    start = time.monotonic()

    def slow_clock() -> float:  # runs at half speed, so every timer the loop fires looks early
        return start + (time.monotonic() - start) / 2

    client = EtcdClient(["http://127.0.0.1:9"])  # never called: only the timer logic runs
    coordinator = EtcdCoordinator(client, cluster="c", vantage="dorset", clock=slow_clock)
    coordinator._lease_id = 7
    coordinator._set_validity(slow_clock() + 0.05)
    # an early timer that does not re-arm leaves the lease held forever
    await wait_for(lambda: coordinator.lease_id != 7, timeout=2)
    assert slow_clock() >= start + 0.05  # and it was not lost before its validity ended
    await client.close()
