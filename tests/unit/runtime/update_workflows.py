"""Workflows with update handlers, for the tests of updates (tests/unit/runtime/test_updates.py)."""

from __future__ import annotations

import collections
from datetime import timedelta

from perdure.tenants import App, ApplicationError, workflow

app = App("update-tests")
charged: collections.Counter[str] = collections.Counter()


@app.activity
async def charge(cart: str, items: int) -> str:
    charged[cart] += 1
    return f"receipt-{cart}-{items}"


@app.workflow
class Cart:
    """Items come by update (a validator refuses empty names and anything after checkout); checking out
    is an update that waits for an approval signal, then charges through an activity."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.approved = False
        self.checked_out = False

    @workflow.run
    async def run(self, cart: str) -> list[str]:
        self.cart = cart
        await workflow.wait_condition(lambda: self.checked_out)
        return self.items

    @workflow.update
    def add_item(self, item: str) -> int:
        self.items.append(item)
        return len(self.items)

    @add_item.validator
    def _check_item(self, item: str) -> None:
        if not item:
            raise ApplicationError("an item needs a name", type="EmptyItem")
        if self.checked_out:
            raise ValueError("the cart is checked out")

    @workflow.update
    async def checkout(self, approver: str) -> str:
        await workflow.wait_condition(lambda: self.approved)
        receipt: str = await workflow.execute_activity(
            charge, self.cart, len(self.items), start_to_close_timeout=timedelta(seconds=10)
        )
        self.checked_out = True
        return f"{receipt} approved by {approver}"

    @workflow.update(name="fail")
    async def failing(self, why: str) -> None:
        raise ApplicationError(why, type="CartError")

    @workflow.signal
    def approve(self) -> None:
        self.approved = True

    @workflow.query
    def count(self) -> int:
        return len(self.items)


@app.workflow
class Holder:
    """Returns as soon as an update's handler started; the handler sleeps an hour."""

    def __init__(self) -> None:
        self.started = False

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.started)
        return "done"

    @workflow.update
    async def slow(self) -> str:
        self.started = True
        await workflow.sleep(timedelta(hours=1))
        return "slept"

    @workflow.update(unfinished_policy="abandon")
    async def slow_abandoned(self) -> str:
        self.started = True
        await workflow.sleep(timedelta(hours=1))
        return "slept"


@app.workflow
class Chain:
    """Continues as new once an update let it go on: twice, then returns its round."""

    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self, round: int) -> int:
        self.round = round
        await workflow.wait_condition(lambda: self.go)
        if round < 2:
            workflow.continue_as_new(round + 1)
        return round

    @workflow.update
    async def go_on(self) -> int:
        self.go = True
        await workflow.sleep(timedelta(minutes=1))
        return self.round


@app.workflow
class Fragile:
    """An update whose handler has a bug, and one whose validator tries to record something."""

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.update
    def crash(self) -> None:
        raise RuntimeError("a bug in the handler")

    @workflow.update
    def noted(self) -> str:
        return "noted"

    @noted.validator
    def _records(self) -> None:
        workflow.upsert_search_attributes({"Validated": True})


@app.workflow
class Drainer:
    """Its handlers may be abandoned, but it waits for them itself before returning."""

    def __init__(self) -> None:
        self.started = False

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.started)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return "drained"

    @workflow.update(unfinished_policy="abandon")
    async def work(self) -> str:
        self.started = True
        await workflow.sleep(timedelta(minutes=1))
        return "worked"
