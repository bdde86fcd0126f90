"""``perdure dev``: stack up, a cell created if missing and run in the foreground until SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
from aiokafka.admin import AIOKafkaAdminClient
from pymongo import AsyncMongoClient

from perdure.infra.rabbitmq_admin import RabbitMQAdmin
from perdure.infra.settings import load_settings

from ..service_endpoints import Endpoints
from .cell_harness import eventually, settings_env
from .conftest import drop_platform_leftovers
from .console_harness import ConsoleUnderTest, SignedIn, free_port

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
    console_port = free_port()
    process = await asyncio.create_subprocess_exec(
        PERDURE,
        "dev",
        "--cell",
        cell,
        "--partitions",
        "2",
        "--console-port",
        str(console_port),
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
        # The console runs beside it, and the login it printed signs in.
        [login] = [line for line in seen if line.startswith("console: ")]
        match = re.fullmatch(r"console: (http://\S+)  sign in as (\S+) / (\S+)\n", login)
        assert match is not None, login
        console = ConsoleUnderTest(load_settings(), match.group(1).rstrip("/"))

        async def sign_in() -> SignedIn:
            try:
                return await console.signed_in(match.group(2), match.group(3))
            except httpx.ConnectError as exc:  # its process is still starting
                raise AssertionError(f"the console does not answer yet: {exc}") from exc

        signed_in = await eventually(sign_in)
        assert (await signed_in.get("/namespaces")).status_code == 200
        await signed_in.aclose()
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
