"""The app of the visibility query tests: orders that say whose they are by a search attribute."""

from __future__ import annotations

from perdure.tenants import App, workflow

app = App("visibility-tests")


@app.workflow
class Order:
    @workflow.run
    async def run(self, customer: str, amount: int) -> str:
        workflow.upsert_search_attributes({"CustomerId": customer, "Amount": amount})
        return f"{customer}:{amount}"
