"""What a rollout does to cells: set their desired version (the cells' processes pick it up and restart
their engines gracefully), and read what their processes report (version, health, error rate, lag)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import BaseModel

from perdure.platform.control.control_app import control_app
from perdure.platform.control.control_resources import ControlResources

# A process that has not reported for this long is taken for dead.
REPORT_FRESHNESS = timedelta(seconds=10)


class RingHealth(BaseModel):
    converged: bool  # every cell has live processes, all running the version
    healthy: bool  # and all report healthy, under the error rate and lag limits
    detail: str


class RolloutActivities:
    """What a rollout does, on the process's control-plane connections."""

    def __init__(self, resources: ControlResources) -> None:
        self.resources = resources

    @control_app.activity
    async def set_desired_versions(self, cells: list[str], version: str | None) -> dict[str, str | None]:
        """Set ``version`` as the cells' desired version; returns what it was, to roll back to."""
        control = self.resources.control
        previous: dict[str, str | None] = {}
        for cell in cells:
            previous[cell] = (await control.get_cell(cell)).desired_version
            await control.update_cell(cell, desired_version=version)
        return previous

    @control_app.activity
    async def restore_desired_versions(self, previous: dict[str, str | None]) -> None:
        for cell, version in previous.items():
            await self.resources.control.update_cell(cell, desired_version=version)

    @control_app.activity
    async def ring_health(
        self, cells: list[str], version: str, max_error_rate: float, max_lag: int
    ) -> RingHealth:
        fresh = datetime.now(UTC) - REPORT_FRESHNESS
        converged, healthy, notes = True, True, []
        for cell in cells:
            reports = await self.resources.control.processes_of(cell, fresh)
            if not reports:
                converged = healthy = False
                notes.append(f"{cell}: no live process")
                continue
            behind = [r.process for r in reports if r.version != version]
            if behind:
                converged = False
                notes.append(f"{cell}: {len(behind)} of {len(reports)} processes not on {version}")
            for report in reports:
                if not report.healthy or report.error_rate > max_error_rate or report.lag > max_lag:
                    healthy = False
                    notes.append(
                        f"{report.process}: healthy={report.healthy} error rate {report.error_rate:.2f} "
                        f"lag {report.lag}"
                    )
        return RingHealth(converged=converged, healthy=healthy, detail="; ".join(notes) or "all well")
