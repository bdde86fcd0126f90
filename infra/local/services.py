"""The four services of the local stack, each installed from a package registry and run as a process.

- Kafka: Apache Kafka's jars resolved by Maven (``kafka/pom.xml``), KRaft combined mode.
- PostgreSQL: Debian's ``postgresql`` server, FerretDB's storage.
- FerretDB v1: built by Go from ``ferretdb/`` (embeds FerretDB's library), on PostgreSQL by default
  (SQLite on request, ``PERDURE_STACK_MONGODB_BACKEND=sqlite``).
- RabbitMQ: Debian's ``rabbitmq-server`` with the management plugin.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika

from perdure.infra.local import probes
from perdure.infra.local.processes import ManagedProcess, tail
from perdure.infra.settings import PLATFORM_USER, Settings

# What `perdure stack up` tells as it goes (installs take minutes the first time).
progress = logging.getLogger("perdure.stack")

SOURCES = Path(__file__).resolve().parent
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


class StackError(RuntimeError):
    """A problem the operator must fix; the message says what and how."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def _fingerprint(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def kafka_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A KRaft cluster id as Kafka makes them: URL-safe base64 of 16 random bytes, never starting with
    ``-`` (the storage tool would read such an id as an option; Kafka's own ``Uuid.randomUuid`` draws
    again in that case, and so does this)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(random_bytes()).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _require_tool(tool: str, hint: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise StackError(f"`{tool}` not found on PATH: {hint}")
    return found


def _run_install_step(
    argv: list[str], *, cwd: Path, log: Path, what: str, env: dict[str, str] | None = None
) -> None:
    progress.info("%s (output in %s)", what, log)
    began = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        result = subprocess.run(
            argv,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            check=False,
        )
    if result.returncode != 0:
        raise StackError(f"{what} failed (exit {result.returncode}); last lines of {log}:\n{tail(log, 25)}")
    progress.info("%s: done in %.0f s", what, time.monotonic() - began)


_PUSHDOWN = "perdure_pushdown.go"

# (file in FerretDB's postgresql backend, text to find exactly once, its replacement)
_FERRETDB_EDITS = [
    (
        "query.go",
        "\t\tswitch v := rootVal.(type) {\n",
        "\t\tif filter, arg, ok := perdurePushdown(p, rootKey, rootVal); ok {\n"
        "\t\t\tfilters = append(filters, filter)\n"
        "\t\t\targs = append(args, arg)\n"
        "\t\t\tcontinue\n"
        "\t\t}\n\n"
        "\t\tswitch v := rootVal.(type) {\n",
    ),
    (
        "metadata/registry.go",
        '\t\tq += "INDEX %s ON %s (%s)"\n',
        "\t\tif index.Unique {\n"
        '\t\t\tq += "INDEX %s ON %s (%s)"\n'
        "\t\t} else {\n"
        '\t\t\tq += "INDEX %s ON %s USING gin (%s)"\n'
        "\t\t}\n",
    ),
    (
        "metadata/registry.go",
        "\t\t\tif key.Descending {\n",
        "\t\t\tif key.Descending && index.Unique {\n",
    ),
]


def _patch_ferretdb(module: Path) -> None:
    """Make FerretDB's postgresql backend serve equality filters from indexes (see patch/README.md)."""
    package = module / "internal" / "backends" / "postgresql"
    for path in [module, *module.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)  # the module cache is read-only
    for name, anchor, replacement in _FERRETDB_EDITS:
        source = package / name
        text = source.read_text()
        if text.count(anchor) != 1:
            raise StackError(f"FerretDB's {name} changed: the local stack's patch no longer applies")
        source.write_text(text.replace(anchor, replacement))
    shutil.copy(SOURCES / "ferretdb" / "patch" / _PUSHDOWN, package / _PUSHDOWN)


class LocalService(ABC):
    name: str
    cmdline_marker: str

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.stack_dir / self.name
        self.process = ManagedProcess(
            name=self.name,
            pid_file=self.home / f"{self.name}.pid",
            log_file=self.home / f"{self.name}.log",
            cmdline_marker=self.cmdline_marker,
        )

    @property
    @abstractmethod
    def addresses(self) -> list[Address]:
        """Every TCP address the service listens on."""

    @abstractmethod
    def missing_tools(self) -> list[str]:
        """What must be installed on the machine first, each with the command to install it."""

    @abstractmethod
    def installed(self) -> bool: ...

    @abstractmethod
    def install(self) -> None: ...

    @abstractmethod
    def launch(self) -> None: ...

    @abstractmethod
    async def probe(self) -> str:
        """Ask the service to do real work; return its version. Raises while it is not serving."""

    @property
    def install_log(self) -> Path:
        return self.home / "install.log"

    def log_files(self) -> list[Path]:
        return [self.process.log_file]

    def check_local(self) -> None:
        for address in self.addresses:
            if address.host not in LOCAL_HOSTS:
                raise StackError(
                    f"{self.name}: the local stack only runs on 127.0.0.1, but the settings point at "
                    f"{address}; unset the override or start that service yourself"
                )


def _host_port(server: str) -> Address:
    host, _, port = server.rpartition(":")
    return Address(host, int(port))


def _url_address(url: str, default_port: int) -> Address:
    parts = urlsplit(url)
    return Address(parts.hostname or "127.0.0.1", parts.port or default_port)


class KafkaService(LocalService):
    name = "kafka"
    cmdline_marker = "kafka.Kafka"

    @property
    def broker(self) -> Address:
        return _host_port(self.settings.kafka_bootstrap_servers.split(",")[0])

    @property
    def controller(self) -> Address:
        return Address(self.broker.host, self.broker.port + 1)

    @property
    def addresses(self) -> list[Address]:
        return [self.broker, self.controller]

    @property
    def pom(self) -> Path:
        return SOURCES / "kafka" / "pom.xml"

    @property
    def libs(self) -> Path:
        return self.home / "libs"

    @property
    def version(self) -> str:
        match = re.search(r"<kafka.version>([^<]+)</kafka.version>", self.pom.read_text())
        return match.group(1) if match else "?"

    def missing_tools(self) -> list[str]:
        missing = []
        if shutil.which("java") is None:
            missing.append("a Java 17+ runtime for Kafka: apt-get install openjdk-17-jre-headless")
        if not self.installed() and shutil.which("mvn") is None:
            missing.append("Maven to resolve Kafka's jars: apt-get install maven")
        return missing

    def installed(self) -> bool:
        marker = self.libs / ".fingerprint"
        return marker.is_file() and marker.read_text() == _fingerprint(self.pom)

    def install(self) -> None:
        mvn = _require_tool("mvn", "apt-get install maven")
        staging = self.home / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        _run_install_step(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(self.pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ],
            cwd=self.home,
            log=self.install_log,
            what="resolving Kafka's jars with Maven",
        )
        (staging / ".fingerprint").write_text(_fingerprint(self.pom))
        shutil.rmtree(self.libs, ignore_errors=True)
        staging.rename(self.libs)

    def _listeners(self) -> list[str]:
        """Every listener, the controller's too, asks for the platform's SASL login: a process on this
        machine without it (a tenant's worker) can neither produce nor read."""
        password = self.settings.stack_kafka_password
        if not password:
            return [
                f"listeners=PLAINTEXT://{self.broker},CONTROLLER://{self.controller}",
                f"advertised.listeners=PLAINTEXT://{self.broker}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            ]
        login = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{PLATFORM_USER}" password="{password}" user_{PLATFORM_USER}="{password}";'
        )
        return [
            f"listeners=SASL_PLAINTEXT://{self.broker},CONTROLLER://{self.controller}",
            f"advertised.listeners=SASL_PLAINTEXT://{self.broker}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=SASL_PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            "sasl.enabled.mechanisms=PLAIN",
            "sasl.mechanism.inter.broker.protocol=PLAIN",
            "sasl.mechanism.controller.protocol=PLAIN",
            f"listener.name.sasl_plaintext.plain.sasl.jaas.config={login}",
            f"listener.name.controller.plain.sasl.jaas.config={login}",
        ]

    def _write_config(self) -> Path:
        data = self.home / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.home / "server.properties"
        config.touch(mode=0o600)
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers={self.controller}",
                    *self._listeners(),
                    f"log.dirs={data}",
                    "num.partitions=1",
                    "auto.create.topics.enable=false",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=10",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "log.retention.hours=168",
                    "",
                ]
            )
        )
        (self.home / "log4j2.properties").write_text(
            "\n".join(
                [
                    "rootLogger.level = WARN",
                    "rootLogger.appenderRef.stdout.ref = STDOUT",
                    "appender.stdout.type = Console",
                    "appender.stdout.name = STDOUT",
                    "appender.stdout.layout.type = PatternLayout",
                    "appender.stdout.layout.pattern = [%d] %p %m (%c)%n",
                    "logger.kafka.name = kafka",
                    "logger.kafka.level = INFO",
                    "",
                ]
            )
        )
        return config

    def launch(self) -> None:
        java = _require_tool("java", "apt-get install openjdk-17-jre-headless")
        config = self._write_config()
        classpath = f"{self.libs}/*"
        if not (self.home / "data" / "meta.properties").exists():
            cluster_id = kafka_cluster_id()
            _run_install_step(
                [
                    java,
                    "-cp",
                    classpath,
                    "kafka.tools.StorageTool",
                    "format",
                    "--standalone",
                    "-t",
                    cluster_id,
                    "-c",
                    str(config),
                ],
                cwd=self.home,
                log=self.process.log_file,
                what="formatting Kafka's KRaft storage",
            )
        self.process.start(
            [
                java,
                "-Xms256m",
                "-Xmx512m",
                "-XX:+UseG1GC",
                f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
                "-cp",
                classpath,
                "kafka.Kafka",
                str(config),
            ],
            cwd=self.home,
        )

    async def probe(self) -> str:
        await probes.kafka_metadata(self.settings.endpoints().kafka(), timeout=2.0)
        return self.version


