"""The cell's spans and metrics, and its workers', from a cell and a worker run in this process with
the in-memory exporter."""

from __future__ import annotations

import asyncio
from pathlib import Path

from perdure.infra.telemetry import configure_telemetry
from perdure.platform.control.canary import WithCanary
from perdure.platform.processes.cell_process import run_cell
from perdure.platform.tenancy.namespace_urls import namespace_amqp_url
from perdure.tenants.worker import Worker

from .cell_app import app
from .cell_harness import closed_runs
from .conftest import CellFactory


async def test_a_workflow_leaves_spans_and_metrics(make_cell: CellFactory, tmp_path: Path) -> None:
    cell = await make_cell(partitions=2)
    settings = cell.settings.model_copy(update={"telemetry_exporter": "memory"})
    telemetry = configure_telemetry(settings, "perdure-cell-test")
    stop = asyncio.Event()
    running = asyncio.create_task(
        run_cell(settings, cell.cell, stop=stop, telemetry=telemetry, workers=False)
    )
    worker = Worker(namespace_amqp_url(settings, cell.cell, cell.namespace), WithCanary(app))
    await worker.start()
    try:
        async with closed_runs(cell) as closed, await cell.client() as client:
            await client.start_workflow("Pipeline", str(tmp_path / "ledger"), id="traced")
            await client.signal("traced", "approve")
            assert (await closed.wait({"traced"}))["traced"].status == "completed"
    finally:
        await worker.shutdown()
        stop.set()
        await asyncio.wait_for(running, 60)
    assert telemetry.spans is not None and telemetry.metric_reader is not None
    names = {span.name for span in telemetry.spans.get_finished_spans()}
    assert {
        "perdure.consume",
        "perdure.workflow_task",
        "perdure.worker.workflow_task",
        "perdure.activity",
        "perdure.reports.receive",
        "perdure.timers.fire",
    } <= names
    activity = next(s for s in telemetry.spans.get_finished_spans() if s.name == "perdure.activity")
    assert activity.attributes is not None and activity.attributes["namespace"] == cell.namespace
    metric_names = {
        metric.name
        for resource in telemetry.metric_reader.get_metrics_data().resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert {
        "perdure.engine.messages",
        "perdure.engine.batch_size",
        "perdure.engine.batch_seconds",
        "perdure.engine.cache_lookups",
        "perdure.engine.consumer_lag",
        "perdure.activities.executed",
        "perdure.worker.workflow_tasks",
        "perdure.reports.relayed",
    } <= metric_names
    telemetry.shutdown()
