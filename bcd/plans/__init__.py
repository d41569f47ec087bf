"""Recovery plans: every service of a site moved in dependency groups, exactly once, through the operations.

`model` (the values), `records` (the journal's table), `planner` (pure: groups, skips, the dry run),
`execute` (one plan run, async) and `runner` (starting, resuming, aborting plan runs; operators' actions).
"""
