"""Readiness probes: each one asks a service to do real work, not merely to accept a TCP connection."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import httpx
from aiokafka import AIOKafkaClient
from pymongo import AsyncMongoClient

# The clients log every refused connection at ERROR; while probing, "not yet" is the expected answer.
for _noisy in ("aiokafka", "aio_pika", "aiormq"):
    logging.getLogger(_noisy).setLevel(logging.CRITICAL)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


async def kafka_metadata(kafka: dict[str, Any], timeout: float = 3.0) -> int:
    """A metadata request (``kafka``: a client's connection options); returns the number of brokers
    that answered."""
    client = AIOKafkaClient(**kafka, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        return len(client.cluster.brokers())
    finally:
        await client.close()


async def mongodb_ping(uri: str, timeout: float = 3.0) -> str:
    """A ``ping`` and ``buildInfo``; returns the server's reported version."""
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        uri, serverSelectionTimeoutMS=int(timeout * 1000), connectTimeoutMS=int(timeout * 1000)
    )
    try:
        await client.admin.command("ping")
        info = await client.admin.command("buildInfo")
        return str(info.get("version", "?"))
    finally:
        await client.close()


async def amqp_connect(url: str, timeout: float = 3.0) -> None:
    connection = await aio_pika.connect(url, timeout=timeout)
    await connection.close()


async def rabbitmq_management(url: str, timeout: float = 3.0) -> str:
    """``GET /api/overview``; returns the RabbitMQ version."""
    parts = urlsplit(url)
    auth = (parts.username or "guest", parts.password or "guest")
    base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}"
    async with httpx.AsyncClient(base_url=base, auth=auth, timeout=timeout) as http:
        response = await http.get("/api/overview")
        response.raise_for_status()
        return str(response.json().get("rabbitmq_version", "?"))
