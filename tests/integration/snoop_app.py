"""A hostile tenant's app: its workflow and its activity try to reach what only the platform may, and
report each attempt's outcome (what was refused, and how) instead of failing."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from typing import Any

import aio_pika
import httpx
from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient

from perdure.tenants import App, workflow

app = App("snoop")
SECRET_WORDS = ("PASSWORD", "MONGODB", "KAFKA", "RABBITMQ", "SASL", "SECRET")


def _suspicious_environment() -> list[str]:
    return sorted(name for name in os.environ if any(word in name.upper() for word in SECRET_WORDS))


def _read(path: str) -> str:
    try:
        with open(path) as source:
            return "read: " + source.read(200)
    except Exception as exc:
        return f"refused: {type(exc).__name__}"


async def _attempt(what: Any) -> str:
    try:
        result = await asyncio.wait_for(what, 10)
    except Exception as exc:
        return f"refused: {type(exc).__name__}: {str(exc)[:200]}"
    return f"succeeded: {str(result)[:300]}"


async def _mongodb(uri: str, database: str) -> Any:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=3000)
    try:
        names = await client.list_database_names()
        documents = await client[database]["history"].find({}).to_list(5)
        return {"databases": names, "documents": documents}
    finally:
        await client.close()


async def _kafka(topic: str) -> Any:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9092", request_timeout_ms=3000)
    try:
        await producer.start()
        return await producer.send_and_wait(topic, b'{"forged": true}', key=b"victim/anything")
    finally:
        await producer.stop()


async def _amqp(url: str) -> Any:
    connection = await aio_pika.connect(url, timeout=3)
    await connection.close()
    return "connected"


async def _management(user: str, password: str) -> Any:
    async with httpx.AsyncClient(timeout=3) as http:
        response = await http.get("http://127.0.0.1:15672/api/vhosts", auth=(user, password))
        response.raise_for_status()
        return response.text


@app.activity
def snoop(targets: dict[str, str]) -> dict[str, Any]:
    return asyncio.run(_snoop(targets))  # a thread of the worker: a loop of its own


async def _snoop(targets: dict[str, str]) -> dict[str, Any]:
    """``targets``: what a tenant could guess of the platform (paths, names of databases and topics)."""
    return {
        "environment": _suspicious_environment(),
        "environment_values": "\n".join(os.environ.values()),
        "mongodb_default": await _attempt(_mongodb("mongodb://127.0.0.1:27017/", targets["database"])),
        "mongodb_as_platform": await _attempt(
            _mongodb("mongodb://perdure:perdure@127.0.0.1:27017/?authMechanism=PLAIN", targets["database"])
        ),
        "kafka": await _attempt(_kafka(targets["topic"])),
        "amqp_guest": await _attempt(_amqp("amqp://guest:guest@127.0.0.1:5672/")),
        "amqp_victim_vhost": await _attempt(
            _amqp(f"amqp://guest:guest@127.0.0.1:5672/{targets['victim_vhost']}")
        ),
        "management_guest": await _attempt(_management("guest", "guest")),
        "management_platform_user": await _attempt(_management("perdure", "perdure")),
        "credentials_file": _read(targets["credentials"]),
        "stack_listing": _listing(targets["stack"]),
        "victim_files": _read(targets["victim_file"]),
        "victim_listing": _listing(os.path.dirname(targets["victim_file"])),
    }


def _listing(path: str) -> str:
    try:
        return "listed: " + ", ".join(sorted(os.listdir(path)))
    except Exception as exc:
        return f"refused: {type(exc).__name__}"


@app.activity
def leave_a_file(name: str) -> str:
    """The victim's side: a file in its worker's private folder."""
    path = os.path.join(os.environ.get("HOME", "."), name)
    with open(path, "w") as out:
        out.write("the victim's private notes")
    return os.path.abspath(path)


@app.workflow
class Snoop:
    @workflow.run
    async def run(self, targets: dict[str, str]) -> dict[str, Any]:
        in_workflow = {
            "environment": _suspicious_environment(),
            "credentials_file": _read(targets["credentials"]),
        }
        from_activity: dict[str, Any] = await workflow.execute_activity(
            snoop, targets, start_to_close_timeout=timedelta(seconds=60)
        )
        return {"workflow": in_workflow, "activity": from_activity}


@app.workflow
class LeaveAFile:
    @workflow.run
    async def run(self, name: str) -> str:
        path: str = await workflow.execute_activity(
            leave_a_file, name, start_to_close_timeout=timedelta(seconds=30)
        )
        return path
