"""The example app of docs/visibility.md: orders that say whose they are and how large by search
attributes, so that a visibility query finds them (``CustomerId = 'c-42' AND Amount > 100``)."""

from __future__ import annotations

from datetime import timedelta

from perdure.tenants import App, workflow

app = App("customer-orders")


@app.workflow
class CustomerOrder:
    def __init__(self) -> None:
        self.approved = False

    @workflow.run
    async def run(self, customer: str, amount: int) -> str:
        workflow.upsert_search_attributes({"CustomerId": customer, "Amount": amount})
        if amount > 100:  # large orders wait for an approval (and stay Running meanwhile)
            await workflow.wait_condition(lambda: self.approved, timeout=timedelta(days=1))
        return f"{customer}: {amount}"

    @workflow.signal
    def approve(self) -> None:
        self.approved = True
