"""The client example of docs/visibility.md: start orders of a few customers, then find them by query.

On the platform (``PERDURE_CONNECTION`` set to the namespace's connection string, CustomerId and Amount
registered) it asks the namespace; without it, a ``LocalEnvironment`` in this process."""

from __future__ import annotations

import asyncio
import os

from examples.customer_orders import CustomerOrder, app
from perdure.tenants import Client, MalformedRequestError, WorkflowClient
from perdure.tenants.testing import LocalEnvironment


async def demo(client: WorkflowClient) -> None:
    for i in range(6):
        await client.start_workflow(CustomerOrder.run, f"c-{i % 2}", 60 * i, id=f"order-{i}")
    # A run is found by its attributes once its first workflow task is written (a moment after the start).
    for _ in range(100):
        if await client.count_workflows("WorkflowType = 'CustomerOrder' AND Amount >= 0") == 6:
            break
        await asyncio.sleep(0.1)
    query = "CustomerId = 'c-0' AND ExecutionStatus = 'Running' ORDER BY StartTime DESC"
    for run in await client.list_workflows(query=query):
        print(run["workflow_id"], run["status"], run["search_attributes"])
    print(await client.count_workflows("CustomerId IN ('c-0', 'c-1') AND Amount > 100"), "large orders")
    try:
        await client.count_workflows("CustomerId = 'c-0' AND AND")
    except MalformedRequestError as exc:
        print(exc)


async def main() -> None:
    connection = os.environ.get("PERDURE_CONNECTION")
    if connection:
        async with await Client.connect(connection) as client:
            await demo(client)
        return
    async with LocalEnvironment(app, search_attributes={"CustomerId": "Keyword", "Amount": "Int"}) as env:
        await demo(env)


if __name__ == "__main__":
    asyncio.run(main())
