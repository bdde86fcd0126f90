from __future__ import annotations

import stat
from pathlib import Path

import pytest

from perdure.infra.local.credentials import StackCredentials
from perdure.infra.settings import SettingsError, load_settings


def test_defaults_point_at_the_local_stack_with_the_logins_it_made(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for var in ("KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URI", "RABBITMQ_URL", "RABBITMQ_MANAGEMENT_URL", "CELLS"):
        monkeypatch.delenv(f"PERDURE_{var}", raising=False)
    monkeypatch.setenv("PERDURE_STACK_DIR", str(tmp_path))
    endpoints = load_settings().endpoints()  # a stack that never started: no logins yet
    assert endpoints.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert endpoints.mongodb_uri == "mongodb://127.0.0.1:27017/"
    assert endpoints.rabbitmq_url.startswith("amqp://") and ":5672" in endpoints.rabbitmq_url
    assert ":15672" in endpoints.rabbitmq_management_url
    assert endpoints.kafka() == {"bootstrap_servers": "127.0.0.1:9092"}

    made = StackCredentials.ensure(tmp_path)
    assert stat.S_IMODE((tmp_path / "credentials.env").stat().st_mode) == 0o600
    assert StackCredentials.ensure(tmp_path) == made  # made once
    endpoints = load_settings().endpoints()
    assert endpoints.mongodb_uri == (
        f"mongodb://perdure:{made.mongodb_password}@127.0.0.1:27017/?authMechanism=PLAIN"
    )
    assert endpoints.rabbitmq_url == f"amqp://perdure:{made.rabbitmq_password}@127.0.0.1:5672/"
    assert "guest" not in endpoints.rabbitmq_management_url
    assert endpoints.kafka()["sasl_plain_password"] == made.kafka_password
    assert endpoints.kafka()["security_protocol"] == "SASL_PLAINTEXT"
    # A login the settings name themselves wins over the stack's.
    monkeypatch.setenv("PERDURE_RABBITMQ_URL", "amqp://ops:secret@10.0.0.5:5672/")
    assert load_settings().rabbitmq_url == "amqp://ops:secret@10.0.0.5:5672/"


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
