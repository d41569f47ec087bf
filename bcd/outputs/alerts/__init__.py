"""Alerts at the edge: derive them from the live state, diff, and notify Alertmanager and webhooks.

`sender.AlertSender` derives the alerts with the pure `alert_rules.active_alerts`: for the services named by bus
events as they come (bursts coalesced), and for every service every `FULL_EVERY` seconds, in slices (so
certificates that cross `cert_expiry_warn` are seen, and nothing depends on an event having been delivered).
What appears is firing, what disappears is resolved. Each receiver has its own task, so a receiver that is
slow or down never holds up the daemon, the other receivers, or the next evaluation.

One module per receiver, with its settings model beside its code (`alertmanager.py`, `webhook.py`), listed in
`registry.py`; `sender.py` derives and dispatches; `delivery.py` is what receivers share.

Each POST has a deadline; failed posts are retried with jittered exponential backoff (tenacity), a bounded
number of times, and only on network errors, timeouts and 5xx answers.
"""
