"""Probe kinds, one module each (`http.py`: its config spec, its probe behind the `Probe` protocol of `base.py`,
and its `KIND` declaration), listed in one table (`registry.py`) that builds the config's probe keys and the
dispatch."""
