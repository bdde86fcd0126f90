from __future__ import annotations

import pytest

from perdure.infra.settings import SettingsError, load_settings


def test_defaults_point_at_the_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URI", "RABBITMQ_URL", "RABBITMQ_MANAGEMENT_URL", "CELLS"):
        monkeypatch.delenv(f"PERDURE_{var}", raising=False)
    endpoints = load_settings().endpoints()
    assert endpoints.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert endpoints.mongodb_uri.startswith("mongodb://127.0.0.1:27017")
    assert endpoints.rabbitmq_url.startswith("amqp://") and ":5672" in endpoints.rabbitmq_url
    assert ":15672" in endpoints.rabbitmq_management_url


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("PERDURE_KAFKA_BOOTSTRAP_SERVERS", "localhost", "host:port"),
        ("PERDURE_KAFKA_BOOTSTRAP_SERVERS", "a:1,b:99999", "1..65535"),
        ("PERDURE_MONGODB_URI", "postgres://x/", "mongodb"),
        ("PERDURE_RABBITMQ_URL", "http://x:5672/", "amqp"),
        ("PERDURE_RABBITMQ_MANAGEMENT_URL", "amqp://x/", "http"),
        ("PERDURE_TELEMETRY_EXPORTER", "zipkin", "console"),
        ("PERDURE_CELLS", "not json", "PERDURE_CELLS"),
    ],
)
def test_an_invalid_value_fails_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, complaint: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert variable in str(error.value)
    assert complaint in str(error.value)


def test_cell_overrides_replace_only_what_they_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERDURE_KAFKA_BOOTSTRAP_SERVERS", "k0:9092")
    monkeypatch.setenv("PERDURE_CELLS", '{"cell-2": {"kafka_bootstrap_servers": "k2:9092,k3:9092"}}')
    settings = load_settings()
    assert settings.endpoints("cell-2").kafka_bootstrap_servers == "k2:9092,k3:9092"
    assert settings.endpoints("cell-2").mongodb_uri == settings.mongodb_uri
    assert settings.endpoints("cell-1").kafka_bootstrap_servers == "k0:9092"


def test_a_bad_cell_override_names_the_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERDURE_CELLS", '{"cell-9": {"mongodb_uri": "redis://x/"}}')
    with pytest.raises(SettingsError, match=r"PERDURE_CELLS \(cell-9.mongodb_uri\)"):
        load_settings()
