"""Workflows and activities the runtime tests run; counters are kept outside the platform."""

from __future__ import annotations

import asyncio
import collections
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from perdure.platform.core.definitions import WORKFLOW_ATTR, WorkflowDefinition
from perdure.tenants import ActivityError, App, ApplicationError, RetryPolicy, activity, workflow

app = App("runtime-tests")
calls: collections.Counter[str] = collections.Counter()
FAST = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)


class Order(BaseModel):
    order_id: str
    amount: int


@app.activity
async def step(name: str) -> str:
    calls[name] += 1
    return f"{name}-done"


@app.activity
def sync_step(name: str) -> str:
    calls[name] += 1
    return f"{name}-sync"


@app.activity
async def flaky(name: str, failures: int) -> str:
    calls[name] += 1
    if activity.info().attempt <= failures:
        raise RuntimeError(f"{name} attempt {activity.info().attempt} failed")
    return f"{name}-ok-after-{activity.info().attempt}"


@app.activity
async def refuse(name: str) -> str:
    calls[name] += 1
    raise ApplicationError("card declined", {"code": 51}, type="CardDeclined", non_retryable=True)


@app.activity
async def priced(order: Order) -> Order:
    return Order(order_id=order.order_id, amount=order.amount * 2)


@app.workflow
class ThreeSteps:
    @workflow.run
    async def run(self, prefix: str) -> list[str]:
        results = []
        for i in (1, 2, 3):
            results.append(await workflow.execute_activity(step, f"{prefix}-{i}", start_to_close_timeout=10))
        return results


@app.workflow
class Retrying:
    @workflow.run
    async def run(self, name: str, failures: int) -> str:
        return await workflow.execute_activity(
            flaky, name, failures, start_to_close_timeout=10, retry_policy=FAST
        )  # type: ignore[no-any-return]


@app.workflow
class NonRetryable:
    @workflow.run
    async def run(self, name: str) -> str:
        try:
            await workflow.execute_activity(refuse, name, start_to_close_timeout=10, retry_policy=FAST)
        except ActivityError as err:
            cause = err.cause
            assert isinstance(cause, ApplicationError)
            return f"{cause.type}:{cause.details[0]['code']}"
        return "unreachable"


@app.workflow
class SignalsAndTimers:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.go = False

    @workflow.run
    async def run(self) -> list[str]:
        self.events.append(f"start@{workflow.now().isoformat()}")
        await workflow.sleep(timedelta(minutes=5))
        self.events.append("slept")
        await workflow.wait_condition(lambda: self.go)
        self.events.append("go")
        try:
            await workflow.wait_condition(lambda: False, timeout=timedelta(hours=2))
        except TimeoutError:
            self.events.append("timed-out")
        return self.events

    @workflow.signal
    def note(self, text: str) -> None:
        self.events.append(f"signal:{text}")

    @workflow.signal
    def proceed(self) -> None:
        self.go = True

    @workflow.query
    def seen(self) -> list[str]:
        return list(self.events)


@app.workflow
class Curious:
    """Draws from the run's random stream after a signal; its queries try to leave traces."""

    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self) -> list[object]:
        await workflow.wait_condition(lambda: self.go)
        drawn = workflow.random().randint(0, 10**9)
        return [drawn, await workflow.execute_activity(step, "curious", start_to_close_timeout=10)]

    @workflow.signal
    def proceed(self) -> None:
        self.go = True

    @workflow.query
    def next_draw(self) -> int:
        return workflow.random().randint(0, 10**9)

    @workflow.query
    def meddle(self) -> str:
        workflow.execute_activity(step, "meddled", start_to_close_timeout=10)
        return "meddled"


@app.workflow
class Reordered:
    """Version 1 runs A then B; the test swaps in ``ReorderedV2`` under the same name."""

    @workflow.run
    async def run(self) -> str:
        await workflow.execute_activity(step, "A", start_to_close_timeout=10)
        await workflow.execute_activity(sync_step, "B", start_to_close_timeout=10)
        return "v1"


class ReorderedV2:
    @workflow.run
    async def run(self) -> str:
        await workflow.execute_activity(sync_step, "B", start_to_close_timeout=10)
        await workflow.execute_activity(step, "A", start_to_close_timeout=10)
        return "v2"


class PatchedV1:
    @workflow.run
    async def run(self) -> str:
        await workflow.execute_activity(step, "old", start_to_close_timeout=10)
        await workflow.sleep(60)
        return "old-path"


class PatchedV2:
    @workflow.run
    async def run(self) -> str:
        if workflow.patched("use-new-step"):
            await workflow.execute_activity(step, "new", start_to_close_timeout=10)
            await workflow.sleep(60)
            return "new-path"
        await workflow.execute_activity(step, "old", start_to_close_timeout=10)
        await workflow.sleep(60)
        return "old-path"


@app.workflow
class Child:
    @workflow.run
    async def run(self, n: int) -> int:
        if n < 0:
            raise ApplicationError("negative", type="Negative", non_retryable=True)
        await workflow.sleep(timedelta(minutes=n))
        return n * 10


