"""compose.yaml and the settings defaults describe the same services on the same ports."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from perdure.infra.settings import load_settings

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
