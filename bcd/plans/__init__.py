"""Recovery plans: every service of a site moved in dependency groups, exactly once, through the operations.

`model` (the values), `records` (the journal's table), `planner` (pure: groups, skips, the dry run),
`gates` (`require_approval` before the first group; four eyes), `execute` (one plan run, async), `runner`
(starting, resuming, aborting plan runs; operators' actions; automatic starts on a lost site), and in a
cluster `lock` (the plan's etcd lock and its shared record) and `follow` (other instances' runs kept here).
"""
