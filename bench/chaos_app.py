"""The app the chaos run deploys: workflows with every kind of step (activities, a timer, a child, a
signal), whose activities write a line per execution to a ledger so that executions are counted outside
the platform."""

from __future__ import annotations

import os
import time
from datetime import timedelta

from perdure.tenants import App, RetryPolicy, activity, workflow

app = App("bench-chaos")
RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=0)


@app.activity
def step(ledger: str, name: str) -> str:
    descriptor = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        # One write: whole lines even from many workers. The attempt, the time and the process tell a
        # repeated execution's cause (a retry after a timeout, a redelivery, a second worker).
        line = f"{name} {activity.info().attempt} {time.time():.3f} {os.getpid()}\n"
        os.write(descriptor, line.encode())
    finally:
        os.close(descriptor)
    return f"{name}-done"


@app.workflow
class Nap:
    @workflow.run
    async def run(self, seconds: float) -> str:
        await workflow.sleep(timedelta(seconds=seconds))
        return "woke"


@app.workflow
class Mixed:
    """An activity, a timer, a child workflow, a signal it waits for, and a second activity."""

    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self, ledger: str, tag: str) -> str:
        first = await workflow.execute_activity(
            step, ledger, f"{tag}-a", start_to_close_timeout=15, retry_policy=RETRY
        )
        await workflow.sleep(timedelta(milliseconds=300))
        child = await workflow.execute_child_workflow(Nap.run, 0.2, id=f"{tag}-child")
        await workflow.wait_condition(lambda: self.go)
        second = await workflow.execute_activity(
            step, ledger, f"{tag}-b", start_to_close_timeout=15, retry_policy=RETRY
        )
        return f"{first}:{child}:{second}"

    @workflow.signal
    def proceed(self) -> None:
        self.go = True


@app.workflow
class Probe:
    """One activity: how soon after a fault a new workflow runs end to end."""

    @workflow.run
    async def run(self, ledger: str, tag: str) -> str:
        return await workflow.execute_activity(
            step, ledger, tag, start_to_close_timeout=15, retry_policy=RETRY
        )
