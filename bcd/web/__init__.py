"""The HTTP surface: /metrics, /healthz, /readyz, /api/v1, the status page."""
