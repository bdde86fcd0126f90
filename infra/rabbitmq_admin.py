"""RabbitMQ's management HTTP API: vhosts, users, permissions and policies (idempotent calls)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from perdure.infra.settings import Settings


class RabbitMQAdminError(RuntimeError):
    pass


def _segment(name: str) -> str:
    # Vhost and user names go into the URL path; "/" (the default vhost) must be encoded too.
    return quote(name, safe="")


class RabbitMQAdmin:
    def __init__(self, management_url: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(management_url)
        base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}{parts.path.rstrip('/')}/api"
        self._http = httpx.AsyncClient(
            base_url=base, auth=(parts.username or "guest", parts.password or "guest"), timeout=timeout
        )

    async def __aenter__(self) -> RabbitMQAdmin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        response = await self._http.request(method, path, json=body)
        if response.status_code >= 400 and not (method == "DELETE" and response.status_code == 404):
            raise RabbitMQAdminError(f"{method} {path}: HTTP {response.status_code} {response.text[:300]}")
        return response

    async def create_vhost(self, vhost: str) -> None:
        await self._call("PUT", f"/vhosts/{_segment(vhost)}", {})

    async def delete_vhost(self, vhost: str) -> None:
        await self._call("DELETE", f"/vhosts/{_segment(vhost)}")

    async def vhost_exists(self, vhost: str) -> bool:
        response = await self._http.get(f"/vhosts/{_segment(vhost)}")
        return response.status_code == 200

    async def create_user(self, user: str, password: str, tags: str = "") -> None:
        await self._call("PUT", f"/users/{_segment(user)}", {"password": password, "tags": tags})

    async def create_user_from_hash(self, user: str, password_hash: str, tags: str = "") -> None:
        body = {
            "password_hash": password_hash,
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": tags,
        }
        await self._call("PUT", f"/users/{_segment(user)}", body)

    async def queue_depth(self, vhost: str, queue: str) -> tuple[int, int]:
        """Messages ready and unacknowledged (as of the broker's last statistics, a few seconds old)."""
        response = await self._call("GET", f"/queues/{_segment(vhost)}/{_segment(queue)}")
        body = response.json()
        return int(body.get("messages_ready", 0)), int(body.get("messages_unacknowledged", 0))

    async def queues(self, vhost: str) -> list[str]:
        """The names of the vhost's queues."""
        response = await self._call("GET", f"/queues/{_segment(vhost)}?columns=name")
        return [str(queue["name"]) for queue in response.json()]

    async def delete_user(self, user: str) -> None:
        await self._call("DELETE", f"/users/{_segment(user)}")

    async def user_exists(self, user: str) -> bool:
        response = await self._http.get(f"/users/{_segment(user)}")
        return response.status_code == 200

    async def set_permissions(
        self, vhost: str, user: str, *, configure: str = ".*", write: str = ".*", read: str = ".*"
    ) -> None:
        await self._call(
            "PUT",
            f"/permissions/{_segment(vhost)}/{_segment(user)}",
            {"configure": configure, "write": write, "read": read},
        )

    async def set_policy(
        self, vhost: str, name: str, pattern: str, definition: dict[str, Any], *, apply_to: str = "queues"
    ) -> None:
        await self._call(
            "PUT",
            f"/policies/{_segment(vhost)}/{_segment(name)}",
            {"pattern": pattern, "definition": definition, "apply-to": apply_to, "priority": 0},
        )


def rabbitmq_admin(settings: Settings, cell: str | None = None) -> RabbitMQAdmin:
    """The management API of a cell's broker (the platform's default one without a cell)."""
    return RabbitMQAdmin(settings.endpoints(cell).rabbitmq_management_url)
