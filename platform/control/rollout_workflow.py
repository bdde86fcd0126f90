"""``Rollout``: a platform version rolled out ring by ring. For each ring it sets the cells' desired
version, waits until every cell's processes report running it and healthy, bakes for the set time (a
durable timer), gates on health (error rate, lag), then moves on. A ring that does not converge in
time or fails its gate is rolled back and the rollout halts there; ``pause``, ``resume`` and ``abort``
are signals. Its phase, ring and detail are its search attributes (and the ``status`` query)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field

from perdure.platform.control.control_app import control_app
from perdure.platform.control.rollout_activities import RingHealth, RolloutActivities
from perdure.tenants import RetryPolicy, workflow

POLL = timedelta(seconds=2)
STEP_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10))


class Ring(BaseModel):
    name: str
    cells: list[str] = Field(min_length=1)


class RolloutSpec(BaseModel):
    version: str
    rings: list[Ring] = Field(min_length=1)
    bake_seconds: float = Field(default=30.0, ge=0)
    ready_timeout_seconds: float = Field(default=300.0, gt=0)
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    max_lag: int = Field(default=10_000, ge=0)


def rollout_id(name: str) -> str:
    return f"rollout/{name}"


async def _act(activity: Any, *args: Any) -> Any:
    return await workflow.execute_activity(
        activity, *args, start_to_close_timeout=timedelta(seconds=30), retry_policy=STEP_RETRY
    )


@control_app.workflow
class Rollout:
    def __init__(self) -> None:
        self.phase = "starting"
        self.ring = ""
        self.detail = ""
        self.paused = False
        self.aborted = False
        self.done: list[str] = []

    @workflow.run
    async def run(self, spec: RolloutSpec) -> dict[str, Any]:
        for ring in spec.rings:
            self.ring = ring.name
            self._enter("deploying", f"{', '.join(ring.cells)} to {spec.version}")
            previous: dict[str, str | None] = await _act(
                RolloutActivities.set_desired_versions, ring.cells, spec.version
            )
            verdict = await self._converge(spec, ring)
            if verdict is None:
                await self._hold()
                self._enter("baking", f"{spec.bake_seconds:g} s")
                try:  # a durable timer, cut short by an abort
                    await workflow.wait_condition(
                        lambda: self.aborted, timeout=timedelta(seconds=spec.bake_seconds)
                    )
                except TimeoutError:
                    pass
                await self._hold()
                health: RingHealth = await _act(
                    RolloutActivities.ring_health, ring.cells, spec.version, spec.max_error_rate, spec.max_lag
                )
                verdict = None if health.healthy and health.converged else f"gate failed: {health.detail}"
            if self.aborted:
                verdict = "aborted"
            if verdict is not None:
                await _act(RolloutActivities.restore_desired_versions, previous)
                self._enter(
                    "aborted" if self.aborted else "halted", f"ring {ring.name} rolled back: {verdict}"
                )
                return self._summary(spec)
            self.done.append(ring.name)
        self._enter("completed", f"{spec.version} on every ring")
        return self._summary(spec)

    async def _converge(self, spec: RolloutSpec, ring: Ring) -> str | None:
        """None once the ring runs the version and is healthy; else why not, at the deadline."""
        deadline = workflow.now() + timedelta(seconds=spec.ready_timeout_seconds)
        self._enter("waiting", "for the ring's processes to run the version")
        while not self.aborted:
            health: RingHealth = await _act(
                RolloutActivities.ring_health, ring.cells, spec.version, spec.max_error_rate, spec.max_lag
            )
            if health.converged and health.healthy:
                return None
            if workflow.now() >= deadline:
                return f"not ready after {spec.ready_timeout_seconds:g} s: {health.detail}"
            self.detail = health.detail
            await workflow.sleep(POLL)
        return "aborted"

    async def _hold(self) -> None:
        if self.paused:
            phase = self.phase
            self._enter("paused", f"in {phase}")
            await workflow.wait_condition(lambda: not self.paused or self.aborted)
            self._enter(phase, "resumed")

    def _enter(self, phase: str, detail: str) -> None:
        self.phase, self.detail = phase, detail
        workflow.upsert_search_attributes({"Phase": phase, "Ring": self.ring, "Detail": detail})

    def _summary(self, spec: RolloutSpec) -> dict[str, Any]:
        return {
            "version": spec.version,
            "phase": self.phase,
            "ring": self.ring,
            "rings_done": self.done,
            "detail": self.detail,
        }

    @workflow.signal
    def pause(self) -> None:
        self.paused = True

    @workflow.signal
    def resume(self) -> None:
        self.paused = False

    @workflow.signal
    def abort(self) -> None:
        self.aborted = True

    @workflow.query
    def status(self) -> dict[str, Any]:
        return {"phase": self.phase, "ring": self.ring, "detail": self.detail, "rings_done": self.done}
