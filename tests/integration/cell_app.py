"""The app the cell tests deploy. Activities write one line per execution to a ledger file named in
their arguments, so tests count executions outside the platform."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from datetime import timedelta
from pathlib import Path

from perdure.tenants import App, ApplicationError, RetryPolicy, activity, workflow

app = App("cell-tests")
FAST_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=10)


def record(ledger: str, what: str) -> None:
    with open(ledger, "a") as out:
        out.write(f"{what}\n")
    # Each namespace's worker is a user of its own: whoever made the ledger lets the others write it.
    with contextlib.suppress(PermissionError):
        os.chmod(ledger, 0o666)


@app.activity
def step(ledger: str, name: str) -> str:
    record(ledger, name)
    return f"{name}-done"


@app.activity
def flaky(ledger: str, name: str, failures: int) -> str:
    record(ledger, name)
    if activity.info().attempt <= failures:
        raise RuntimeError(f"{name} failed on attempt {activity.info().attempt}")
    return f"{name}-ok-{activity.info().attempt}"


@app.workflow
class Pipeline:
    """Three activities (the second failing twice), a timer, and a signal to finish."""

    def __init__(self) -> None:
        self.approved = False

    @workflow.run
    async def run(self, ledger: str) -> list[str]:
        one = await workflow.execute_activity(step, ledger, "one", start_to_close_timeout=10)
        two = await workflow.execute_activity(
            flaky, ledger, "two", 2, start_to_close_timeout=10, retry_policy=FAST_RETRY
        )
        await workflow.sleep(timedelta(milliseconds=300))
        await workflow.wait_condition(lambda: self.approved)
        three = await workflow.execute_activity(step, ledger, "three", start_to_close_timeout=10)
        return [one, two, three]

    @workflow.signal
    def approve(self) -> None:
        self.approved = True


@app.workflow
class ThreeSteps:
    @workflow.run
    async def run(self, ledger: str, tag: str) -> list[str]:
        results = []
        for i in (1, 2, 3):
            results.append(
                await workflow.execute_activity(
                    step, ledger, f"{tag}-{i}", start_to_close_timeout=10, retry_policy=FAST_RETRY
                )
            )
        return results


@app.workflow
class Sleeper:
    @workflow.run
    async def run(self, seconds: float) -> str:
        await workflow.sleep(timedelta(seconds=seconds))
        return "woke"


@app.workflow
class Gated:
    """Steps 1 and 2, then waits for the signal ``go`` before step 3."""

    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self, ledger: str, tag: str) -> list[str]:
        first = await workflow.execute_activity(step, ledger, f"{tag}-1", start_to_close_timeout=10)
        second = await workflow.execute_activity(step, ledger, f"{tag}-2", start_to_close_timeout=10)
        await workflow.wait_condition(lambda: self.go)
        third = await workflow.execute_activity(step, ledger, f"{tag}-3", start_to_close_timeout=10)
        return [first, second, third]

    @workflow.signal
    def proceed(self) -> None:
        self.go = True

    @workflow.query
    def released(self, prefix: str) -> str:
        return f"{prefix}:{'yes' if self.go else 'no'}"

    @workflow.query
    def broken(self) -> int:
        raise ValueError("this handler is broken")


@app.workflow
class Noop:
    """Completes at once: one engine round per workflow, for admission's throughput tests."""

    @workflow.run
    async def run(self, tag: str) -> str:
        return tag


@app.workflow
class MixedWork:
    """Every kind of billable action: an activity retried twice, a timer, a side effect, a search
    attribute, a child workflow, and a signal it waits for."""

    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self, ledger: str, tag: str) -> str:
        workflow.upsert_search_attributes({"Tag": tag})
        lucky = workflow.side_effect(lambda: 7)
        await workflow.execute_activity(
            flaky, ledger, f"{tag}-flaky", 2, start_to_close_timeout=10, retry_policy=FAST_RETRY
        )
        await workflow.sleep(timedelta(milliseconds=200))
        child = await workflow.execute_child_workflow(Sleeper.run, 0.05, id=f"{tag}-child")
        await workflow.wait_condition(lambda: self.go)
        return f"{tag}:{lucky}:{child}"

    @workflow.signal
    def proceed(self) -> None:
        self.go = True

    @workflow.query
    def waiting(self) -> bool:
        return not self.go


