"""The local stack's checks and process bookkeeping, without starting the real services."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from perdure.infra.local import services
from perdure.infra.local.processes import ManagedProcess
from perdure.infra.local.services import FerretDBService, KafkaService, RabbitMQService, StackError
from perdure.infra.local.stack import LocalStack
from perdure.infra.settings import Settings, load_settings


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    return load_settings(stack_dir=tmp_path / "stack", **overrides)


def test_a_port_held_by_another_program_is_reported_with_port_and_service(
    tmp_path: Path, listening_port: int
) -> None:
    settings = _settings(tmp_path, mongodb_uri=f"mongodb://127.0.0.1:{listening_port}/")
    with pytest.raises(StackError) as error:
        LocalStack(settings, [FerretDBService(settings)]).preflight()
    assert f"mongodb: port {listening_port} on 127.0.0.1 is already held by another program" in str(
        error.value
    )


def test_missing_toolchains_are_reported_with_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(services, "RABBITMQ_SERVER", tmp_path / "no-rabbitmq-server")
    monkeypatch.setattr(services, "POSTGRES_ROOT", tmp_path / "no-postgresql")
    settings = _settings(
        tmp_path,
        kafka_bootstrap_servers="127.0.0.1:1",
        mongodb_uri="mongodb://127.0.0.1:2/",
        rabbitmq_url="amqp://guest:guest@127.0.0.1:3/",
        rabbitmq_management_url="http://guest:guest@127.0.0.1:4/",
    )
    with pytest.raises(StackError) as error:
        LocalStack(settings).preflight()
    message = str(error.value)
    assert "apt-get install openjdk-17-jre-headless" in message
    assert "apt-get install maven" in message
    assert "apt-get install golang-go" in message
    assert "apt-get install rabbitmq-server" in message
    assert "apt-get install postgresql" in message


def test_the_stack_refuses_remote_hosts(tmp_path: Path) -> None:
    settings = _settings(tmp_path, kafka_bootstrap_servers="kafka.internal:9092")
    with pytest.raises(StackError, match=r"only runs on 127\.0\.0\.1"):
        LocalStack(settings, [KafkaService(settings)]).preflight()


def test_install_state_follows_the_sources(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    kafka, ferretdb = KafkaService(settings), FerretDBService(settings)
    assert not kafka.installed() and not ferretdb.installed()
    kafka.libs.mkdir(parents=True)
    (kafka.libs / ".fingerprint").write_text(services._fingerprint(kafka.pom))
    assert kafka.installed()
    (kafka.libs / ".fingerprint").write_text("stale")
    assert not kafka.installed()
    assert RabbitMQService(settings).nodename == "perdure@localhost"


def _sleeper(tmp_path: Path, name: str, marker: str = "sleep") -> ManagedProcess:
    return ManagedProcess(name, tmp_path / f"{name}.pid", tmp_path / f"{name}.log", cmdline_marker=marker)


def test_stop_signals_only_the_process_of_its_pid_file(tmp_path: Path) -> None:
    ours = _sleeper(tmp_path, "ours")
    ours.start([sys.executable, "-c", "import time; time.sleep(60)"], cwd=tmp_path)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert ours.running()
        assert ours.stop(timeout=5)
        assert not ours.running() and not ours.pid_file.exists()
        assert stranger.poll() is None, "a process the stack did not start was signalled"
        assert not ours.stop(), "stopping twice reports nothing stopped"
    finally:
        stranger.kill()
        stranger.wait()


def test_a_recycled_pid_is_not_taken_for_ours(tmp_path: Path) -> None:
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        managed = _sleeper(tmp_path, "kafka", marker="kafka.Kafka")
        managed.pid_file.write_text(f"{stranger.pid}\n")
        assert managed.pid() is None
        assert not managed.stop()
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_a_process_that_dies_during_start_up_is_detected(tmp_path: Path) -> None:
    managed = _sleeper(tmp_path, "crashy", marker="import")
    proc_pid = managed.start([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], cwd=tmp_path)
    # Reap it so /proc no longer lists it (the stack CLI's own child would be reaped on exit).
    import os

    os.waitpid(proc_pid, 0)
    assert managed.exited_early()
    assert "boom" in managed.log_file.read_text()


def test_kafka_cluster_id_never_starts_with_a_dash() -> None:
    # 0xF8 encodes to "-" first in URL-safe base64: the storage tool would read such an id as an option.
    draws = iter([bytes([0xF8]) + bytes(15), bytes([0xFB]) + bytes(15), bytes(16)])
    cluster_id = services.kafka_cluster_id(lambda: next(draws))
    assert cluster_id == "AAAAAAAAAAAAAAAAAAAAAA"
    assert all(not services.kafka_cluster_id().startswith("-") for _ in range(2000))


class _EchoService(services.LocalService):
    """A service that serves a TCP port once launched: the stack's start-up logic without a real one."""

    name = "echo"
    cmdline_marker = "perdure-echo-service"

    def __init__(self, settings: Settings, port: int) -> None:
        super().__init__(settings)
        self.port = port
        self.launches = 0

    @property
    def addresses(self) -> list[services.Address]:
        return [services.Address("127.0.0.1", self.port)]

    def missing_tools(self) -> list[str]:
        return []

    def installed(self) -> bool:
        return True

    def install(self) -> None:
        raise AssertionError("installed already")

    def launch(self) -> None:
        self.launches += 1
        serve = (
            "import socket, time; s = socket.socket(); "
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
            f"s.bind(('127.0.0.1', {self.port})); s.listen(); time.sleep(60)"
        )
        self.process.start([sys.executable, "-c", serve, self.cmdline_marker], cwd=self.home)

    async def probe(self) -> str:
        _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.close()
        return "1"


async def test_a_service_still_dying_from_a_kill_is_started_again_not_reported_as_crashed(
    tmp_path: Path,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = _settings(tmp_path)
    service = _EchoService(settings, port)
    service.home.mkdir(parents=True)
    # The previous process, killed a moment ago, is still on its way out when ``stack up`` looks.
    dying = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(0.5)", service.cmdline_marker, start_new_session=True
    )
    service.process.pid_file.write_text(f"{dying.pid}\n")
    stack = LocalStack(settings, [service])
    try:
        [status] = await stack.up()
        assert status.up and service.launches == 1
    finally:
        stack.down()
        await dying.wait()
