"""The local stack's credentials: generated once by ``perdure stack up``, kept in
``<stack dir>/credentials.env`` (mode 0600: readable by the platform's user only),
read by the settings, which make them the platform's logins. Kafka (SASL/PLAIN), MongoDB (FerretDB
passes the login to PostgreSQL, which checks the password) and RabbitMQ (no ``guest``) refuse whoever
does not hold them: a namespace's worker never does."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from perdure.infra.settings import CREDENTIALS_FILE, Settings


@dataclass(frozen=True)
class StackCredentials:
    kafka_password: str
    mongodb_password: str
    rabbitmq_password: str

    @classmethod
    def ensure(cls, stack_dir: Path) -> StackCredentials:
        """The stack's credentials, made on first use."""
        stack_dir.mkdir(parents=True, exist_ok=True)
        # Others may pass through (PostgreSQL runs as its own user) but not list it; each service's
        # folder is its owner's alone.
        os.chmod(stack_dir, 0o711)
        path = stack_dir / CREDENTIALS_FILE
        values = _read(path)
        if not all(values.get(f"PERDURE_STACK_{name}_PASSWORD") for name in ("KAFKA", "MONGODB", "RABBITMQ")):
            values = {
                f"PERDURE_STACK_{name}_PASSWORD": secrets.token_urlsafe(24)
                for name in ("KAFKA", "MONGODB", "RABBITMQ")
            }
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as out:
                out.write("# Made by `perdure stack up`: the platform's passwords on the local stack.\n")
                out.writelines(f"{name}={value}\n" for name, value in values.items())
        os.chmod(path, 0o600)
        return cls(
            values["PERDURE_STACK_KAFKA_PASSWORD"],
            values["PERDURE_STACK_MONGODB_PASSWORD"],
            values["PERDURE_STACK_RABBITMQ_PASSWORD"],
        )


def _read(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    lines = [line for line in path.read_text().splitlines() if "=" in line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def stack_settings(settings: Settings) -> Settings:
    """``settings`` with the stack's logins (their passwords made now, on the stack's first start)."""
    credentials = StackCredentials.ensure(settings.stack_dir)
    explicit = settings.model_dump(exclude_unset=True)
    explicit.update(
        stack_kafka_password=credentials.kafka_password,
        stack_mongodb_password=credentials.mongodb_password,
        stack_rabbitmq_password=credentials.rabbitmq_password,
    )
    return type(settings)(**explicit)