@app.activity
async def timed_step(ledger: str, tag: str, seconds: float) -> None:
    """Records when it ran: ``tag began ended`` (wall clock), for tests of the executors' limits."""
    began = time.time()
    await asyncio.sleep(seconds)
    record(ledger, f"{tag} {began} {time.time()}")


@app.workflow
class FanOut:
    """``count`` activities of ``seconds`` each, all scheduled at once."""

    @workflow.run
    async def run(self, ledger: str, tag: str, count: int, seconds: float) -> int:
        await asyncio.gather(
            *(
                workflow.execute_activity(timed_step, ledger, tag, seconds, start_to_close_timeout=60)
                for _ in range(count)
            )
        )
        return count


@app.activity
def exits_once(ledger: str, tag: str) -> str:
    """Ends its worker process the first time it runs (as a crash would), and succeeds the next."""
    marker = Path(f"{ledger}.{tag}.exited")
    if not marker.exists():
        marker.write_text("exited")
        os._exit(1)
    record(ledger, f"{tag}-survived")
    return f"{tag}-survived"


@app.workflow
class WorkerCrash:
    @workflow.run
    async def run(self, ledger: str, tag: str) -> list[str]:
        first = await workflow.execute_activity(step, ledger, f"{tag}-1", start_to_close_timeout=10)
        crashed = await workflow.execute_activity(exits_once, ledger, tag, start_to_close_timeout=3)
        last = await workflow.execute_activity(step, ledger, f"{tag}-2", start_to_close_timeout=10)
        return [first, crashed, last]


@app.activity
def spin(ledger: str, stop_file: str, longest: float) -> int:
    """Keeps a CPU busy (a noisy neighbour) until ``stop_file`` exists, or ``longest`` seconds at most: the
    noise lasts as long as the measure beside it, however slow the machine."""
    record(ledger, "spinning")
    began, turns = time.monotonic(), 0
    while time.monotonic() - began < longest:
        turns += 1
        if turns % 200_000 == 0 and os.path.exists(stop_file):
            break
    return turns


@app.workflow
class Spinners:
    @workflow.run
    async def run(self, count: int, ledger: str, stop_file: str, longest: float) -> int:
        spins = [
            workflow.execute_activity(
                spin, ledger, stop_file, longest, start_to_close_timeout=timedelta(minutes=10)
            )
            for _ in range(count)
        ]
        return len(await asyncio.gather(*spins))


@app.activity
def hogs_memory_once(ledger: str, tag: str) -> str:
    """Takes far more memory than its worker may the first time it runs; succeeds the next."""
    marker = Path(f"{ledger}.{tag}.hogged")
    if not marker.exists():
        marker.write_text("hogged")
        hoard = bytearray(2 * 1024 * 1024 * 1024)  # past the sandbox's limit
        hoard[-1] = 1
    record(ledger, f"{tag}-survived")
    return f"{tag}-survived"


@app.workflow
class MemoryHog:
    @workflow.run
    async def run(self, ledger: str, tag: str) -> list[str]:
        first = await workflow.execute_activity(step, ledger, f"{tag}-1", start_to_close_timeout=10)
        hogged = await workflow.execute_activity(
            hogs_memory_once, ledger, tag, start_to_close_timeout=5, retry_policy=FAST_RETRY
        )
        last = await workflow.execute_activity(step, ledger, f"{tag}-2", start_to_close_timeout=10)
        return [first, hogged, last]


