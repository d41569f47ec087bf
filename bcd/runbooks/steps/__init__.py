"""Runbook step kinds, one module each (its spec, the class that runs it behind `StepKind` in `base.py`, and its
`KIND` declaration), listed in one table (`registry.py`)."""
