"""The app the throughput benchmark deploys: workflows of three trivial activities."""

from __future__ import annotations

from perdure.tenants import App, workflow

app = App("bench-throughput")


@app.activity
async def noop(step: int) -> int:
    return step


@app.workflow
class ThreeNoops:
    @workflow.run
    async def run(self) -> int:
        total = 0
        for step in (1, 2, 3):
            total += await workflow.execute_activity(noop, step, start_to_close_timeout=30)
        return total


@app.workflow
class Instant:
    """Completes at once: one engine round, for the fairness benchmark."""

    @workflow.run
    async def run(self, tag: str) -> str:
        return tag


@app.workflow
class Sleeper:
    """Waits on a durable timer: the memory benchmark holds thousands of these open."""

    @workflow.run
    async def run(self, seconds: float) -> None:
        await workflow.sleep(seconds)
