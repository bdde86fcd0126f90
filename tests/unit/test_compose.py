"""compose.yaml and the settings defaults describe the same services on the same ports; the platform's
processes in it run real `perdure` commands, with health checks, from a non-root image on a pinned base
(rendered and read here: there is no Docker engine to run them)."""

from __future__ import annotations

import ast
import importlib
import re
import shlex
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from typer.testing import CliRunner

from perdure.infra.settings import load_settings
from perdure.platform.cli.main import app

REPO = Path(__file__).resolve().parents[2]


def _published(service: dict[str, object]) -> set[int]:
    ports = service.get("ports", [])
    assert isinstance(ports, list)
    return {int(str(p).rsplit(":", 2)[-2]) for p in ports}


def test_compose_agrees_with_the_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URI", "RABBITMQ_URL", "RABBITMQ_MANAGEMENT_URL"):
        monkeypatch.delenv(f"PERDURE_{var}", raising=False)
    settings = load_settings()
    services = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]

    assert {"kafka", "mongodb", "rabbitmq"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["mongodb"]["image"].startswith("mongo:")
    assert (
        services["rabbitmq"]["image"].startswith("rabbitmq:")
        and "management" in services["rabbitmq"]["image"]
    )
    for service in ("kafka", "mongodb", "rabbitmq"):
        assert "healthcheck" in services[service]

    kafka_port = int(settings.kafka_bootstrap_servers.split(",")[0].rsplit(":", 1)[1])
    assert _published(services["kafka"]) == {kafka_port}
    assert "127.0.0.1:9092" in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert _published(services["mongodb"]) == {urlsplit(settings.mongodb_uri).port}
    assert _published(services["rabbitmq"]) == {
        urlsplit(settings.rabbitmq_url).port,
        urlsplit(settings.rabbitmq_management_url).port,
    }


def test_compose_services_require_the_platforms_login() -> None:
    services = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]
    kafka = services["kafka"]["environment"]
    protocols = dict(p.split(":") for p in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(protocols.values()) == {"SASL_PLAINTEXT"}  # no listener without a login
    for listener in protocols:
        assert (
            "PERDURE_STACK_KAFKA_PASSWORD" in kafka[f"KAFKA_LISTENER_NAME_{listener}_PLAIN_SASL_JAAS_CONFIG"]
        )
    assert services["mongodb"]["environment"]["MONGO_INITDB_ROOT_USERNAME"] == "perdure"
    rabbit = services["rabbitmq"]["environment"]
    assert rabbit["RABBITMQ_DEFAULT_USER"] == "perdure" and "PERDURE_STACK" in rabbit["RABBITMQ_DEFAULT_PASS"]


# -- the platform's processes ----------------------------------------------------------------------------
PLATFORM = ("bootstrap", "cell", "metering")
PASSWORDS = {
    f"PERDURE_STACK_{name}_PASSWORD": f"{name.lower()}-secret" for name in ("KAFKA", "MONGODB", "RABBITMQ")
}
# Compose's interpolation: $$ is a dollar; ${VAR}, ${VAR:-default}, ${VAR:?error} (and without the colon).
VARIABLE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def _render(text: str, environment: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        found = environment.get(name)
        if found is None or (found == "" and op is not None and op.startswith(":")):
            if op is not None and op.endswith("?"):
                raise KeyError(f"{name}: {arg}")
            return arg if op is not None else ""
        return found

    return VARIABLE.sub(value, text)


def _services() -> dict[str, Any]:
    """compose.yaml as Compose renders it with the stack's passwords."""
    services = yaml.safe_load(_render((REPO / "compose.yaml").read_text(), PASSWORDS))["services"]
    assert isinstance(services, dict)
    return services


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments left out."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def _final_stage() -> list[tuple[str, str]]:
    instructions = _dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def _perdure_command_lines(service: dict[str, Any]) -> list[list[str]]:
    """The `perdure` argument lists a service runs: its command after the image's entrypoint (`perdure`),
    or each `perdure ...` line of the script a shell entrypoint runs."""
    command = service["command"]
    assert isinstance(command, list), "a list: compose would split a string on its own terms"
    entrypoint = service.get("entrypoint")
    if entrypoint is None:
        return [[str(part) for part in command]]
    assert entrypoint[0] in ("sh", "bash") and len(command) == 1
    lines = [shlex.split(line) for line in command[0].splitlines() if line.strip()]
    assert lines and all(line[0] == "perdure" for line in lines), "the script runs perdure commands only"
    return [line[1:] for line in lines]


def _check_cli(arguments: list[str]) -> None:
    """The arguments name a command of the `perdure` app that shows its help, and they parse."""
    # Typer builds on its own copy of click: its groups are told by their subcommands, not their class.
    command: Any = typer.main.get_command(app)
    path: list[str] = []
    rest = list(arguments)
    # (The root finds its commands when they are named: ``get_command``, not its ``commands``.)
    while hasattr(command, "get_command") and rest and command.get_command(None, rest[0]) is not None:
        path.append(rest.pop(0))
        command = command.get_command(None, path[-1])
    assert path and not hasattr(command, "get_command"), f"{arguments}: not a perdure command"
    shown = CliRunner().invoke(app, [*path, "--help"])
    assert shown.exit_code == 0, shown.output
    command.make_context(" ".join(["perdure", *path]), rest)  # raises on an unknown option or argument


def test_the_image_runs_perdure_as_a_user_without_root_on_a_pinned_base() -> None:
    instructions = _dockerfile_instructions()
    minimum = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    wanted = re.fullmatch(r">=\s*(\d+)\.(\d+)", minimum)
    assert wanted is not None
    bases = [arguments.split()[0] for keyword, arguments in instructions if keyword == "FROM"]
    assert bases
    for base in bases:
        # A patch release, not a moving tag, of the minor version requires-python names.
        pinned = re.fullmatch(r"python:(\d+)\.(\d+)\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base)
        assert pinned is not None, base
        assert pinned.groups()[:2] == wanted.groups(), base

    final = _final_stage()
    users = [arguments for keyword, arguments in final if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image runs as a user without root"
    assert ("ENTRYPOINT", '["perdure"]') in final
    assert not any("pip install" in arguments for keyword, arguments in final if keyword == "RUN")


def test_the_image_installs_dependencies_before_copying_the_source() -> None:
    instructions = _dockerfile_instructions()
    steps = [f"{keyword} {arguments}" for keyword, arguments in instructions]

    def first(predicate: Callable[[str], bool]) -> int:
        return next(i for i, step in enumerate(steps) if predicate(step))

    dependencies = first(lambda s: s.startswith("RUN pip install --requirement"))
    source = first(
        lambda s: s.startswith("COPY") and s.split()[1] in ("platform", "tenants", "billing", "infra")
    )
    assert dependencies < source
    # The dependency list comes out of pyproject.toml, not a copy that could drift from it.
    assert any("tomllib" in s and '["dependencies"]' in s for s in steps[:dependencies])
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".stack", "build"} <= set(ignored)


def test_every_platform_process_runs_a_perdure_command_with_a_health_check() -> None:
    services = _services()
    assert set(PLATFORM) <= set(services)
    for name in PLATFORM:
        for arguments in _perdure_command_lines(services[name]):
            _check_cli(arguments)
    for name in ("cell", "metering"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and " ".join(test[1:]).strip() not in ("true", "exit 0", ":")
        assert services[name]["depends_on"]["bootstrap"] == {"condition": "service_completed_successfully"}
        for dependency in ("kafka", "mongodb", "rabbitmq"):
            assert services[name]["depends_on"][dependency] == {"condition": "service_healthy"}
    # The one-shot runs to its end before the others start: it has nothing to be healthy about.
    assert "healthcheck" not in services["bootstrap"] and services["bootstrap"]["restart"] == "no"
    for dependency in ("kafka", "mongodb", "rabbitmq"):
        assert services["bootstrap"]["depends_on"][dependency] == {"condition": "service_healthy"}


def test_the_cell_runs_twice_and_its_health_check_asks_its_own_reports() -> None:
    services = _services()
    cell = services["cell"]
    assert cell["deploy"]["replicas"] == 2
    assert cell["command"][:2] == ["cell", "run"]
    name = cell["command"][2]
    probe = cell["healthcheck"]["test"]
    assert probe[:5] == ["CMD", "perdure", "cell", "probe", name]
    _check_cli(probe[2:])
    bootstrap = _perdure_command_lines(services["bootstrap"])
    assert ["cell", "create", name] in [line[:3] for line in bootstrap]
    assert any(
        line[:2] == ["controlplane", "bootstrap"] and line[-2:] == ["--cell", name] for line in bootstrap
    )


def test_the_metering_health_check_asks_the_broker_for_its_consumer_group() -> None:
    test = _services()["metering"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    tree = ast.parse(test[3])
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.module is not None
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module}.{alias.name}"
    assert "metering_group" in test[3] and "describe_consumer_groups" in test[3]


def test_mongodb_is_a_one_node_replica_set_the_platform_follows() -> None:
    services = _services()
    mongodb = services["mongodb"]
    command = mongodb["command"]
    replica_set = command[command.index("--replSet") + 1]
    key_file = command[command.index("--keyFile") + 1]
    assert key_file in mongodb["entrypoint"][2], "the entrypoint makes the key file mongod is given"
    assert f'_id: "{replica_set}"' in mongodb["healthcheck"]["test"][1], "the health check initiates it"

    environment = services["cell"]["environment"]
    assert all(services[name]["environment"] == environment for name in PLATFORM)
    uri = urlsplit(environment["PERDURE_MONGODB_URI"])
    assert uri.hostname == "mongodb" and f"replicaSet={replica_set}" in uri.query
    assert "directConnection=true" in (REPO / "compose.yaml").read_text(), "the header tells host clients"
    # The platform's containers reach each service by its name, Kafka on its internal listener.
    assert environment["PERDURE_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"
    assert "INTERNAL://:19092" in services["kafka"]["environment"]["KAFKA_LISTENERS"]
    assert urlsplit(environment["PERDURE_RABBITMQ_URL"]).hostname == "rabbitmq"
    assert urlsplit(environment["PERDURE_RABBITMQ_MANAGEMENT_URL"]).hostname == "rabbitmq"


def test_the_platforms_processes_log_in_with_the_stacks_passwords() -> None:
    environment = _services()["cell"]["environment"]
    assert environment["PERDURE_KAFKA_SASL_USERNAME"] == "perdure"
    assert environment["PERDURE_KAFKA_SASL_PASSWORD"] == PASSWORDS["PERDURE_STACK_KAFKA_PASSWORD"]
    for variable, password in (
        ("PERDURE_MONGODB_URI", "PERDURE_STACK_MONGODB_PASSWORD"),
        ("PERDURE_RABBITMQ_URL", "PERDURE_STACK_RABBITMQ_PASSWORD"),
        ("PERDURE_RABBITMQ_MANAGEMENT_URL", "PERDURE_STACK_RABBITMQ_PASSWORD"),
    ):
        url = urlsplit(environment[variable])
        assert (url.username, url.password) == ("perdure", PASSWORDS[password]), variable
    # Without the stack's credentials file Compose refuses to start anything, rather than start the
    # services without a login.
    with pytest.raises(KeyError, match="PERDURE_STACK_"):
        _render((REPO / "compose.yaml").read_text(), {})
