"""The steps of a bounded stop: a step that hangs is cut at its share and the others still run; past the
whole bound nothing more runs; a failing step does not stop the rest."""

from __future__ import annotations

import asyncio
import time

import pytest

from perdure.infra.bounded_stop import BoundedStop, StopOverranError


async def test_a_hanging_step_is_cut_at_its_share_and_the_next_steps_still_run() -> None:
    ran: list[str] = []

    async def hangs() -> None:
        await asyncio.Event().wait()

    async def quick() -> None:
        ran.append("quick")

    bounded = BoundedStop("test", 1.0)
    began = time.monotonic()
    await bounded.step("hangs", hangs, share=0.2)
    await bounded.step("quick", quick, share=0.2)
    assert 0.15 < time.monotonic() - began < 0.6
    assert bounded.abandoned == ["hangs"] and ran == ["quick"]
    with pytest.raises(StopOverranError, match="hangs"):
        bounded.raise_if_overran()


async def test_past_the_bound_no_step_runs() -> None:
    ran: list[str] = []

    async def hangs() -> None:
        await asyncio.Event().wait()

    async def quick() -> None:
        ran.append("quick")

    bounded = BoundedStop("test", 0.2)
    await bounded.step("hangs", hangs)
    await bounded.step("quick", quick)
    assert bounded.abandoned == ["hangs", "quick"] and ran == []


async def test_a_failing_step_is_logged_and_the_stop_goes_on() -> None:
    ran: list[str] = []

    async def fails() -> None:
        raise RuntimeError("broken")

    async def quick() -> None:
        ran.append("quick")

    bounded = BoundedStop("test", 5.0)
    await bounded.step("fails", fails)
    await bounded.step("quick", quick)
    assert bounded.failed == ["fails"] and bounded.abandoned == [] and ran == ["quick"]
    bounded.raise_if_overran()  # a failure is not an overrun
