"""The client example of docs/batch.md: a tenant app terminates its namespace's waiting express orders
in a batch and follows it, through its own connection string (``PERDURE_CONNECTION``)."""

from __future__ import annotations

import asyncio
import os

from examples.orders import ExpressOrder
from perdure.tenants import Client


async def main() -> None:
    async with await Client.connect(os.environ["PERDURE_CONNECTION"]) as client:
        for n in range(3):
            await client.start_workflow(ExpressOrder.run, f"o-{n}", id=f"batch-example-{n}")
        batch = await client.start_batch(
            "terminate",
            "WorkflowType = 'ExpressOrder' AND WorkflowId STARTS_WITH 'batch-example-'",
            reason="orders of the bad deploy",
            rate=20,
        )
        print(batch.id, "matched", batch.matching)
        described = await batch.wait(timeout=120)
        print(described["state"], described["counts"])
        print(await client.list_batches())


if __name__ == "__main__":
    asyncio.run(main())
