"""Memory of a cell process holding many open runs that wait on timers: ``--runs`` workflows that each
sleep an hour are started on a cell of one ``perdure cell run`` process (its platform-hosted worker
beside it); once every one has armed its timer, the resident set size of the cell process (and of its
worker processes, apart) is read from /proc.

Run: .venv/bin/python -m bench.timer_memory [--runs 10000]   (needs ``perdure stack up``)
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from pathlib import Path

from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from bench.machine import describe_machine
from bench.throughput import cleanup, start_cell_process
from perdure.infra.logs import configure_logging
from perdure.infra.settings import load_settings
from perdure.platform.control.namespace_requests import create_namespace
from perdure.platform.control.provisioning import create_cell
from perdure.platform.messaging.ops_client import OpsClient
from perdure.platform.tenancy.model import Quota

CHUNK = 500


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise LookupError(f"no VmRSS for process {pid}")


def children_of(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        found += [int(child) for child in children]
    return found


async def _polled(runs: AsyncCollection[dict[str, object]], query: dict[str, object], count: int) -> None:
    """Until ``count`` runs match ``query``, read every half second (the cell process announces nothing
    of a timer armed), ten minutes at most."""
    for _ in range(1200):
        if await runs.count_documents(query) >= count:
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"fewer than {count} runs match {query} after ten minutes")


async def measure(runs: int) -> str:
    suffix = uuid.uuid4().hex[:8]
    settings = load_settings(database_prefix=f"memory{suffix}")
    cell, namespace = f"memory-{suffix}", f"memory-{suffix}"
    await create_cell(settings, cell, 8)
    await create_namespace(settings, namespace, "bench.throughput_app:app", cell, quota=Quota.unthrottled())
    process = await start_cell_process(cell, settings.database_prefix)
    mongo: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(settings.endpoints(cell).mongodb_uri)
    runs_collection = mongo[settings.cell_database(cell)]["runs"]
    try:
        idle = 0.0
        async with await OpsClient.connect(settings, namespace) as client:
            await client.start_workflow("Sleeper", 1.0, id="warm-up")
            await _polled(runs_collection, {"workflow_id": "warm-up", "status": "completed"}, 1)
            idle = resident_mb(process.pid)
            began = time.perf_counter()
            for chunk in range(0, runs, CHUNK):
                starts = [(f"sleeper-{i}", [3600.0]) for i in range(chunk, min(runs, chunk + CHUNK))]
                await client.start_workflows("Sleeper", starts)
            await _polled(runs_collection, {"has_timers": True, "status": "running"}, runs)
            armed_after = time.perf_counter() - began
        await asyncio.sleep(5)  # what the process keeps, once the burst's garbage is collected
        cell_mb = resident_mb(process.pid)
        workers = {pid: resident_mb(pid) for pid in children_of(process.pid)}
    finally:
        process.terminate()
        await process.wait()
        await mongo.close()
        await cleanup(settings, cell, [namespace])
    worker_lines = ", ".join(f"{mb:.0f} MB" for mb in workers.values()) or "none"
    return (
        f"machine: {describe_machine()}\n"
        f"{runs} runs waiting on timers, all armed {armed_after:.1f} s after the first start\n"
        f"cell process RSS: {idle:.0f} MB idle (one run done), {cell_mb:.0f} MB holding them "
        f"({(cell_mb - idle) * 1024 / runs:.1f} KB a run)\n"
        f"its child processes (the namespace's worker and the like), apart: {worker_lines}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10_000)
    arguments = parser.parse_args()
    configure_logging("WARNING")
    print(asyncio.run(measure(arguments.runs)))


if __name__ == "__main__":
    main()