class FerretDBService(LocalService):
    name = "mongodb"
    cmdline_marker = "perdure-ferretdb"

    @property
    def address(self) -> Address:
        return _url_address(self.settings.mongodb_uri, 27017)

    @property
    def addresses(self) -> list[Address]:
        return [self.address]

    @property
    def sources(self) -> list[Path]:
        folder = SOURCES / "ferretdb"
        return [folder / "main.go", folder / "go.mod", folder / "go.sum", folder / "patch" / _PUSHDOWN]

    @property
    def binary(self) -> Path:
        return self.home / "bin" / "perdure-ferretdb"

    @property
    def version(self) -> str:
        match = re.search(
            r"github.com/FerretDB/FerretDB (v[^\s]+)", (SOURCES / "ferretdb" / "go.mod").read_text()
        )
        return f"FerretDB {match.group(1) if match else '?'}"

    def missing_tools(self) -> list[str]:
        if not self.installed() and shutil.which("go") is None:
            return [
                "a Go toolchain to build FerretDB: apt-get install golang-go (GOTOOLCHAIN=auto fetches newer)"
            ]
        return []

    def installed(self) -> bool:
        marker = self.home / "bin" / ".fingerprint"
        return self.binary.is_file() and marker.is_file() and marker.read_text() == self._build_fingerprint()

    def _build_fingerprint(self) -> str:
        edits = hashlib.sha256(repr(_FERRETDB_EDITS).encode()).hexdigest()[:16]
        return f"{_fingerprint(*self.sources)}-{edits}"

    def install(self) -> None:
        go = _require_tool("go", "apt-get install golang-go")
        env = {"GOTOOLCHAIN": os.environ.get("GOTOOLCHAIN", "auto"), "CGO_ENABLED": "0"}
        build = self.home / "build"
        shutil.rmtree(build, ignore_errors=True)
        command = build / "command"
        command.mkdir(parents=True)
        for name in ("main.go", "go.mod", "go.sum"):
            shutil.copy(SOURCES / "ferretdb" / name, command / name)
        module = self._download_module(go, env)
        patched = build / "FerretDB"
        shutil.copytree(module, patched)
        _patch_ferretdb(patched)
        with (command / "go.mod").open("a") as go_mod:
            go_mod.write("\nreplace github.com/FerretDB/FerretDB => ../FerretDB\n")
        self.binary.parent.mkdir(parents=True, exist_ok=True)
        _run_install_step(
            [go, "build", "-trimpath", "-o", str(self.binary), "."],
            cwd=command,
            log=self.install_log,
            what="building FerretDB with Go",
            env=env,
        )
        (self.home / "bin" / ".fingerprint").write_text(self._build_fingerprint())

    def _download_module(self, go: str, env: dict[str, str]) -> Path:
        """The unpacked FerretDB module the build patches (from the Go module proxy, cached by Go)."""
        version = self.version.removeprefix("FerretDB ")
        self.install_log.parent.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [go, "mod", "download", "-json", f"github.com/FerretDB/FerretDB@{version}"],
            cwd=SOURCES / "ferretdb",
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"downloading FerretDB {version} failed: {result.stdout}{result.stderr}")
        return Path(json.loads(result.stdout)["Dir"])

    def launch(self) -> None:
        data = self.home / "data"
        data.mkdir(parents=True, exist_ok=True)
        if self.settings.stack_mongodb_backend == "postgresql":
            backend = [
                "-handler",
                "postgresql",
                "-postgresql-url",
                PostgresService(self.settings).ferretdb_url,
            ]
        else:
            backend = ["-handler", "sqlite", "-sqlite-url", f"file:{data}/"]
        self.process.start(
            [
                str(self.binary),
                "-listen-addr",
                str(self.address),
                *backend,
                "-log-level",
                "error",
            ],
            cwd=self.home,
        )

    async def probe(self) -> str:
        wire = await probes.mongodb_ping(self.settings.mongodb_uri, timeout=2.0)
        return f"{self.version} on {self.settings.stack_mongodb_backend} (MongoDB wire {wire})"


RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
EPMD_PORT = 4369


class RabbitMQService(LocalService):
    name = "rabbitmq"
    cmdline_marker = "rabbit"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        # Erlang's port mapper is a separate daemon; we run our own unless one already serves.
        self.epmd = ManagedProcess(
            name="epmd",
            pid_file=self.home / "epmd.pid",
            log_file=self.home / "epmd.log",
            cmdline_marker="epmd",
        )

    @property
    def amqp(self) -> Address:
        return _url_address(self.settings.rabbitmq_url, 5672)

    @property
    def management(self) -> Address:
        return _url_address(self.settings.rabbitmq_management_url, 15672)

    @property
    def addresses(self) -> list[Address]:
        return [self.amqp, self.management]

    def missing_tools(self) -> list[str]:
        if not RABBITMQ_SERVER.exists() or shutil.which("epmd") is None:
            return ["RabbitMQ: apt-get install rabbitmq-server"]
        return []

    def installed(self) -> bool:
        return RABBITMQ_SERVER.exists()

    def install(self) -> None:
        raise StackError("RabbitMQ comes from Debian: apt-get install rabbitmq-server")

    @property
    def nodename(self) -> str:
        return "perdure@localhost"

    def environment(self) -> dict[str, str]:
        return {
            "HOME": str(self.home / "home"),
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_MNESIA_BASE": str(self.home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.home / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.home / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.home / "rabbitmq.conf"),
            "RABBITMQ_PID_FILE": str(self.home / "beam.pid"),
        }

    def launch(self) -> None:
        for sub in ("home", "mnesia", "log"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        (self.home / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (self.home / "rabbitmq.conf").touch(mode=0o600)
        (self.home / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    f"listeners.tcp.default = {self.amqp}",
                    # No guest: the platform's user, with the stack's generated password.
                    f"default_user = {PLATFORM_USER}",
                    f"default_pass = {self.settings.stack_rabbitmq_password or 'guest'}",
                    "default_user_tags.administrator = true",
                    f"management.tcp.ip = {self.management.host}",
                    f"management.tcp.port = {self.management.port}",
                    "log.console = true",
                    "log.console.level = warning",
                    "log.file.level = info",
                    "",
                ]
            )
        )
        if not probes.port_in_use("127.0.0.1", EPMD_PORT) and not self.epmd.running():
            epmd = _require_tool("epmd", "apt-get install rabbitmq-server")
            self.epmd.start([epmd], cwd=self.home)
        self.process.start([str(RABBITMQ_SERVER)], cwd=self.home, env=self.environment())

    def log_files(self) -> list[Path]:
        return [self.process.log_file, self.home / "log" / f"{self.nodename}.log"]

    async def probe(self) -> str:
        try:
            await probes.amqp_connect(self.settings.rabbitmq_url, timeout=2.0)
        except aio_pika.exceptions.ProbableAuthenticationError:
            await self._ensure_platform_user()  # a node made before the stack had credentials
            raise
        return await probes.rabbitmq_management(self.settings.rabbitmq_management_url, timeout=2.0)

    async def _ensure_platform_user(self) -> None:
        """The platform's user with the stack's password, and no ``guest``."""
        password = self.settings.stack_rabbitmq_password
        if not password:
            return
        ctl = str(RABBITMQ_SERVER.parent / "rabbitmqctl")
        env = {**os.environ, **self.environment()}
        for argv in (
            ["add_user", PLATFORM_USER, password],
            ["change_password", PLATFORM_USER, password],
            ["set_user_tags", PLATFORM_USER, "administrator"],
            ["set_permissions", "-p", "/", PLATFORM_USER, ".*", ".*", ".*"],
            ["delete_user", "guest"],
        ):
            process = await asyncio.create_subprocess_exec(
                ctl,
                "-n",
                self.nodename,
                *argv,
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await process.wait()

    def stop_helpers(self) -> None:
        self.epmd.stop(timeout=5)


POSTGRES_ROOT = Path("/usr/lib/postgresql")
FERRETDB_DATABASE = "ferretdb"


def _postgres_bin(tool: str) -> Path | None:
    versions = sorted(
        (p for p in POSTGRES_ROOT.glob("*/bin") if p.parent.name.isdigit()), key=lambda p: int(p.parent.name)
    )
    for folder in reversed(versions):
        if (folder / tool).exists():
            return folder / tool
    return None


class PostgresService(LocalService):
    """PostgreSQL from Debian, the storage under FerretDB (run as the ``postgres`` user when root)."""

    name = "postgres"
    cmdline_marker = "postgres"

    @property
    def address(self) -> Address:
        return Address("127.0.0.1", self.settings.stack_postgres_port)

    @property
    def addresses(self) -> list[Address]:
        return [self.address]

    @property
    def ferretdb_url(self) -> str:
        # No user: a MongoDB client must log in, and FerretDB logs in to PostgreSQL as that client.
        return f"postgres://{self.address}/{FERRETDB_DATABASE}"

    def missing_tools(self) -> list[str]:
        if _postgres_bin("postgres") is None or _postgres_bin("initdb") is None:
            return ["PostgreSQL for FerretDB: apt-get install postgresql"]
        return []

    def installed(self) -> bool:
        return _postgres_bin("postgres") is not None

    def install(self) -> None:
        raise StackError("PostgreSQL comes from Debian: apt-get install postgresql")

    def _as_owner(self, argv: list[str]) -> list[str]:
        # PostgreSQL refuses to run as root.
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def launch(self) -> None:
        data = self.home / "data"
        sockets = self.home / "sockets"
        for folder in (self.home, sockets):
            folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.home, "postgres")
            shutil.chown(sockets, "postgres")
        initdb, postgres = _postgres_bin("initdb"), _postgres_bin("postgres")
        assert initdb is not None and postgres is not None
        if not (data / "PG_VERSION").exists():
            _run_install_step(
                self._as_owner([str(initdb), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]),
                cwd=self.home,
                log=self.install_log,
                what="initialising PostgreSQL's data folder",
            )
        # Over TCP every role needs its password; the superuser only reaches it through the socket
        # folder, which only PostgreSQL's own user (and root) may enter.
        (data / "pg_hba.conf").write_text(
            "local all postgres trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host all all ::1/128 scram-sha-256\n"
        )
        os.chmod(sockets, 0o700)
        self.process.start(
            self._as_owner(
                [
                    str(postgres),
                    "-D",
                    str(data),
                    "-h",
                    self.address.host,
                    "-p",
                    str(self.address.port),
                    "-k",
                    str(sockets),
                    # A local development stack: survive process crashes, not power loss. A commit
                    # is acknowledged once its WAL is written to the operating system (not synced to
                    # the disk): a SIGKILLed PostgreSQL loses nothing it acknowledged. (Asynchronous
                    # commit would: its last commits wait in the server's own memory, and the chaos
                    # run lost acknowledged metering writes that way.)
                    "-c",
                    "fsync=off",
                ]
            ),
            cwd=self.home,
        )

    async def _ensure_platform_role(self) -> None:
        """The platform's role with the stack's password, owning FerretDB's database (as the superuser,
        through the socket folder)."""
        password = self.settings.stack_mongodb_password or ""
        role = (
            f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PLATFORM_USER}') "
            f"THEN CREATE ROLE {PLATFORM_USER} LOGIN; END IF; END$$;"
        )
        script = "\n".join(
            [
                role,
                f"ALTER ROLE {PLATFORM_USER} PASSWORD '{password}';" if password else "",
                f"SELECT 'CREATE DATABASE {FERRETDB_DATABASE}' WHERE NOT EXISTS "
                f"(SELECT FROM pg_database WHERE datname = '{FERRETDB_DATABASE}')\\gexec",
                f"ALTER DATABASE {FERRETDB_DATABASE} OWNER TO {PLATFORM_USER};",
                "",
            ]
        )
        await self._run_sql(script)

    async def ensure_database(self, name: str) -> None:
        """A database of the platform's role (for a peer in a side-by-side benchmark)."""
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", name):
            raise StackError(f"not a plain database name: {name!r}")
        await self._run_sql(
            f"SELECT 'CREATE DATABASE {name} OWNER {PLATFORM_USER}' WHERE NOT EXISTS "
            f"(SELECT FROM pg_database WHERE datname = '{name}')\\gexec\n"
        )

    async def drop_database(self, name: str) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", name):
            raise StackError(f"not a plain database name: {name!r}")
        await self._run_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);\n")

    async def _run_sql(self, script: str) -> None:
        """Run ``script`` as the superuser, through the socket folder."""
        psql = _postgres_bin("psql")
        assert psql is not None
        process = await asyncio.create_subprocess_exec(
            *self._as_owner(
                [
                    str(psql),
                    "-X",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    str(self.home / "sockets"),
                    "-p",
                    str(self.address.port),
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                ]
            ),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, error = await process.communicate(script.encode())
        if process.returncode != 0:
            raise ConnectionError(error.decode(errors="replace").strip())

    async def probe(self) -> str:
        ready = _postgres_bin("pg_isready")
        assert ready is not None
        host, port = self.address.host, str(self.address.port)
        probe = await asyncio.create_subprocess_exec(
            str(ready),
            "-q",
            "-h",
            host,
            "-p",
            port,
            "-U",
            "postgres",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        if await probe.wait() != 0:
            raise ConnectionError("PostgreSQL is not accepting connections yet")
        await self._ensure_platform_role()
        return f"PostgreSQL {ready.parent.parent.name}"


def all_services(settings: Settings) -> list[LocalService]:
    storage: list[LocalService] = (
        [PostgresService(settings)] if settings.stack_mongodb_backend == "postgresql" else []
    )
    return [KafkaService(settings), *storage, FerretDBService(settings), RabbitMQService(settings)]
