"""One bcd among several (one per data centre, plus a witness), coordinated through a `Coordinator` (etcd).

The link between the engine and the coordinator, built by the composition root when the config has a
`cluster:` section (a lone instance has none: the engine then decides and runs exactly as before):

- **Views.** Our view (per service and site: state, since, reason) is published as JSON on change (at most
  4 times a second); every `republish` seconds a beat says it still holds (a small key naming its revision),
  or the whole view is published again while another vantage does not read beats (its view says none: a bcd
  before them). The others' views come from the coordinator, as fresh as their last write or beat. A vantage that
  sees every site of every service down suspects its own network: it withdraws its view and does not vote.
- **Quorum.** `quorum()` gives the pure policy the live vantages' votes on every site of a service: the active
  site (down for a quorum?) and the others (up for a quorum?).
- **Who executes.** A witness (`cluster.executor: false`) votes and publishes its view (with `"executor": false`
  in it, so every instance knows the live executing ones) and never takes a lock; with none live a failover is
  `blocked` (`no_executor`). The executing instance of a run's target site takes the lock first; the others
  wait `target_site_grace` for it (`preference.py`). Whoever does not take the lock says whom it waits for.
- **Exactly one executor.** A run starts only once this instance holds the service's lock: automatic runs
  from a task (one acquisition per service at a time), operators' runs from `start_requested()`. An automatic
  run's lock is taken only if every other vantage's view the decision counted is still at the revision it was
  read at and no other vantage's view (one absent then, or too old to count) was written since (in the same
  etcd transaction); if one changed, nothing runs (event `views_changed`) and the service is decided again once
  the change has arrived here. The run carries a `Fence`: `{fence_token}` is the
  lock's token, every step is recorded in the store (fenced) before it runs and runs only while the lock is
  valid less a safety margin. At the end the holder writes the final record and, after a successful run, the
  active site (fenced), deletes the service's run records beyond the newest `keep_runs` (fenced; a record
  that is unfinished or waits for an acknowledgement stays), then releases the lock.
- **Runs outlive their executor only as records.** Every `SYNC_EVERY` seconds the run records, locks and
  active sites as the coordinator's watch has them (no request) are gone through (parsed only once they
  changed): the active site is adopted; a run elsewhere shows as in progress here; a finished
  run elsewhere is mirrored into the local journal (so cooldowns and blocks agree); a run whose holder lost
  its lock before it finished is journaled `interrupted` here and blocks the service, and whoever next holds the
  lock marks its record interrupted. Nobody re-runs a step. Acknowledgements travel the same way.

One idea per file: `views.py` (our view, the others', votes and quorum), `fence.py` (a run's hold on its lock),
`preference.py` (who takes the lock: this instance, or whom it waits for), `records.py` (run records in etcd
as `RemoteRun` values; which to prune beyond `KEEP_RUNS`), `mirror.py` (other instances' runs journaled here),
`executor.py` (`ClusterLink`: the lock executor, and the periodic read of the store), `metrics.py`.
"""

from bcd.cluster.executor import SYNC_EVERY, ClusterLink
from bcd.cluster.preference import Preference
from bcd.cluster.records import KEEP_RUNS, RemoteRun, prunable
from bcd.cluster.views import VIEW_MIN_GAP

__all__ = ["KEEP_RUNS", "SYNC_EVERY", "VIEW_MIN_GAP", "ClusterLink", "Preference", "RemoteRun", "prunable"]
