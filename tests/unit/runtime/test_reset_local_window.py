"""The local environment resets by the engine's rule of open runs (docs/reset.md): a run that continued
as new counts as open until its next run starts, so a reset in between is refused, naming that run."""

from __future__ import annotations

import asyncio

import pytest

from perdure.platform.core import outbox as o
from perdure.tenants import WorkflowResetError
from perdure.tenants.testing import LocalEnvironment

from . import workflows as w


async def test_a_reset_between_a_continue_as_new_and_its_next_runs_start_is_refused() -> None:
    async with LocalEnvironment(w.app) as env:
        held: list[o.StartRun] = []
        continued = asyncio.Event()

        def hold(entry: o.StartRun) -> None:  # the next run's start waits
            held.append(entry)
            continued.set()

        start_from_outbox = env._start_from_outbox
        env._start_from_outbox = hold  # type: ignore[method-assign]
        handle = await env.start_workflow(w.Counter.run, 0, 2, id="chain")
        await asyncio.wait_for(continued.wait(), 10)
        first = env._runs["chain"][0]
        assert first.state.status == "continued_as_new"
        next_run = first.state.new_run_id
        with pytest.raises(WorkflowResetError, match=rf"continued as new into run {next_run}"):
            await handle.reset("first-workflow-task", run_id=first.state.run_id)
        env._start_from_outbox = start_from_outbox  # type: ignore[method-assign]
        for entry in held:
            start_from_outbox(entry)
        assert await handle.result() == 2
        assert [r.state.run_id for r in env._runs["chain"]] == [first.state.run_id, next_run]
