"""The Temporal side of bench/compare.py: its SDK wants workflows defined at a module's top level."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="noop")
async def noop(step: int) -> int:
    return step


@workflow.defn(name="ThreeNoops", sandboxed=False)
class ThreeNoops:
    @workflow.run
    async def run(self) -> int:
        total = 0
        for step in (1, 2, 3):
            total += await workflow.execute_activity(noop, step, start_to_close_timeout=timedelta(seconds=30))
        return total
