"""Enforcing namespace quotas where work enters (admission) and where it runs (activity executors):
token buckets for rates, weighted deficit round robin for shares, per-namespace room for concurrency."""