@app.workflow
class Parent:
    @workflow.run
    async def run(self, values: list[int]) -> dict[str, Any]:
        results = await asyncio.gather(
            *(
                workflow.execute_child_workflow(Child.run, v, id=f"{workflow.info().workflow_id}-c{v}")
                for v in values
            )
        )
        failed = ""
        try:
            await workflow.execute_child_workflow(Child.run, -1)
        except Exception as err:
            failed = f"{type(err).__name__}<-{type(err.__cause__).__name__}"
        return {"results": list(results), "failed": failed}


@app.workflow
class Counter:
    @workflow.run
    async def run(self, count: int, limit: int) -> int:
        await workflow.sleep(1)
        if count + 1 < limit:
            workflow.continue_as_new(count + 1, limit)
        return count + 1


@app.workflow
class Cancellable:
    @workflow.run
    async def run(self) -> str:
        try:
            await workflow.sleep(timedelta(days=30))
            return "not cancelled"
        except asyncio.CancelledError:
            await workflow.execute_activity(step, "cleanup", start_to_close_timeout=10)
            raise


@app.workflow
class Deterministic:
    @workflow.run
    async def run(self) -> list[str]:
        value = workflow.side_effect(lambda: __import__("random").random())
        return [str(workflow.uuid4()), str(workflow.random().random()), str(value)]


@app.workflow
class Cheater:
    @workflow.run
    async def run(self, how: str) -> str:
        import datetime as dt
        import time

        if how == "sleep":
            await asyncio.sleep(1)
        elif how == "clock":
            return str(time.time())
        elif how == "datetime":
            return str(dt.datetime.now())
        elif how == "thread":
            import threading

            threading.Thread(target=print).start()
        elif how == "network":
            import socket

            socket.create_connection(("127.0.0.1", 9), timeout=1)
        elif how == "random":
            import random

            return str(random.random())
        return "?"


@app.workflow
class Typed:
    @workflow.run
    async def run(self, order: Order) -> Order:
        return await workflow.execute_activity(priced, order, start_to_close_timeout=10)  # type: ignore[no-any-return]


@app.workflow
class Crashy:
    @workflow.run
    async def run(self) -> str:
        await workflow.execute_activity(step, "before-crash", start_to_close_timeout=10)
        raise KeyError("bug in workflow code")


hang_release: dict[str, asyncio.Event] = {}


@app.activity
async def resumable(name: str) -> str:
    info = activity.info()
    calls[name] += 1
    start = info.heartbeat_details[0] if info.heartbeat_details else 0
    for chunk in range(start, 3):
        activity.heartbeat(chunk + 1)
        if info.attempt == 1 and chunk == 1:
            raise RuntimeError("lost the connection mid-way")
    return f"{name}: resumed from {start} on attempt {info.attempt}"


@app.activity
async def hangs_first(name: str) -> str:
    calls[name] += 1
    if activity.info().attempt == 1:
        await asyncio.Event().wait()  # an executor that never answers
    return f"{name}-attempt-{activity.info().attempt}"


@app.workflow
class Heartbeats:
    @workflow.run
    async def run(self, name: str) -> str:
        return await workflow.execute_activity(  # type: ignore[no-any-return]
            resumable, name, start_to_close_timeout=10, heartbeat_timeout=5, retry_policy=FAST
        )


@app.workflow
class StartToClose:
    @workflow.run
    async def run(self, name: str) -> str:
        return await workflow.execute_activity(  # type: ignore[no-any-return]
            hangs_first, name, start_to_close_timeout=0.2, retry_policy=FAST
        )


@app.workflow
class ScheduleToClose:
    @workflow.run
    async def run(self, name: str) -> str:
        try:
            await workflow.execute_activity(hangs_first, name, schedule_to_close_timeout=0.2)
        except ActivityError as err:
            return f"{type(err.cause).__name__}:{getattr(err.cause, 'timeout_type', '')}"
        return "finished"


@app.workflow
class BigResult:
    @workflow.run
    async def run(self, size: int) -> str:
        return "x" * size


@app.workflow
class Runaway:
    """Never ends: a loop a bug left without an exit."""

    @workflow.run
    async def run(self) -> None:
        while True:
            await workflow.execute_activity(step, "again", start_to_close_timeout=10)


def swapped(app: App, name: str, cls: type) -> App:
    """A copy of ``app`` in which workflow type ``name`` is implemented by ``cls`` (a code change)."""
    changed = App(app.name)
    changed.activities = dict(app.activities)
    changed.workflows = dict(app.workflows)
    definition = WorkflowDefinition.from_class(cls, name)
    changed.workflows[name] = definition
    setattr(cls, WORKFLOW_ATTR, definition)
    return changed


@app.workflow
class Timestamped:
    """Two activities at once, then one more; the code's clock after each result is part of the result
    (so a replay that saw other times than the live run would differ)."""

    @workflow.run
    async def run(self, prefix: str) -> list[str]:
        seen: list[str] = []
        first = workflow.execute_activity(step, f"{prefix}-a", start_to_close_timeout=10)
        second = workflow.execute_activity(step, f"{prefix}-b", start_to_close_timeout=10)
        seen.append(await first)
        seen.append(workflow.now().isoformat())
        seen.append(await second)
        seen.append(workflow.now().isoformat())
        seen.append(await workflow.execute_activity(step, f"{prefix}-c", start_to_close_timeout=10))
        seen.append(workflow.now().isoformat())
        return seen
