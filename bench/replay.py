"""Replay benchmark: full replay of a 10,000-event history, and the cost of one new step on a live
instance at 1,000 and at 10,000 events of history (it must not grow with the history).

Run: .venv/bin/python -m bench.replay
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta

from bench.machine import describe_machine
from perdure.platform.core import history as h
from perdure.platform.core import messages as m
from perdure.platform.core.state_machine import ExecutionStateMachine
from perdure.tenants import App, workflow

app = App("bench-replay")


@app.workflow
class Ticker:
    def __init__(self) -> None:
        self.ticks = 0

    @workflow.run
    async def run(self, ticks: int) -> int:
        for _ in range(ticks):
            await workflow.sleep(timedelta(seconds=1))
            self.ticks += 1
        return self.ticks


class ManualClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def run(target_events: int, window: int) -> None:
    clock = ManualClock()
    ids = iter(range(10**9))
    machine = ExecutionStateMachine(app, clock=clock, new_id=lambda: f"run-{next(ids)}")
    transition = machine.start(
        "bench",
        m.StartWorkflow(
            request_id="r",
            workflow_type="Ticker",
            workflow_id="w",
            input=[machine.converter.to_payload(target_events)],
        ),
    )
    state, instance = transition.state, transition.instance
    history: list[h.HistoryEvent] = list(transition.events)
    step_cost: dict[int, list[float]] = {1_000: [], 10_000: []}
    while len(history) < target_events + window:
        key, armed = next(iter(state.armed_timers.items()))
        clock.now = armed.fire_at
        started = time.perf_counter()
        transition = machine.handle(state, armed.notice, instance=instance)
        elapsed = time.perf_counter() - started
        for mark, samples in step_cost.items():
            if mark - window <= len(history) < mark + window:
                samples.append(elapsed)
        assert transition.changed, key
        state, instance = transition.state, transition.instance
        history.extend(transition.events)

    full = history[:target_events]
    rounds = []
    for _ in range(3):
        started = time.perf_counter()
        machine.replay(full)
        rounds.append(time.perf_counter() - started)
    best = min(rounds)
    print(f"machine: {describe_machine()}")
    print(
        f"full replay of {len(full):,} events: {best * 1000:.1f} ms -> {len(full) / best:,.0f} events/s "
        f"(best of 3; runs: {', '.join(f'{r * 1000:.0f}' for r in rounds)} ms)"
    )
    for mark, samples in step_cost.items():
        samples_ms = sorted(s * 1000 for s in samples)
        print(
            f"one new step on a live instance at ~{mark:,} events: "
            f"median {statistics.median(samples_ms):.3f} ms, "
            f"p90 {samples_ms[int(len(samples_ms) * 0.9)]:.3f} ms over {len(samples_ms)} steps "
            "(state machine + instance: timer fired -> next timer started)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=200, help="steps sampled around each history length")
    args = parser.parse_args()
    run(args.events, args.window)


if __name__ == "__main__":
    main()
