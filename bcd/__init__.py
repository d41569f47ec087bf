"""bcd: business-continuity failover daemon."""

__version__ = "0.1.0"
