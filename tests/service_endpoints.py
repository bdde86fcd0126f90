"""How the test session finds real services, in order:

1. the settings (``PERDURE_*``) already point at services that answer — use them
   (with ``PERDURE_TEST_SERVICES=reuse``, only this: a service that is down fails the tests);
2. a Docker engine is reachable — start them with testcontainers;
3. otherwise — ``perdure stack up`` (the project's local stack).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import Iterator

from perdure.infra.local import probes
from perdure.infra.local.stack import LocalStack
from perdure.infra.settings import Endpoints, Settings


async def _not_serving(endpoints: Endpoints) -> list[str]:
    checks = {
        f"kafka at {endpoints.kafka_bootstrap_servers}": probes.kafka_metadata(
            endpoints.kafka(), timeout=2.0
        ),
        "mongodb": probes.mongodb_ping(endpoints.mongodb_uri, timeout=2.0),
        "rabbitmq (amqp)": probes.amqp_connect(endpoints.rabbitmq_url, timeout=2.0),
        "rabbitmq (management)": probes.rabbitmq_management(endpoints.rabbitmq_management_url, timeout=2.0),
    }
    results = await asyncio.gather(*checks.values(), return_exceptions=True)
    return [name for name, r in zip(checks, results, strict=True) if isinstance(r, BaseException)]


async def _all_serve(endpoints: Endpoints) -> bool:
    return not await _not_serving(endpoints)


def _docker_reachable() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


@contextlib.contextmanager
def _containers() -> Iterator[Endpoints]:
    from testcontainers.community.kafka import KafkaContainer
    from testcontainers.core.container import DockerContainer
    from testcontainers.mongodb import MongoDbContainer

    with contextlib.ExitStack() as stack:
        kafka = stack.enter_context(KafkaContainer("confluentinc/cp-kafka:7.9.0").with_kraft())
        mongo = stack.enter_context(MongoDbContainer("mongo:7.0"))
        rabbit = stack.enter_context(
            DockerContainer("rabbitmq:3.13-management").with_exposed_ports(5672, 15672)
        )
        host = rabbit.get_container_host_ip()
        endpoints = Endpoints(
            kafka_bootstrap_servers=kafka.get_bootstrap_server(),
            mongodb_uri=mongo.get_connection_url(),
            rabbitmq_url=f"amqp://guest:guest@{host}:{rabbit.get_exposed_port(5672)}/",
            rabbitmq_management_url=f"http://guest:guest@{host}:{rabbit.get_exposed_port(15672)}/",
        )

        async def _wait() -> None:
            async with asyncio.timeout(120):
                while not await _all_serve(endpoints):  # noqa: ASYNC110 - external services send no event
                    await asyncio.sleep(0.5)

        asyncio.run(_wait())
        yield endpoints


@contextlib.contextmanager
def resolve_services(settings: Settings) -> Iterator[Endpoints]:
    """``PERDURE_TEST_SERVICES=reuse`` uses only what the settings point at and fails if it is down."""
    endpoints = settings.endpoints()
    down = asyncio.run(_not_serving(endpoints))
    if not down:
        yield endpoints
    elif os.environ.get("PERDURE_TEST_SERVICES", "auto") == "reuse":
        raise RuntimeError(f"PERDURE_TEST_SERVICES=reuse, but these do not answer: {', '.join(down)}")
    elif _docker_reachable():
        with _containers() as started:
            yield started
    else:
        stack = LocalStack(settings)
        # Test sessions side by side (pytest-xdist's workers) start the stack once: one holds the lock
        # while it starts it, the others then find it up.
        settings.stack_dir.mkdir(parents=True, exist_ok=True)
        with (settings.stack_dir / ".starting.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            asyncio.run(stack.up())
        yield stack.settings.endpoints()  # with the logins the stack made on its first start
