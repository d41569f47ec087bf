"""Failover and failback runbooks: config models, the runner and one file per step kind."""
