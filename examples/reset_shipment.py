"""The example of docs/reset.md: a shipment charged once, then shipped to the address a signal gives.
A bug in the label activity ships with bad labels; after the fix, a reset to the point before the
address came runs the shipping again, keeps the charge from the history (no second charge) and gives
the new run the address signal again. Runs in a ``LocalEnvironment``: ``python -m examples.reset_shipment``.
"""

from __future__ import annotations

import asyncio
import collections
from datetime import timedelta

from perdure.platform.core import history as h
from perdure.tenants import App, workflow
from perdure.tenants.testing import LocalEnvironment

app = App("reset-example")
charges: collections.Counter[str] = collections.Counter()
LABEL_VERSION = {"current": "v1-broken"}  # what the deployed label printer does (a fix changes it)


@app.activity
async def charge(order_id: str) -> str:
    charges[order_id] += 1
    return f"charged-{order_id}"


@app.activity
async def ship(order_id: str, address: str) -> str:
    return f"shipped-{order_id}-to-{address}-label-{LABEL_VERSION['current']}"


@app.workflow
class Shipment:
    def __init__(self) -> None:
        self.address: str | None = None

    @workflow.run
    async def run(self, order_id: str) -> list[str]:
        timeout = timedelta(seconds=30)
        charged = await workflow.execute_activity(charge, order_id, start_to_close_timeout=timeout)
        await workflow.wait_condition(lambda: self.address is not None)
        assert self.address is not None
        shipped = await workflow.execute_activity(
            ship, order_id, self.address, start_to_close_timeout=timeout
        )
        return [charged, shipped]

    @workflow.signal
    def set_address(self, address: str) -> None:
        self.address = address


def point_before_first_signal(events: list[h.HistoryEvent]) -> int:
    """The last reset point before the first signal: there, the code waits for the address."""
    signalled = next(e.event_id for e in events if isinstance(e, h.WorkflowExecutionSignaled))
    return max(
        e.event_id for e in events if isinstance(e, h.ActivityTaskCompleted) and e.event_id < signalled
    )


async def main() -> list[list[str]]:
    results = []
    async with LocalEnvironment(app) as env:
        handle = await env.start_workflow(Shipment.run, "o-1", id="shipment-o-1")
        await env.idle()  # charged; waiting for the address
        await handle.signal(Shipment.set_address, "1 Main St")
        results.append(await handle.result())  # shipped with a broken label

        LABEL_VERSION["current"] = "v2"  # the fix is deployed
        point = point_before_first_signal(h.history_from_json(env.history("shipment-o-1")))
        new_run = await handle.reset(point, reason="labels printed by v1 were broken")
        results.append(await handle.result())  # shipped again, charged once, the address signal re-applied
        print(f"reset to event {point}: run {new_run}")
    return results


if __name__ == "__main__":
    for result in asyncio.run(main()):
        print(result)
