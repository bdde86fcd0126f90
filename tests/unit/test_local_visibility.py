"""Visibility queries in LocalEnvironment: runs found by their search attributes, as on the platform."""

from __future__ import annotations

import pytest

from perdure.tenants import App, MalformedRequestError, workflow
from perdure.tenants.testing import LocalEnvironment

app = App("local-visibility")


@app.workflow
class Order:
    @workflow.run
    async def run(self, customer: str, amount: int) -> str:
        workflow.upsert_search_attributes({"CustomerId": customer, "Amount": amount})
        if amount > 100:
            await workflow.wait_condition(lambda: False)  # large orders wait for a review
        return "done"


@app.workflow
class BadName:
    @workflow.run
    async def run(self) -> str:
        try:
            workflow.upsert_search_attributes({"customer.id": "x"})
        except ValueError as exc:
            return str(exc)
        return "upserted"


async def test_runs_are_listed_and_counted_by_query() -> None:
    async with LocalEnvironment(app, search_attributes={"CustomerId": "Keyword", "Amount": "Int"}) as env:
        for i in range(6):
            handle = await env.start_workflow(Order.run, f"c-{i % 2}", 50 * i, id=f"order-{i}")
            if 50 * i <= 100:
                await handle.result()
        await env.idle()
        query = "CustomerId = 'c-0' AND ExecutionStatus = 'Running'"
        assert [r["workflow_id"] for r in await env.list_workflows(query=query)] == ["order-4"]
        assert await env.count_workflows("CustomerId = 'c-1'") == 3
        assert await env.count_workflows("") == 6
        by_amount = await env.list_workflows(query="Amount >= 100 ORDER BY Amount DESC", limit=2)
        assert [r["workflow_id"] for r in by_amount] == ["order-5", "order-4"]
        assert by_amount[0]["search_attributes"] == {"CustomerId": "c-1", "Amount": 250}
        with pytest.raises(MalformedRequestError, match=r"column 12: unexpected '\)'") as bad:
            await env.list_workflows(query="Amount IN ()")
        assert "\n  Amount IN ()\n             ^" in str(bad.value)
        with pytest.raises(MalformedRequestError, match="unknown field 'Region'"):
            await env.count_workflows("Region = 'eu'")
        # Without a query, status and type filter as they always did.
        assert len(await env.list_workflows(status="completed", type="Order")) == 3


async def test_an_attribute_name_no_run_document_can_hold_is_refused_at_upsert() -> None:
    async with LocalEnvironment(app) as env:
        message = await env.execute_workflow(BadName.run, id="bad")
    assert "search attribute name 'customer.id'" in message and "no '.' or '$'" in message


async def test_the_docs_example_runs_in_a_local_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from examples import visibility_client

    monkeypatch.delenv("PERDURE_CONNECTION", raising=False)
    await visibility_client.main()
    printed = capsys.readouterr().out.splitlines()
    assert printed[:3] == [
        "order-4 running {'CustomerId': 'c-0', 'Amount': 240}",
        "order-2 running {'CustomerId': 'c-0', 'Amount': 120}",
        "4 large orders",
    ]
    assert printed[3:] == [
        "bad query at column 24: unexpected 'AND'",
        "  CustomerId = 'c-0' AND AND",
        "                         ^",
    ]
