"""The scheduled billing export: a workflow of the system namespace that exports each day once it has
ended (and each month once it has ended), then sleeps until the next day ends. It runs on the platform
itself, so it is durable across restarts: a crash during an export retries the export (which writes
the same bytes again), and a sleep survives anything.

``perdure controlplane bootstrap`` starts it (workflow id ``billing-export-schedule``), from a given day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from perdure.billing.billing_export import export_period
from perdure.infra.settings import get_settings
from perdure.tenants import App, RetryPolicy, activity, workflow

app = App("billing")
SCHEDULE_ID = "billing-export-schedule"
# Usage of a period can still arrive just after it ends (a batch in flight, the last storage sample).
GRACE = timedelta(minutes=10)
EXPORTS_PER_RUN = 62  # then continue-as-new, so the history stays short however long it runs
EXPORT_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=10))


@app.activity
async def export_closed_period(period: str) -> list[str]:
    """Export ``period`` as CSV and as JSON Lines (announced each); returns the files written."""
    settings = get_settings()
    written: list[str] = []
    for export_format in ("csv", "jsonl"):
        # A heartbeat per file: a crash mid-export is noticed within the heartbeat timeout.
        result = await export_period(
            settings, period, export_format=export_format, on_file=lambda file: activity.heartbeat(file.name)
        )
        written.extend(file.name for file in result.announcement.files)
    return written


def _end_of(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)


@app.workflow
class BillingExportSchedule:
    def __init__(self) -> None:
        self.next_day = ""

    @workflow.run
    async def run(self, first_day: str) -> None:
        day = date.fromisoformat(first_day)
        exports = 0
        while True:
            self.next_day = day.isoformat()
            while _end_of(day) + GRACE <= workflow.now():
                await self._export(day.isoformat())
                tomorrow = day + timedelta(days=1)
                if tomorrow.day == 1:  # the month ended with this day
                    await self._export(f"{day:%Y-%m}")
                day, exports = tomorrow, exports + 1
                self.next_day = day.isoformat()
                if exports >= EXPORTS_PER_RUN:
                    workflow.continue_as_new(day.isoformat())
            await workflow.sleep(_end_of(day) + GRACE - workflow.now())

    async def _export(self, period: str) -> None:
        await workflow.execute_activity(
            export_closed_period,
            period,
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=timedelta(seconds=20),
            retry_policy=EXPORT_RETRY,
        )

    @workflow.query
    def pending_from(self) -> str:
        """The first day not exported yet."""
        return self.next_day
