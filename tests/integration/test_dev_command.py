"""``perdure dev``: stack up, a cell created if missing and run in the foreground until SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from pymongo import AsyncMongoClient

from perdure.infra.rabbitmq_admin import RabbitMQAdmin
from perdure.infra.settings import load_settings

from ..service_endpoints import Endpoints
from .cell_harness import settings_env
from .conftest import drop_platform_leftovers

PERDURE = str(Path(sys.executable).parent / "perdure")


async def test_dev_runs_a_cell_in_the_foreground_and_stops_cleanly(
    endpoints: Endpoints,
    kafka_admin: AIOKafkaAdminClient,
    mongo_client: AsyncMongoClient[dict[str, Any]],
    rabbitmq_admin: RabbitMQAdmin,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    variables = settings_env(endpoints, f"t{suffix}")
    cell = f"dev-{suffix}"
    process = await asyncio.create_subprocess_exec(
        PERDURE,
        "dev",
        "--cell",
        cell,
        "--partitions",
        "2",
        env={**os.environ, **variables},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(90):
            while '"partitions assigned"' not in (line := (await process.stdout.readline()).decode()):
                assert line, f"perdure dev ended early: {''.join(seen)[-2000:]}"
                seen.append(line)
        assert any(f"cell {cell} (2 partitions) running here" in line for line in seen), seen
        # The control plane is bootstrapped on it: the system namespace, and its workflows started.
        assert any(f"system namespace t{suffix}-system on control cell {cell}" in line for line in seen), seen
        assert any("billing-export-schedule: started" in line for line in seen), seen
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            rest = (await process.stdout.read()).decode()
            assert await process.wait() == 0, rest[-2000:]
        assert '"cell stopped"' in rest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        settings = load_settings(**{k.removeprefix("PERDURE_").lower(): v for k, v in variables.items()})
        await kafka_admin.delete_topics([f"perdure.cell.{cell}.tasks", f"perdure.cell.{cell}.dlq"])
        await mongo_client.drop_database(settings.control_database)
        await mongo_client.drop_database(settings.cell_database(cell))
        await drop_platform_leftovers(settings, kafka_admin, mongo_client, rabbitmq_admin)
