"""``Client`` and ``LocalEnvironment`` are both ``WorkflowClient``s, and handles are typed by their
workflow's result (and updates by their handler's). scripts/lint type-checks this file: the
``assert_type`` lines and the conformance of both clients are checked by mypy, the test below runs the
same code on a ``LocalEnvironment``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, assert_type

from perdure.tenants import App, WorkflowClient, WorkflowHandle, workflow
from perdure.tenants.client import Client
from perdure.tenants.testing import LocalEnvironment
from perdure.tenants.workflow_client import WorkflowUpdateHandle

app = App("typing-example")


@dataclass(frozen=True)
class Receipt:
    order: str
    total: int


@app.workflow
class Checkout:
    @workflow.run
    async def run(self, order: str, items: int) -> Receipt:
        return Receipt(order, items * 10)


async def checkout(client: WorkflowClient, order: str) -> Receipt:
    """Tenant code written once, for whichever client it is given."""
    handle = await client.start_workflow(Checkout.run, order, 2, id=f"checkout-{order}")
    assert_type(handle, WorkflowHandle[Receipt])
    receipt = await handle.result()
    assert_type(receipt, Receipt)
    again = await client.execute_workflow(Checkout.run, order, 3, id=f"checkout-{order}-again")
    assert_type(again, Receipt)
    by_name = await client.execute_workflow("Checkout", order, 4, id=f"checkout-{order}-by-name")
    assert_type(by_name, Any)  # a type name says nothing of the result's type
    later = client.get_workflow_handle_for(Checkout.run, f"checkout-{order}")
    assert_type(await later.result(), Receipt)
    return receipt


@app.workflow
class Till:
    """Open until an update closes it; its updates are one async, one plain."""

    def __init__(self) -> None:
        self.total = 0
        self.closed = False

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self.closed)
        return self.total

    @workflow.update
    def add(self, amount: int) -> int:
        self.total += amount
        return self.total

    @add.validator
    def _positive(self, amount: int) -> None:
        if amount <= 0:
            raise ValueError("a positive amount")

    @workflow.update
    async def close(self, order: str) -> Receipt:
        self.closed = True
        return Receipt(order, self.add(0))


async def till(client: WorkflowClient) -> Receipt:
    """Updates typed by what their handlers return."""
    handle = await client.start_workflow(Till.run, id="till")
    added = await handle.execute_update(Till.add, 5)
    assert_type(added, int)
    by_name = await handle.execute_update("add", 5)
    assert_type(by_name, Any)
    closing = await handle.start_update(Till.close, "o-2", id="close")
    assert_type(closing, WorkflowUpdateHandle[Receipt])
    receipt = await closing.result()
    assert_type(receipt, Receipt)
    assert_type(await handle.result(), int)
    return receipt


def either_client(client: Client, env: LocalEnvironment) -> list[WorkflowClient]:
    """Switching is one line: both are accepted where a ``WorkflowClient`` is expected."""
    return [client, env]


async def test_tenant_code_typed_against_workflow_client_runs_on_a_local_environment() -> None:
    async with LocalEnvironment(app) as env:
        assert await checkout(env, "o-1") == Receipt("o-1", 20)
        assert await till(env) == Receipt("o-2", 10)
