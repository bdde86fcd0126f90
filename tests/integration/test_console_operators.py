"""Page tests for the operators' view against a cell with a real dead letter: the cell with its live
process, version and lag; dead letters redriven through the page (and audited); rollouts of the system
namespace with their phase; and none of it for an account's users."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient

from perdure.infra.settings import Settings
from perdure.platform.cell import dead_letters
from perdure.platform.protocol.cell_wire import DeadLetter
from perdure.platform.stores.control_store import CellRecord, ProcessReport
from perdure.platform.stores.databases import Databases
from perdure.platform.tenancy.model import Quota

from .cell_harness import eventually, run_perdure
from .conftest import TenantCellFactory
from .console_harness import running_console

DEAD_LETTERS = "/operators/dead-letters"


async def cell_record(settings: Settings, cell: str) -> CellRecord:
    databases = Databases.connect(settings, cell)
    try:
        return await databases.control.get_cell(cell)
    finally:
        await databases.close()


async def live_process(settings: Settings, cell: str) -> ProcessReport:
    databases = Databases.connect(settings, cell)
    try:
        reports = await databases.control.processes_of(cell, datetime.now(UTC) - timedelta(seconds=10))
    finally:
        await databases.close()
    assert len(reports) == 1 and reports[0].healthy, reports
    return reports[0]


async def audit_entries(settings: Settings, **query: Any) -> list[dict[str, Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri, tz_aware=True)
    try:
        return [d async for d in client[settings.control_database]["audit_log"].find(query)]
    finally:
        await client.close()


async def test_operators_see_cells_and_redrive_a_real_dead_letter(
    make_tenant_cell: TenantCellFactory, kafka_producer: AIOKafkaProducer
) -> None:
    tenants = await make_tenant_cell({"a": Quota()})
    settings, cell = tenants.cell.settings, tenants.cell.cell
    namespace = tenants.a.record.name
    record = await cell_record(settings, cell)
    # A record no engine can read: the cell's engine dead-letters it and goes on.
    await kafka_producer.send_and_wait(record.topic, b"{this is not json", key=f"{namespace}/junk".encode())

    async def dead_lettered() -> DeadLetter:
        letters = await dead_letters.read_dead_letters(settings, record)
        assert len(letters) == 1
        return letters[0]

    letter = await eventually(dead_lettered, timeout=60)
    assert letter.reason.startswith("malformed envelope")
    process = await eventually(lambda: live_process(settings, cell), timeout=30)

    async with running_console(settings) as console:
        await console.add_operator("ops@platform.example.com")
        await console.add_user("acct-a", "owner@a.example.com", "owner")
        operator = await console.signed_in("ops@platform.example.com")
        owner = await console.signed_in("owner@a.example.com")

        # An account's owner sees none of the operators' pages, and cannot redrive by posting.
        for path in ("/operators/cells", "/operators/rollouts", DEAD_LETTERS):
            assert (await owner.get(path)).status_code == 403, path
        forged = await owner.post_from(
            "/namespaces", f"{DEAD_LETTERS}/redrive", {"cell": cell, "id": letter.id}
        )
        assert forged.status_code == 403
        assert await audit_entries(settings, action="dlq.redrive", outcome="refused")

        # The cell, its live process with its version and probe verdict, and its engine's lag.
        cells = await operator.get("/operators/cells")
        assert cells.status_code == 200
        assert f'id="cell-{cell}"' in cells.text
        assert process.process in cells.text
        assert f'<td class="version">{process.version}</td>' in cells.text
        assert "1 process healthy" in cells.text and "healthy, reported" in cells.text
        assert f"<dt>Partitions</dt><dd>{record.partitions}</dd>" in cells.text
        assert "Engine lag" in cells.text and "unknown:" not in cells.text

        # The dead letter, with its reason, not yet redriven.
        shown = await operator.get(DEAD_LETTERS)
        assert shown.status_code == 200
        assert letter.id in shown.text and "malformed envelope" in shown.text
        assert '<span class="redriven">redriven</span>' not in shown.text

        # Bad input is refused before anything is sent.
        for data, reason in (
            ({"cell": "no-such-cell", "id": letter.id}, "there is no cell"),
            ({"cell": cell, "id": f"{letter.id}9"}, "has no dead letter or parked run"),
            ({"cell": "", "id": ""}, "name the cell"),
        ):
            refused = await operator.post_from(DEAD_LETTERS, f"{DEAD_LETTERS}/redrive", data)
            assert refused.status_code == 400 and reason in refused.text, data
        assert await dead_letters.redriven_ids(settings, record) == set()

        # Redriven through the page: marked, audited; the engine refuses the record again, as its own letter.
        redriven = await operator.post_from(
            DEAD_LETTERS, f"{DEAD_LETTERS}/redrive", {"cell": cell, "id": letter.id}
        )
        assert redriven.status_code == 200
        assert "1 dead-lettered message(s) sent back" in redriven.text
        assert '<span class="redriven">redriven</span>' in redriven.text
        assert await dead_letters.redriven_ids(settings, record) == {letter.id}
        done = await audit_entries(settings, action="dlq.redrive", outcome="done")
        assert [(e["actor"], e["target"]) for e in done] == [("operator/ops@platform.example.com", letter.id)]

        async def refused_again() -> list[DeadLetter]:
            letters = await dead_letters.read_dead_letters(settings, record)
            assert len(letters) == 2
            return letters

        again = (await eventually(refused_again, timeout=60))[1]
        page = (await operator.get(DEAD_LETTERS)).text
        assert again.id in page and page.count('<span class="redriven">redriven</span>') == 1
        # "All of the cell" sends what was not redriven yet: the new letter only.
        everything = await operator.post_from(
            DEAD_LETTERS, f"{DEAD_LETTERS}/redrive", {"cell": cell, "id": ""}
        )
        assert everything.status_code == 200
        assert await dead_letters.redriven_ids(settings, record) == {letter.id, again.id}
        assert [e["target"] for e in await audit_entries(settings, action="dlq.redrive", outcome="done")] == [
            letter.id,
            f"{cell}:all",
        ]

        # No control plane here: no rollouts to show.
        rollouts = await operator.get("/operators/rollouts")
        assert rollouts.status_code == 200 and "not bootstrapped" in rollouts.text
        for client in (operator, owner):
            await client.aclose()


async def test_rollouts_of_the_system_namespace_are_listed_with_their_phase(
    make_tenant_cell: TenantCellFactory,
) -> None:
    tenants = await make_tenant_cell({})
    code, _, err = await run_perdure(tenants, "controlplane", "bootstrap", "--cell", tenants.cell.cell)
    assert code == 0, err
    # A ring of a cell that does not exist: the rollout stays deploying (its step retried), touching no
    # real cell's version.
    code, out, err = await run_perdure(
        tenants, "rollout", "start", "--version", "v9", "--ring", "canary=no-such-cell"
    )
    assert code == 0, err
    name = out.strip()
    async with running_console(tenants.cell.settings) as console:
        await console.add_operator("ops@platform.example.com")
        operator = await console.signed_in("ops@platform.example.com")

        async def listed() -> str:
            shown = await operator.get("/operators/rollouts")
            assert shown.status_code == 200
            assert f"<td>{name}</td>" in shown.text and "<td>deploying</td>" in shown.text
            return shown.text

        page = await eventually(listed, timeout=60)
        assert "<td>canary</td>" in page and "no-such-cell to v9" in page
        assert "status-running" in page
        await operator.aclose()
