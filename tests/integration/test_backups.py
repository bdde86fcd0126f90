"""``perdure backup create|restore`` on the real stack: a cell's histories and the control database,
restored under a fresh database prefix, replay with the app's code and equal the originals; a restore
never writes over data or half-restores a damaged backup."""

from __future__ import annotations

import asyncio
import gzip
import uuid
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from perdure.platform.core import history as h
from perdure.platform.stores.control_store import ControlStore
from perdure.platform.stores.run_store import RunStore
from perdure.platform.tenancy.model import Quota
from perdure.tenants import Client
from perdure.tenants.testing import replay

from .cell_app import Gated, ThreeSteps, app
from .cell_harness import PERDURE
from .conftest import TenantCellFactory

Document = dict[str, Any]


async def _perdure(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(PERDURE), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _histories(store: RunStore, namespace: str) -> dict[str, list[h.HistoryEvent]]:
    runs = await store.runs.find({"namespace": namespace}).to_list(None)
    return {run["workflow_id"]: await store.read_history(run["_id"]) for run in runs}


async def test_a_backup_restored_under_a_fresh_prefix_replays_and_refuses_to_overwrite(
    make_tenant_cell: TenantCellFactory, tmp_path: Path, mongo_client: AsyncMongoClient[Document]
) -> None:
    tenants = await make_tenant_cell({"a": Quota()})
    cell, namespace = tenants.cell, tenants.a.record.name
    ledger = str(tmp_path / "ledger")
    async with await Client.connect(tenants.connection_string("a")) as client:
        for i in range(5):
            assert await client.execute_workflow(ThreeSteps.run, ledger, f"t{i}", id=f"three-{i}")
        waiting = await client.start_workflow(Gated.run, ledger, "g", id="gated")
        await waiting.signal(Gated.proceed)
        assert await waiting.result(timeout=60) == ["g-1-done", "g-2-done", "g-3-done"]
        open_run = await client.start_workflow(Gated.run, ledger, "o", id="still-open")  # open when copied
        assert await open_run.query(Gated.released, "now") == "now:no"
    backup = tmp_path / "backup"
    code, out, err = await _perdure(cell.env, "backup", "create", str(backup), "--cell", cell.cell)
    assert code == 0, err
    assert f"cell/{cell.cell}:" in out and "control:" in out

    fresh = f"r{uuid.uuid4().hex[:10]}"
    fresh_env = {**cell.env, "PERDURE_DATABASE_PREFIX": fresh}
    restored_settings = cell.settings.model_copy(update={"database_prefix": fresh})
    try:
        code, out, err = await _perdure(fresh_env, "backup", "restore", str(backup))
        assert code == 0, err
        original = await _histories(RunStore(mongo_client[cell.settings.cell_database(cell.cell)]), namespace)
        copied = await _histories(
            RunStore(mongo_client[restored_settings.cell_database(cell.cell)]), namespace
        )
        assert set(copied) == {*(f"three-{i}" for i in range(5)), "gated", "still-open"}
        assert copied == original
        for events in copied.values():
            replay(app, events)  # the app's code replays every restored history, the open one too
        restored = ControlStore(mongo_client[restored_settings.control_database])
        assert (await restored.get_namespace(namespace)).cell == cell.cell
        # The indexes came back with the documents.
        restored_cell = mongo_client[restored_settings.cell_database(cell.cell)]
        indexes = await restored_cell["history"].index_information()
        assert any(index.get("unique") for index in indexes.values())

        # Restored once, the prefix holds data: a second restore is refused and writes nothing.
        count = await restored.db["namespaces"].count_documents({})
        code, _, err = await _perdure(fresh_env, "backup", "restore", str(backup))
        assert code == 1 and "holds data" in err and "Traceback" not in err, err
        assert await restored.db["namespaces"].count_documents({}) == count
    finally:
        for database in await mongo_client.list_database_names():
            if database.startswith(f"{fresh}_"):
                await mongo_client.drop_database(database)

    # A damaged backup is refused before anything is written.
    damaged = next((backup / f"cell__{cell.cell}").glob("history.jsonl.gz"))
    with gzip.open(damaged, "at") as out_file:
        out_file.write("{not json\n")
    other = f"r{uuid.uuid4().hex[:10]}"
    code, _, err = await _perdure(
        {**cell.env, "PERDURE_DATABASE_PREFIX": other}, "backup", "restore", str(backup)
    )
    assert code == 1 and "not a document" in err, err
    assert not [d for d in await mongo_client.list_database_names() if d.startswith(f"{other}_")]
    # And a folder that is not a backup says so.
    code, _, err = await _perdure(cell.env, "backup", "restore", str(tmp_path))
    assert code == 1 and "no finished backup" in err, err
