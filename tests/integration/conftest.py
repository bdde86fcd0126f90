import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


import signal  # noqa: E402
from collections.abc import AsyncIterator, Awaitable, Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402
from pymongo import AsyncMongoClient  # noqa: E402

from perdure.infra.rabbitmq_admin import RabbitMQAdmin  # noqa: E402
from perdure.infra.settings import Endpoints  # noqa: E402
from perdure.platform.cell.provisioning import tenant_user  # noqa: E402

from .cell_harness import CellUnderTest, provision  # noqa: E402

CellFactory = Callable[..., Awaitable[CellUnderTest]]


@pytest.fixture
async def make_cell(
    endpoints: Endpoints,
    tmp_path: Path,
    kafka_admin: AIOKafkaAdminClient,
    mongo_client: AsyncMongoClient[dict[str, Any]],
    rabbitmq_admin: RabbitMQAdmin,
) -> AsyncIterator[CellFactory]:
    """Provisions uniquely named cells (topics, databases, vhost); kills their processes and removes
    everything afterwards."""
    made: list[CellUnderTest] = []

    async def make(**options: Any) -> CellUnderTest:
        cell = await provision(endpoints, tmp_path, **options)
        made.append(cell)
        return cell

    yield make
    for cell in made:
        for process in cell.processes:
            process.kill(signal.SIGKILL)
            if process.proc is not None:
                await process.wait()
        await kafka_admin.delete_topics([f"perdure.cell.{cell.cell}.tasks", f"perdure.cell.{cell.cell}.dlq"])
        await mongo_client.drop_database(cell.settings.control_database)
        await mongo_client.drop_database(cell.settings.cell_database(cell.cell))
        await rabbitmq_admin.delete_vhost(cell.namespace)
        await rabbitmq_admin.delete_user(tenant_user(cell.namespace))
