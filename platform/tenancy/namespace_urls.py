"""How a namespace is reached on its cell's broker: its vhost's URL, and its tenant user's name."""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from perdure.infra.settings import Settings


def namespace_amqp_url(settings: Settings, cell: str, vhost: str) -> str:
    """The platform's own AMQP URL, moved to a namespace's vhost."""
    parts = urlsplit(settings.endpoints(cell).rabbitmq_url)
    netloc = parts.netloc
    return f"{parts.scheme}://{netloc}/{quote(vhost, safe='')}"


def tenant_user(namespace: str) -> str:
    return f"ns-{namespace}"