@app.workflow
class SlowDecider:
    """Spends seconds of CPU in workflow code between two steps (a long workflow task)."""

    @workflow.run
    async def run(self, ledger: str, tag: str, seconds: float) -> list[str]:
        first = await workflow.execute_activity(step, ledger, f"{tag}-1", start_to_close_timeout=10)
        spent, turns = time.thread_time(), 0
        while time.thread_time() - spent < seconds:
            turns += 1
        last = await workflow.execute_activity(step, ledger, f"{tag}-2", start_to_close_timeout=10)
        return [first, last]


@app.workflow
class Runaway:
    """A loop a bug left without an exit."""

    @workflow.run
    async def run(self, ledger: str) -> None:
        while True:
            await workflow.execute_activity(step, ledger, "again", start_to_close_timeout=10)


@app.activity
def hangs_once(ledger: str, tag: str) -> str:
    """Never returns the first time it runs (a call that hangs, in a thread nothing can stop); succeeds
    the next."""
    marker = Path(f"{ledger}.{tag}.hung")
    if not marker.exists():
        marker.write_text("hung")
        record(ledger, f"{tag}-hung")
        while True:
            time.sleep(1)
    record(ledger, f"{tag}-done")
    return f"{tag}-done"


@app.workflow
class HangsOnce:
    @workflow.run
    async def run(self, ledger: str, tag: str) -> str:
        # A timeout far longer than the test: only a hand-back retries the hung attempt in time.
        return await workflow.execute_activity(
            hangs_once, ledger, tag, start_to_close_timeout=timedelta(minutes=30), retry_policy=FAST_RETRY
        )


@app.activity
def leaves_a_process(ledger: str) -> int:
    """Starts a process in a session of its own that holds the worker's output open and outlives it
    (what a hostile or careless tenant's code can do); returns its pid."""
    import subprocess

    left = subprocess.Popen(["sleep", "600"], start_new_session=True)
    record(ledger, f"left-{left.pid}")
    return left.pid


@app.workflow
class LeavesAProcess:
    @workflow.run
    async def run(self, ledger: str) -> int:
        return await workflow.execute_activity(leaves_a_process, ledger, start_to_close_timeout=10)


@app.activity
def waits_for_gate(ledger: str, tag: str) -> str:
    """Runs until the test opens its gate (a file named after the ledger), so that the test can take the
    broker away while the activity is in hand."""
    record(ledger, f"{tag}-began")
    gate = Path(f"{ledger}.{tag}.open")
    while not gate.exists():
        time.sleep(0.05)
    record(ledger, f"{tag}-done")
    return f"{tag}-done"


@app.workflow
class GatedActivity:
    @workflow.run
    async def run(self, ledger: str, tag: str) -> str:
        # A timeout far longer than the test: only the outcome's own report closes the run in time.
        return await workflow.execute_activity(
            waits_for_gate, ledger, tag, start_to_close_timeout=timedelta(minutes=30)
        )


@app.workflow
class Account:
    """A balance that updates change. ``deposit`` records each execution of its handler in the ledger (an
    activity), and a deposit of ``hold=True`` waits for the ``release`` signal first (an update in
    flight); ``close`` ends the run with the balance."""

    def __init__(self) -> None:
        self.balance = 0
        self.released = False
        self.closed = False

    @workflow.run
    async def run(self, ledger: str) -> int:
        self.ledger = ledger
        await workflow.wait_condition(lambda: self.closed)
        return self.balance

    @workflow.update
    async def deposit(self, amount: int, tag: str, hold: bool = False) -> int:
        if hold:
            await workflow.wait_condition(lambda: self.released)
        await workflow.execute_activity(step, self.ledger, f"deposit-{tag}", start_to_close_timeout=10)
        self.balance += amount
        return self.balance

    @deposit.validator
    def _positive(self, amount: int, tag: str, hold: bool = False) -> None:
        if amount <= 0:
            raise ApplicationError(f"a deposit must be positive, not {amount}", type="InvalidAmount")

    @workflow.update
    def close(self) -> int:
        self.closed = True
        return self.balance

    @workflow.signal
    def release(self) -> None:
        self.released = True
