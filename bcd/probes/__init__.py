"""Probe kinds, one module each behind the `Probe` protocol (`base.py`), picked from one table
(`registry.py`) by the config's kind key. Their config models live in `specs.py`.

Kept empty so that reading a config (which imports `specs`) does not import every probe's library."""
