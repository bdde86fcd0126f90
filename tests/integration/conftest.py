import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    report: pytest.TestReport = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402
from pymongo import AsyncMongoClient  # noqa: E402
from pymongo.errors import AutoReconnect  # noqa: E402
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_fixed  # noqa: E402

from perdure.infra.rabbitmq_admin import RabbitMQAdmin  # noqa: E402
from perdure.infra.settings import Endpoints  # noqa: E402
from perdure.platform.control.provisioning import tenant_user  # noqa: E402

from .cell_harness import CellProcess, CellUnderTest, TenantCell, provision, provision_tenants  # noqa: E402

CellFactory = Callable[..., Awaitable[CellUnderTest]]


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A folder the test shares with the namespaces' workers, which run sandboxed as users of their own
    (their activities write ledgers of what ran here): outside pytest's own 0700 folder, writable by
    all, sticky."""
    folder = Path(tempfile.mkdtemp(prefix="perdure-test-"))
    folder.chmod(0o1777)
    yield folder
    if not os.environ.get("PERDURE_TEST_KEEP_FILES"):
        shutil.rmtree(folder, ignore_errors=True)


TenantCellFactory = Callable[..., Awaitable[TenantCell]]


def tell_logs_of_a_failure(request: pytest.FixtureRequest, processes: list[CellProcess]) -> None:
    """A failed test's cell processes' last log lines, in its report (their logs live nowhere else)."""
    if not request.node.stash.get(CALL_FAILED, False):
        return
    for process in processes:
        print(f"--- the last log lines of {process.owner.cell}/{process.name} ---")
        print("".join(process.last_lines(80)))


@pytest.fixture
async def make_cell(
    request: pytest.FixtureRequest,
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
    tell_logs_of_a_failure(request, [p for cell in made for p in cell.processes])
    for cell in made:
        for process in cell.processes:
            process.kill(signal.SIGKILL)
            if process.proc is not None:
                await process.wait()
        await kafka_admin.delete_topics([f"perdure.cell.{cell.cell}.tasks", f"perdure.cell.{cell.cell}.dlq"])
        await drop_platform_leftovers(cell.settings, kafka_admin, mongo_client, rabbitmq_admin)
        await drop_databases(
            mongo_client, cell.settings.control_database, cell.settings.cell_database(cell.cell)
        )
        await rabbitmq_admin.delete_vhost(cell.namespace)
        await rabbitmq_admin.delete_user(tenant_user(cell.namespace))


@pytest.fixture
async def make_tenant_cell(
    request: pytest.FixtureRequest,
    endpoints: Endpoints,
    tmp_path: Path,
    kafka_admin: AIOKafkaAdminClient,
    mongo_client: AsyncMongoClient[dict[str, Any]],
    rabbitmq_admin: RabbitMQAdmin,
) -> AsyncIterator[TenantCellFactory]:
    """Makes cells with tenants' namespaces (``make({"a": Quota(...), ...}, partitions=, **env)``) and
    starts a cell process unless ``start=False``; kills and removes everything afterwards."""
    made: list[TenantCell] = []

    async def make(quotas: dict[str, Any], *, start: bool = True, **options: Any) -> TenantCell:
        tenants = await provision_tenants(endpoints, tmp_path, quotas, **options)
        made.append(tenants)
        if start:
            await tenants.cell.start_process().start()
        return tenants

    yield make
    tell_logs_of_a_failure(request, [p for tenants in made for p in tenants.cell.processes])
    for tenants in made:
        cell = tenants.cell
        for process in cell.processes:
            process.kill(signal.SIGKILL)
            if process.proc is not None:
                await process.wait()
        await kafka_admin.delete_topics([f"perdure.cell.{cell.cell}.tasks", f"perdure.cell.{cell.cell}.dlq"])
        await drop_platform_leftovers(cell.settings, kafka_admin, mongo_client, rabbitmq_admin)
        for provisioned in tenants.namespaces.values():
            await rabbitmq_admin.delete_vhost(provisioned.record.vhost)
            await rabbitmq_admin.delete_user(tenant_user(provisioned.record.name))
        await drop_databases(
            mongo_client, cell.settings.control_database, cell.settings.cell_database(cell.cell)
        )


async def drop_platform_leftovers(
    settings: Any,
    kafka_admin: AIOKafkaAdminClient,
    mongo_client: AsyncMongoClient[dict[str, Any]],
    rabbitmq_admin: RabbitMQAdmin,
) -> None:
    """What metering and billing made for a test: the metering topics (each settings prefix has its
    own), the metering database, the system namespace's vhost and user."""
    if await rabbitmq_admin.vhost_exists(settings.system_namespace):
        await rabbitmq_admin.delete_vhost(settings.system_namespace)
    if await rabbitmq_admin.user_exists(tenant_user(settings.system_namespace)):
        await rabbitmq_admin.delete_user(tenant_user(settings.system_namespace))
    existing = set(await kafka_admin.list_topics())
    mine = [t for t in (settings.metering_topic, f"{settings.metering_topic}.dlq") if t in existing]
    if mine:
        await kafka_admin.delete_topics(mine)
    await drop_databases(mongo_client, settings.metering_database)


async def drop_databases(mongo_client: AsyncMongoClient[dict[str, Any]], *names: str) -> None:
    """Drop databases a test made. A test that restarted the database leaves this session's pool with
    connections the server closed; the first use of one fails (dropDatabase is not retried by the
    driver), the next gets a fresh connection."""
    for name in names:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(AutoReconnect),
            stop=stop_after_attempt(5),
            wait=wait_fixed(0.2),
            reraise=True,
        ):
            with attempt:
                await mongo_client.drop_database(name)
