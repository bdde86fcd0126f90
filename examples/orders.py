"""The example tenant app from the README: charge an order, wait an hour, wait for approval."""

from __future__ import annotations

from datetime import timedelta

from perdure.tenants import App, RetryPolicy, workflow

app = App("orders")


@app.activity
async def charge(order_id: str, amount: int) -> str:
    # activity.info().attempt and activity.heartbeat(details) are available here.
    return f"receipt-{order_id}-{amount}"


@app.workflow
class OrderWorkflow:
    def __init__(self) -> None:
        self.approved = False

    @workflow.run
    async def run(self, order_id: str) -> str:
        receipt: str = await workflow.execute_activity(
            charge,
            order_id,
            100,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=5),
        )
        await workflow.sleep(timedelta(hours=1))
        await workflow.wait_condition(lambda: self.approved, timeout=timedelta(days=1))
        return receipt

    @workflow.signal
    def approve(self) -> None:
        self.approved = True

    @workflow.query
    def status(self) -> str:
        return "approved" if self.approved else "waiting"


@app.workflow
class ExpressOrder:
    """Charged as soon as it is approved: what the README's client example runs."""

    def __init__(self) -> None:
        self.approved = False

    @workflow.run
    async def run(self, order_id: str) -> str:
        await workflow.wait_condition(lambda: self.approved, timeout=timedelta(days=1))
        receipt: str = await workflow.execute_activity(
            charge, order_id, 100, start_to_close_timeout=timedelta(seconds=10)
        )
        return receipt

    @workflow.signal
    def approve(self) -> None:
        self.approved = True

    @workflow.query
    def status(self) -> str:
        return "approved" if self.approved else "waiting"
