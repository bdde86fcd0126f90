"""Activities as methods of a class whose instance holds what they share: registered in the class body,
named by the class's function in workflows, run bound to the instance the app was given."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from pydantic import BaseModel

from perdure.platform.core import history as h
from perdure.platform.core.definitions import UnboundActivityError, UnknownActivityTypeError
from perdure.tenants import ActivityError, App, RetryPolicy, workflow
from perdure.tenants.testing import LocalEnvironment

app = App("activity-methods")
ONCE = RetryPolicy(maximum_attempts=1)


class Order(BaseModel):
    order_id: str
    amount: int


class Gateway:
    """Stands for a client that is costly to open: the test counts how often one is."""

    opened = 0

    def __init__(self) -> None:
        Gateway.opened += 1
        self.charged: list[str] = []


class Payments:
    def __init__(self, currency: str) -> None:
        self.currency = currency
        self._gateway: Gateway | None = None

    @property
    def gateway(self) -> Gateway:
        if self._gateway is None:
            self._gateway = Gateway()
        return self._gateway

    @app.activity
    async def charge(self, order: Order) -> str:
        self.gateway.charged.append(order.order_id)
        return f"{order.order_id}: {order.amount} {self.currency}"

    @app.activity(name="refund-order")
    def refund(self, order_id: str) -> str:  # a sync method runs in a thread, still bound
        return f"{order_id} refunded in {self.currency}"

    async def not_an_activity(self, order_id: str) -> str:
        return order_id


@app.workflow
class Checkout:
    @workflow.run
    async def run(self, order_ids: list[str]) -> list[str]:
        receipts = []
        for order_id in order_ids:
            receipt: str = await workflow.execute_activity(
                Payments.charge, Order(order_id=order_id, amount=3), start_to_close_timeout=10
            )
            receipts.append(receipt)
        refunded: str = await workflow.execute_activity(
            Payments.refund, order_ids[0], start_to_close_timeout=10
        )
        return [*receipts, refunded]


@app.workflow
class ChargeOnce:
    @workflow.run
    async def run(self, order_id: str) -> str:
        try:
            result: str = await workflow.execute_activity(
                Payments.charge,
                Order(order_id=order_id, amount=1),
                start_to_close_timeout=10,
                retry_policy=ONCE,
            )
            return result
        except ActivityError as failure:
            return f"failed: {failure.cause}"


@app.workflow
class CallsAPlainMethod:
    @workflow.run
    async def run(self) -> str:
        result: str = await workflow.execute_activity(
            Payments.not_an_activity, "x", start_to_close_timeout=timedelta(seconds=10)
        )
        return result


@pytest.fixture
async def payments() -> AsyncIterator[Payments]:
    Gateway.opened = 0
    yield Payments("EUR")


async def test_a_workflow_names_the_method_and_the_worker_runs_it_on_the_bound_instance(
    payments: Payments,
) -> None:
    bound = App("shop").include(app).bind_activities(payments)
    async with LocalEnvironment(bound) as env:
        result = await env.execute_workflow(Checkout.run, ["o-1", "o-2"], id="checkout")
        events = h.history_from_json(env.history("checkout"))
    assert result == ["o-1: 3 EUR", "o-2: 3 EUR", "o-1 refunded in EUR"]
    # One instance for every call: what it opened on first use was opened once.
    assert Gateway.opened == 1 and payments.gateway.charged == ["o-1", "o-2"]
    # The activity's type is the method's name (or the name given), as for a function.
    scheduled = [e.activity_type for e in events if isinstance(e, h.ActivityTaskScheduled)]
    assert scheduled == ["charge", "charge", "refund-order"]
    # The input is decoded by the method's own parameter types, ``self`` left out.
    assert bound.get_activity("charge").param_types == [Order]


async def test_a_method_with_no_instance_bound_fails_clearly(payments: Payments) -> None:
    with pytest.raises(UnboundActivityError) as unbound:
        app.get_activity("charge")
    message = str(unbound.value)
    assert "'charge' is a method of Payments" in message and "app.bind_activities(Payments(...))" in message
    # Retried by the engine like an unknown type (a later deploy may bind it), and told to the workflow.
    assert isinstance(unbound.value, UnknownActivityTypeError)
    async with LocalEnvironment(App("unbound").include(app)) as env:
        result = await env.execute_workflow(ChargeOnce.run, "o-9", id="once")
    assert result.startswith("failed: ") and "is a method of Payments" in result
    assert Gateway.opened == 0  # the instance of the fixture was never reached


async def test_binding_leaves_the_registering_app_unbound(payments: Payments) -> None:
    bound = App("shop").include(app).bind_activities(payments)
    assert bound.get_activity("charge").instance is payments
    assert app.activities["charge"].needs_instance


def test_a_method_that_is_no_activity_is_refused_by_the_workflow() -> None:
    with pytest.raises(TypeError, match="is not an activity"):
        workflow.execute_activity(Payments.not_an_activity, "x", start_to_close_timeout=10)


def test_two_classes_defining_one_activity_name_are_refused() -> None:
    other = App("two-classes")

    class Cards:
        @other.activity
        async def settle(self, order_id: str) -> str:
            return order_id

    with pytest.raises(ValueError, match="'settle' is registered twice") as twice:

        class Transfers:
            @other.activity
            async def settle(self, order_id: str) -> str:
                return order_id

    assert "Cards.settle" in str(twice.value) and "Transfers.settle" in str(twice.value)
    assert other.activities["settle"].method_of is not None
    assert "Cards" in str(other.activities["settle"].method_of)


def test_apps_whose_classes_define_one_activity_name_are_not_included_together() -> None:
    first, second = App("first"), App("second")

    class Cards:
        @first.activity
        async def charge(self, order_id: str) -> str:
            return order_id

    class Transfers:
        @second.activity
        async def charge(self, order_id: str) -> str:
            return order_id

    with pytest.raises(ValueError, match="'charge' is registered twice"):
        App("both").include(first, second)


def test_an_instance_the_app_has_no_activity_of_is_refused() -> None:
    class Unrelated:
        pass

    with pytest.raises(ValueError, match=r"registers no activity method of .*Unrelated"):
        App("shop").include(app).bind_activities(Unrelated())


def test_an_activity_is_bound_to_one_instance(payments: Payments) -> None:
    bound = App("shop").include(app).bind_activities(payments)
    with pytest.raises(ValueError, match="'charge' is bound already, to another Payments"):
        bound.bind_activities(Payments("USD"))
    bound.bind_activities(payments)  # the same one again changes nothing
    assert bound.get_activity("charge").instance is payments


def test_a_bound_method_is_not_registered_as_a_function(payments: Payments) -> None:
    with pytest.raises(TypeError, match=r"bound method: .*app\.bind_activities\(instance\)"):
        App("shop").activity(payments.not_an_activity)


def test_a_subclass_instance_runs_the_methods_it_inherits() -> None:
    class EuroPayments(Payments):
        def __init__(self) -> None:
            super().__init__("EUR")

    instance = EuroPayments()
    bound = App("shop").include(app).bind_activities(instance)
    assert bound.get_activity("charge").instance is instance


def test_functions_defined_in_functions_are_not_methods() -> None:
    local = App("local")

    @local.activity
    async def ship(order_id: str) -> str:
        return order_id

    definition = local.get_activity("ship")
    assert definition.method_of is None and not definition.needs_instance and definition.param_types == [str]
