"""The chaos run, short: a cell process SIGKILLed and replaced, Kafka, FerretDB, PostgreSQL and
RabbitMQ each SIGKILLed and restarted, hostile messages to every consumer, under a steady load of mixed
workflows. ``python -m bench.chaos`` is the long one (its figures go in notes)."""

from __future__ import annotations

import pytest

from bench.chaos import Plan, run_chaos

pytestmark = pytest.mark.exclusive  # it kills every service


@pytest.mark.timeout(900)
async def test_a_short_chaos_run_loses_and_repeats_nothing() -> None:
    report = await run_chaos(
        Plan(cell_kills=1, service_restarts=1, fuzz=300, processes=2, rate=2.0, session_timeout_ms=6000)
    )
    report.print()
    assert report.started > 0 and report.right == report.started
    assert report.faults == 5
    assert report.failures() == []  # activities too: at least once, at most MAX_ACTIVITY_RUNS times
