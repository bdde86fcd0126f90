"""Property tests: retry backoff, and replay of randomly generated workflow programs."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perdure.tenants import App, NonDeterminismError, RetryPolicy, workflow
from perdure.tenants.testing import LocalEnvironment, replay

policies = st.builds(
    RetryPolicy,
    initial_interval=st.timedeltas(min_value=timedelta(milliseconds=1), max_value=timedelta(minutes=10)),
    backoff_coefficient=st.floats(min_value=1.0, max_value=10.0),
    maximum_attempts=st.integers(min_value=0, max_value=50),
).flatmap(
    lambda p: st.builds(
        lambda cap: p.model_copy(update={"maximum_interval": cap}),
        st.one_of(st.none(), st.timedeltas(min_value=p.initial_interval, max_value=timedelta(days=2))),
    )
)


@given(policies, st.integers(min_value=1, max_value=10_000))
def test_backoff_is_monotone_capped_and_starts_at_the_initial_interval(
    policy: RetryPolicy, attempt: int
) -> None:
    cap = policy.effective_maximum_interval
    assert policy.backoff(1) == min(policy.initial_interval, cap)
    assert policy.backoff(attempt) <= policy.backoff(attempt + 1) <= cap
    assert policy.backoff(attempt) >= policy.initial_interval


@given(policies, st.integers(min_value=1, max_value=200), st.text(max_size=8), st.booleans())
def test_attempts_are_bounded(
    policy: RetryPolicy, attempt: int, error_type: str, non_retryable: bool
) -> None:
    retry = policy.should_retry(attempt, error_type, non_retryable)
    if non_retryable or error_type in policy.non_retryable_error_types:
        assert not retry
    elif policy.maximum_attempts:
        assert retry == (attempt < policy.maximum_attempts)
    else:
        assert retry


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="initial_interval"):
        RetryPolicy(initial_interval=timedelta(0))
    with pytest.raises(ValueError, match="maximum_interval"):
        RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(seconds=1))


# -- random programs --------------------------------------------------------------------------------
program_app = App("programs")
OVERRIDE: list[list[Any]] | None = None


@program_app.activity
async def work(name: str) -> str:
    return name.upper()


@program_app.activity
def other_work(name: str) -> str:
    return name[::-1]


@program_app.workflow
class Program:
    def __init__(self) -> None:
        self.signals = 0

    @workflow.run
    async def run(self, ops: list[list[Any]]) -> list[Any]:
        ops = OVERRIDE if OVERRIDE is not None else ops
        out: list[Any] = []
        for op in ops:
            kind = op[0]
            if kind == "act":
                out.append(await workflow.execute_activity(work, op[1], start_to_close_timeout=5))
            elif kind == "other":
                out.append(await workflow.execute_activity(other_work, op[1], start_to_close_timeout=5))
            elif kind == "sleep":
                await workflow.sleep(timedelta(seconds=op[1]))
            elif kind == "side":
                out.append(workflow.side_effect(lambda value=op[1]: value))
            elif kind == "par":
                out.extend(
                    await asyncio.gather(
                        *(
                            workflow.execute_activity(work, f"p{i}", start_to_close_timeout=5)
                            for i in range(op[1])
                        )
                    )
                )
            elif kind == "uuid":
                out.append(str(workflow.uuid4()))
        return out


op_strategy = st.one_of(
    st.tuples(st.just("act"), st.text("abc", min_size=1, max_size=3)),
    st.tuples(st.just("other"), st.text("xyz", min_size=1, max_size=3)),
    st.tuples(st.just("sleep"), st.integers(min_value=1, max_value=3600)),
    st.tuples(st.just("side"), st.integers()),
    st.tuples(st.just("par"), st.integers(min_value=1, max_value=3)),
    st.tuples(st.just("uuid"), st.just(0)),
).map(list)

KIND_CHANGES = {
    "act": ["other", "x"],
    "other": ["act", "x"],
    "sleep": ["act", "x"],
    "side": ["sleep", 1],
    "par": ["sleep", 1],
    "uuid": ["act", "u"],
}


async def _record(ops: list[list[Any]]) -> tuple[list[Any], list[dict[str, Any]]]:
    async with LocalEnvironment(program_app) as env:
        result = await env.execute_workflow(Program.run, ops, id="program")
        return result, env.history("program")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op_strategy, min_size=1, max_size=8), st.data())
def test_random_programs_replay_and_changes_are_detected(ops: list[list[Any]], data: st.DataObject) -> None:
    global OVERRIDE
    OVERRIDE = None
    result, history = asyncio.run(_record(ops))
    assert len(result) == sum(
        1 if op[0] in ("act", "other", "side", "uuid") else op[1] if op[0] == "par" else 0 for op in ops
    )
    replay(program_app, history)  # the same code replays its own history

    # A change of the kind of one command-issuing step is caught, whichever step it is.
    index = data.draw(st.integers(min_value=0, max_value=len(ops) - 1))
    if ops[index][0] == "uuid":
        return  # uuid4 issues no command: changing it changes values, not commands
    changed = [list(op) for op in ops]
    changed[index] = KIND_CHANGES[ops[index][0]]
    OVERRIDE = changed
    try:
        with pytest.raises(NonDeterminismError):
            replay(program_app, history)
    finally:
        OVERRIDE = None
