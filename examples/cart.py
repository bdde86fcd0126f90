"""The updates example of docs/writing-workflows.md: a cart that takes items and checks out through
updates, each answered to its caller."""

from __future__ import annotations

from datetime import timedelta

from perdure.tenants import App, ApplicationError, workflow

app = App("cart")


@app.activity
async def charge(cart_id: str, total: int) -> str:
    return f"receipt-{cart_id}-{total}"


@app.workflow
class CartWorkflow:
    def __init__(self) -> None:
        self.prices: dict[str, int] = {}
        self.receipt: str | None = None

    @workflow.run
    async def run(self, cart_id: str) -> str:
        self.cart_id = cart_id
        await workflow.wait_condition(lambda: self.receipt is not None, timeout=timedelta(days=7))
        assert self.receipt is not None
        return self.receipt

    @workflow.update
    def add(self, item: str, price: int) -> int:
        """Adds an item; answers the cart's total."""
        self.prices[item] = price
        return sum(self.prices.values())

    @add.validator
    def validate_add(self, item: str, price: int) -> None:
        # Raising refuses the update: the caller gets the error, the history records nothing.
        if price <= 0:
            raise ApplicationError(f"{item}: a price must be positive", type="BadPrice")
        if self.receipt is not None:
            raise ApplicationError("the cart is checked out", type="CheckedOut")

    @workflow.update
    async def checkout(self) -> str:
        """Charges the cart (an activity, awaited inside the handler); answers the receipt."""
        total = sum(self.prices.values())
        self.receipt = await workflow.execute_activity(
            charge, self.cart_id, total, start_to_close_timeout=timedelta(seconds=10)
        )
        return self.receipt

    @workflow.query
    def total(self) -> int:
        return sum(self.prices.values())
