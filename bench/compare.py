"""Perdure beside its peers, on this machine, in one run: the same workload (workflows of three trivial
steps: ``--light`` one at a time, then ``--workflows`` all at once) on

- Perdure through the tenant client and admission, as tenants run it (a namespace with its key, a cell
  process with its platform-hosted worker), and through the ops path (``bench.throughput``);
- DBOS, a library in the caller's process, on the local stack's PostgreSQL (a database of its own);
- the Temporal dev server (``temporal server start-dev``, in memory) with a Python SDK worker.

Each runs in a process of its own, one after another; the table gives light-load p50/p99, saturation
workflows/s and each figure's ratio to Perdure's (client path). The peers are an optional extra:
``.venv/bin/pip install -e '.[bench]'``. Needs the stack up (``perdure stack up``).

Run: .venv/bin/python -m bench.compare [--light 50] [--workflows 1000] [--only perdure|ops|dbos|temporal]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.machine import describe_machine
from bench.throughput import cleanup, percentile, start_cell_process
from perdure.infra.logs import configure_logging

if TYPE_CHECKING:
    from perdure.tenants import Client

REPO = Path(__file__).resolve().parents[1]
SYSTEMS = ("perdure", "ops", "dbos", "temporal")
LABELS = {
    "perdure": "Perdure (tenant client, admission)",
    "ops": "Perdure (ops path)",
    "dbos": "DBOS on the stack's PostgreSQL",
    "temporal": "Temporal dev server + Python worker",
}
Figures = dict[str, float]


def _figures(light: list[float], saturation_seconds: float, workflows: int) -> Figures:
    return {
        "light_p50_ms": statistics.median(light),
        "light_p99_ms": percentile(light, 0.99),
        "workflows_per_second": workflows / saturation_seconds,
    }


async def _timed(
    light: int,
    workflows: int,
    one: Callable[[str], Awaitable[Any]],
    many: Callable[[list[str]], Awaitable[Any]],
) -> Figures:
    """Run ``one`` a few times to warm up, ``light`` times one after another (ms each), then ``many``
    with ``workflows`` ids at once (its seconds)."""
    for i in range(3):
        await one(f"warm-{i}-{uuid.uuid4().hex[:6]}")
    latencies = []
    for i in range(light):
        began = time.perf_counter()
        await one(f"light-{i}-{uuid.uuid4().hex[:6]}")
        latencies.append((time.perf_counter() - began) * 1000)
    ids = [f"load-{i}-{uuid.uuid4().hex[:6]}" for i in range(workflows)]
    began = time.perf_counter()
    await many(ids)
    return _figures(latencies, time.perf_counter() - began, workflows)


# -- Perdure, as tenants run it -------------------------------------------------------------------------
@asynccontextmanager
async def tenant_namespace(**cell_env: str) -> AsyncIterator[Client]:
    """A cell of its own with a namespace deployed with ``bench.throughput_app`` (unthrottled, its worker
    platform-hosted), the cell process started with ``cell_env`` added: a client of that namespace.
    Everything made is removed on the way out."""
    from perdure.infra.settings import load_settings
    from perdure.platform.control.namespace_requests import provision_namespace
    from perdure.platform.control.provisioning import create_cell
    from perdure.platform.stores.databases import Databases
    from perdure.platform.stores.tenancy_store import TenancyStore
    from perdure.platform.tenancy.model import Quota
    from perdure.tenants import Client

    suffix = uuid.uuid4().hex[:8]
    settings = load_settings(database_prefix=f"compare{suffix}")
    cell, namespace = f"compare-{suffix}", f"compare-{suffix}"
    await create_cell(settings, cell, 8)
    databases = Databases.connect(settings)
    await TenancyStore(databases.control_db).create_account(f"acct-{suffix}")
    await databases.close()
    provisioned = await provision_namespace(
        settings,
        namespace,
        "bench.throughput_app:app",
        cell=cell,
        account=f"acct-{suffix}",
        quota=Quota.unthrottled(),
    )
    assert provisioned.connection_string is not None
    process = await start_cell_process(cell, settings.database_prefix, **cell_env)
    try:
        async with await Client.connect(provisioned.connection_string, request_timeout=600) as client:
            yield client
    finally:
        process.terminate()
        await process.wait()
        await cleanup(settings, cell, [namespace])


async def perdure_client(light: int, workflows: int) -> Figures:
    from bench.throughput_app import ThreeNoops

    async with tenant_namespace() as client:

        async def one(workflow_id: str) -> None:
            assert await client.execute_workflow(ThreeNoops.run, id=workflow_id) == 6

        async def many(ids: list[str]) -> None:
            handles = []
            for chunk in range(0, len(ids), 200):
                handles += await asyncio.gather(
                    *(client.start_workflow(ThreeNoops.run, id=i) for i in ids[chunk : chunk + 200])
                )
            results = await asyncio.gather(*(h.result(timeout=1800) for h in handles))
            assert results == [6] * len(ids)

        return await _timed(light, workflows, one, many)


async def perdure_ops(light: int, workflows: int) -> Figures:
    from bench.throughput import measure

    figures = await measure(workflows, light)
    return {k: figures[k] for k in ("light_p50_ms", "light_p99_ms", "workflows_per_second")}


# -- DBOS -------------------------------------------------------------------------------------------------
async def dbos(light: int, workflows: int) -> Figures:
    from dbos import DBOS, DBOSConfig

    from perdure.infra.local.services import PostgresService
    from perdure.infra.settings import PLATFORM_USER, load_settings

    settings = load_settings()
    database = f"compare_dbos_{uuid.uuid4().hex[:8]}"
    postgres = PostgresService(settings)
    await postgres.ensure_database(database)
    url = f"postgresql://{PLATFORM_USER}:{settings.stack_mongodb_password}@{postgres.address}/{database}"

    @DBOS.step()
    async def noop(step: int) -> int:
        return step

    @DBOS.workflow()
    async def three_noops() -> int:
        total = 0
        for step in (1, 2, 3):
            total += await noop(step)
        return total

    config: DBOSConfig = {"name": "perdure-compare", "system_database_url": url}
    DBOS(config=config)
    DBOS.launch()
    try:

        async def one(workflow_id: str) -> None:
            from dbos import SetWorkflowID

            with SetWorkflowID(workflow_id):
                handle = await DBOS.start_workflow_async(three_noops)
            assert await handle.get_result() == 6

        async def many(ids: list[str]) -> None:
            from dbos import SetWorkflowID

            handles = []
            for workflow_id in ids:
                with SetWorkflowID(workflow_id):
                    handles.append(await DBOS.start_workflow_async(three_noops))
            assert [await h.get_result() for h in handles] == [6] * len(ids)

        return await _timed(light, workflows, one, many)
    finally:
        DBOS.destroy()
        await postgres.drop_database(database)


# -- Temporal -------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def temporal(light: int, workflows: int) -> Figures:
    from temporalio.client import Client
    from temporalio.worker import Worker

    from bench.compare_temporal_app import ThreeNoops, noop

    binary = shutil.which("temporal") or str(Path(sys.executable).parent / "temporal")
    port, ui = _free_port(), _free_port()
    server = await asyncio.create_subprocess_exec(
        binary,
        "server",
        "start-dev",
        "--headless",
        "--port",
        str(port),
        "--ui-port",
        str(ui),
        "--log-level",
        "error",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )

    try:
        client = None
        for _ in range(300):  # the dev server takes a few seconds to listen
            try:
                client = await Client.connect(f"127.0.0.1:{port}")
                break
            except Exception:
                await asyncio.sleep(0.1)
        assert client is not None, "the Temporal dev server did not start"
        async with Worker(client, task_queue="compare", workflows=[ThreeNoops], activities=[noop]):

            async def one(workflow_id: str) -> None:
                result = await client.execute_workflow(ThreeNoops.run, id=workflow_id, task_queue="compare")
                assert result == 6

            async def many(ids: list[str]) -> None:
                handles = []
                for chunk in range(0, len(ids), 200):
                    handles += await asyncio.gather(
                        *(
                            client.start_workflow(ThreeNoops.run, id=i, task_queue="compare")
                            for i in ids[chunk : chunk + 200]
                        )
                    )
                assert await asyncio.gather(*(h.result() for h in handles)) == [6] * len(ids)

            return await _timed(light, workflows, one, many)
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 30)


RUNNERS: dict[str, Callable[[int, int], Awaitable[Figures]]] = {
    "perdure": perdure_client,
    "ops": perdure_ops,
    "dbos": dbos,
    "temporal": temporal,
}


def _run_apart(system: str, light: int, workflows: int) -> Figures | str:
    """One system in a process of its own: its figures, or why it could not run."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.compare",
            "--only",
            system,
            "--light",
            str(light),
            "--workflows",
            str(workflows),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=False,
    )
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            figures: Figures = json.loads(line)
            return figures
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit {done.returncode}"


