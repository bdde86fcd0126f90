"""Perdure's configuration: one pydantic-settings model read from ``PERDURE_*`` variables.

Defaults point at the local stack (``perdure stack up``). Cells may override any endpoint through
``PERDURE_CELLS`` (JSON), e.g. ``{"cell-2": {"kafka_bootstrap_servers": "10.0.0.5:9092"}}``.
"""

from __future__ import annotations

import os
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings import SettingsError as SourceError

ENV_PREFIX = "PERDURE_"


class SettingsError(RuntimeError):
    """Raised at start-up when a ``PERDURE_*`` variable holds an invalid value."""


def _check_bootstrap_servers(value: str) -> str:
    servers = [s.strip() for s in value.split(",") if s.strip()]
    if not servers:
        raise ValueError("expected host:port[,host:port...]")
    for server in servers:
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{server!r} is not host:port with a port in 1..65535")
    return ",".join(servers)


def _check_url(value: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise ValueError(f"scheme must be one of {', '.join(schemes)}, got {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise ValueError("missing host")
    try:
        parts.port  # noqa: B018 - urlsplit validates the port lazily
    except ValueError as exc:
        raise ValueError(f"bad port: {exc}") from None
    return value


class Endpoints(BaseModel):
    """Where one cell (or the whole platform) finds its three services, with the platform's
    credentials (Kafka's SASL user; MongoDB's and RabbitMQ's ride in their URLs)."""

    model_config = ConfigDict(frozen=True)

    kafka_bootstrap_servers: str
    mongodb_uri: str
    rabbitmq_url: str
    rabbitmq_management_url: str
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None

    def kafka(self) -> dict[str, Any]:
        """The connection options of every Kafka client (producer, consumer, admin) of the platform."""
        options: dict[str, Any] = {"bootstrap_servers": self.kafka_bootstrap_servers}
        if self.kafka_sasl_username:
            options.update(
                security_protocol="SASL_PLAINTEXT",
                sasl_mechanism="PLAIN",
                sasl_plain_username=self.kafka_sasl_username,
                sasl_plain_password=self.kafka_sasl_password or "",
            )
        return options


class CellOverride(BaseModel):
    """Per-cell endpoint overrides; unset fields fall back to the platform defaults."""

    model_config = ConfigDict(extra="forbid")

    kafka_bootstrap_servers: str | None = None
    mongodb_uri: str | None = None
    rabbitmq_url: str | None = None
    rabbitmq_management_url: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _kafka(cls, v: str | None) -> str | None:
        return None if v is None else _check_bootstrap_servers(v)

    @field_validator("mongodb_uri")
    @classmethod
    def _mongo(cls, v: str | None) -> str | None:
        return None if v is None else _check_url(v, ("mongodb", "mongodb+srv"))

    @field_validator("rabbitmq_url")
    @classmethod
    def _amqp(cls, v: str | None) -> str | None:
        return None if v is None else _check_url(v, ("amqp", "amqps"))

    @field_validator("rabbitmq_management_url")
    @classmethod
    def _mgmt(cls, v: str | None) -> str | None:
        return None if v is None else _check_url(v, ("http", "https"))


def _default_stack_dir() -> Path:
    # In a checkout the stack lives beside pyproject.toml (git-ignored); an installed copy uses the
    # user's state folder instead of writing into site-packages.
    repo_root = Path(__file__).resolve().parent.parent
    if (repo_root / "pyproject.toml").is_file():
        return repo_root / ".stack"
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "perdure" / "stack"


CREDENTIALS_FILE = "credentials.env"
PLATFORM_USER = "perdure"


def _with_login(url: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{PLATFORM_USER}:{quote(password, safe='')}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, parts.fragment))


def credentials_file() -> Path:
    """Where the local stack keeps the credentials it generated (readable by the platform's user only)."""
    stack_dir = os.environ.get(f"{ENV_PREFIX}STACK_DIR")
    return (Path(stack_dir) if stack_dir else _default_stack_dir()) / CREDENTIALS_FILE


def _default_worker_python() -> Path:
    runtime = Path(__file__).resolve().parent.parent / ".venv-workers" / "bin" / "python"
    return runtime if runtime.exists() else Path(sys.executable)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The platform's credentials come from the local stack's file when it exists; variables win.
        stack_credentials = DotEnvSettingsSource(
            settings_cls, env_file=credentials_file(), env_prefix=ENV_PREFIX
        )
        return init_settings, env_settings, stack_credentials, file_secret_settings

    @model_validator(mode="before")
    @classmethod
    def _stack_logins(cls, data: Any) -> Any:
        """The local stack's passwords (its credentials file) become the platform's logins on its
        services, wherever the settings name none."""
        if not isinstance(data, dict):
            return data
        kafka, mongodb, rabbitmq = (
            data.get(f"stack_{name}_password") for name in ("kafka", "mongodb", "rabbitmq")
        )
        if kafka and not data.get("kafka_sasl_username"):
            data = {**data, "kafka_sasl_username": PLATFORM_USER, "kafka_sasl_password": kafka}
        if mongodb:
            uri = str(data.get("mongodb_uri", cls.model_fields["mongodb_uri"].default))
            if urlsplit(uri).username is None:
                uri = _with_login(uri, mongodb)
                data = {**data, "mongodb_uri": uri + ("&" if "?" in uri else "?") + "authMechanism=PLAIN"}
        if rabbitmq:
            for field in ("rabbitmq_url", "rabbitmq_management_url"):
                url = str(data.get(field, cls.model_fields[field].default))
                if urlsplit(url).username in (None, "guest"):
                    data = {**data, field: _with_login(url, rabbitmq)}
        return data

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # The platform's Kafka user (SASL/PLAIN); workers are never given it.
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    mongodb_uri: str = "mongodb://127.0.0.1:27017/"
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    rabbitmq_management_url: str = "http://guest:guest@127.0.0.1:15672/"
    cells: dict[str, CellOverride] = Field(default_factory=dict)

    # Databases are "<prefix>_control", "<prefix>_cell_<cell>", "<prefix>_metering".
    database_prefix: str = Field(default="perdure", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,30}$")

    # How long a dead cell process keeps its partitions before the group gives them to another.
    engine_session_timeout_ms: int = Field(default=10_000, ge=1_000, le=300_000)
    # Admission shares a cell fairly across namespaces; False makes it one FIFO (for comparisons).
    admission_fair: bool = True
    # A namespace with more runs than this refuses a visibility query that no index serves.
    visibility_max_unserved_runs: int = Field(default=10_000, ge=0)
    # How often each partition owner samples the storage of its runs (metered in GB-hours).
    storage_sample_seconds: int = Field(default=3600, ge=1, le=86_400)
    # The platform version a cell process starts as; rollouts move cells to other versions.
    platform_version: str = Field(default="0.1.0", min_length=1, max_length=100)
    # Usage records metering applies (and commits) at a time.
    metering_batch_records: int = Field(default=2_000, ge=1, le=20_000)
    # The control plane's own namespace: its workflows (the scheduled billing export, ...) and, in its
    # vhost, the ``billing`` exchange where exports are announced.
    system_namespace: str = Field(default="perdure-system", pattern=r"^[a-z][a-z0-9-]{0,62}$")
    # Where billing exports are written (by `perdure billing export` without --out, and the schedule).
    billing_export_dir: Path | None = None

    telemetry_exporter: Literal["none", "console", "otlp", "memory", "file"] = "none"
    otlp_endpoint: str = "http://127.0.0.1:4318"
    # For the "file" exporter: each process appends its spans, a JSON object a line, to a file of its
    # own in this folder (bench/hops.py reads them back into a per-hop profile).
    telemetry_dir: Path | None = None
    service_name: str = "perdure"

    stack_dir: Path = Field(default_factory=_default_stack_dir)
    # The interpreter of platform-hosted workers: one their sandbox users may run (scripts/bootstrap makes
    # it from the system's Python, as the platform's may live where they cannot reach).
    worker_python: Path = Field(default_factory=_default_worker_python)
    # A platform-hosted worker with nothing to do for this long ends (scale to zero); the supervisor
    # starts it again when tasks wait for it. 0 keeps workers running.
    worker_idle_seconds: float = Field(default=300.0, ge=0)
    # How long an engine batch waits for the workflow tasks it sent (so a step costs one batch, not
    # two); 0 sends them without waiting. A slower answer goes through Kafka.
    inline_decision_ms: int = Field(default=50, ge=0, le=1000)
    # Whether a cell process's report relay hands reports of the partitions its own engine owns straight
    # to it (acknowledged once written) rather than through Kafka: a Kafka round trip less per activity.
    report_handoff: bool = True
    # The local stack's FerretDB backend. PostgreSQL by default: measured here, FerretDB v1 on SQLite scans
    # the whole collection for every statement (even by _id) and cannot keep up with a cell.
    stack_mongodb_backend: Literal["postgresql", "sqlite"] = "postgresql"
    stack_postgres_port: int = Field(default=5433, ge=1, le=65535)
    # The local stack's generated passwords (from its credentials file; never printed).
    stack_kafka_password: str | None = Field(default=None, repr=False)
    stack_mongodb_password: str | None = Field(default=None, repr=False)
    stack_rabbitmq_password: str | None = Field(default=None, repr=False)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Lines for a person by default; one JSON object per line for a log pipeline (or a test reading them).
    log_format: Literal["text", "json"] = "text"
    # How long a process (cell, metering, worker) may take to stop after SIGTERM: work in flight
    # finishes or goes back to its queue within it; past it the process ends anyway, saying what it
    # abandoned.
    shutdown_seconds: float = Field(default=30.0, gt=0, le=3600)

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _kafka(cls, v: str) -> str:
        return _check_bootstrap_servers(v)

    @field_validator("mongodb_uri")
    @classmethod
    def _mongo(cls, v: str) -> str:
        return _check_url(v, ("mongodb", "mongodb+srv"))

    @field_validator("rabbitmq_url")
    @classmethod
    def _amqp(cls, v: str) -> str:
        return _check_url(v, ("amqp", "amqps"))

    @field_validator("rabbitmq_management_url", "otlp_endpoint")
    @classmethod
    def _http(cls, v: str) -> str:
        return _check_url(v, ("http", "https"))

    @property
    def control_database(self) -> str:
        return f"{self.database_prefix}_control"

    @property
    def export_dir(self) -> Path:
        return self.billing_export_dir or self.stack_dir / "billing-exports"

    @property
    def metering_database(self) -> str:
        return f"{self.database_prefix}_metering"

    @property
    def metering_topic(self) -> str:
        """The global topic of usage records ("perdure.metering" by default)."""
        return f"{self.database_prefix}.metering"

    def cell_database(self, cell: str) -> str:
        return f"{self.database_prefix}_cell_{cell.replace('-', '_')}"

    def endpoints(self, cell: str | None = None) -> Endpoints:
        """The endpoints a cell uses: its overrides over the platform defaults."""
        override = self.cells.get(cell) if cell else None
        base: dict[str, str | None] = {
            "kafka_sasl_username": self.kafka_sasl_username,
            "kafka_sasl_password": self.kafka_sasl_password,
            "kafka_bootstrap_servers": self.kafka_bootstrap_servers,
            "mongodb_uri": self.mongodb_uri,
            "rabbitmq_url": self.rabbitmq_url,
            "rabbitmq_management_url": self.rabbitmq_management_url,
        }
        if override is not None:
            base.update(override.model_dump(exclude_none=True))
        return Endpoints.model_validate(base)


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        variable = ENV_PREFIX + loc[0].upper() if loc else ENV_PREFIX + "?"
        detail = ".".join(loc[1:])
        where = f"{variable} ({detail})" if detail else variable
        lines.append(f"{where}: {item['msg']}")
    return "invalid settings:\n  " + "\n  ".join(lines)


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning validation errors into one message naming each variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    except SourceError as exc:
        # Raised before validation when a complex value (PERDURE_CELLS) is not valid JSON.
        match = re.search(r'field "(\w+)"', str(exc))
        variable = ENV_PREFIX + (match.group(1).upper() if match else "?")
        raise SettingsError(
            f"invalid settings:\n  {variable}: not valid JSON ({exc.__cause__ or exc})"
        ) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