def _table(results: dict[str, Figures | str], light: int, workflows: int) -> str:
    base = results.get("perdure")
    rows = [
        f"| system | light-load p50 | light-load p99 | saturation ({workflows} at once) "
        "| ratios to Perdure (p50, workflows/s) |",
        "|---|---|---|---|---|",
    ]
    for system, figures in results.items():
        if isinstance(figures, str):
            rows.append(f"| {LABELS[system]} | not run: {figures[:120]} | | | |")
            continue
        ratio = ""
        if isinstance(base, dict) and system != "perdure":
            ratio = (
                f"p50 x{figures['light_p50_ms'] / base['light_p50_ms']:.2f}, "
                f"workflows/s x{figures['workflows_per_second'] / base['workflows_per_second']:.2f}"
            )
        rows.append(
            f"| {LABELS[system]} | {figures['light_p50_ms']:.1f} ms | {figures['light_p99_ms']:.1f} ms | "
            f"{figures['workflows_per_second']:.1f} workflows/s | {ratio} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--light", type=int, default=50)
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--only", choices=SYSTEMS)
    arguments = parser.parse_args()
    if arguments.only:
        configure_logging("WARNING")
        figures = asyncio.run(RUNNERS[arguments.only](arguments.light, arguments.workflows))
        print(json.dumps(figures))
        return
    results = {}
    for system in SYSTEMS:
        print(f"running {LABELS[system]}...", file=sys.stderr, flush=True)
        results[system] = _run_apart(system, arguments.light, arguments.workflows)
    print(f"machine: {describe_machine()}")
    print(
        f"workload: workflows of three trivial steps; {arguments.light} one at a time, "
        f"then {arguments.workflows} at once"
    )
    print(_table(results, arguments.light, arguments.workflows))


if __name__ == "__main__":
    main()
