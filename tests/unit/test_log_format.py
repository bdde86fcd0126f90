"""The processes' log lines: readable by default, JSON when asked, extra fields in both."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from perdure.infra.logs import configure_logging
from perdure.infra.settings import load_settings


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_lines_are_for_people_unless_json_is_asked_for(capsys: pytest.CaptureFixture[str]) -> None:
    assert load_settings().log_format == "text"
    configure_logging("INFO")
    logging.getLogger("perdure.cell").info("partitions assigned", extra={"partitions": [0, 1]})
    line = capsys.readouterr().err.strip()
    assert "partitions assigned" in line and "partitions=[0, 1]" in line and "[perdure.cell]" in line
    assert not line.startswith("{")


def test_json_lines_carry_the_extra_fields_and_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", load_settings(log_format="json").log_format)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("perdure.cell").warning("a step failed", extra={"run": "r-1"}, exc_info=True)
    record = json.loads(capsys.readouterr().err)
    assert record["event"] == "a step failed" and record["run"] == "r-1" and record["level"] == "warning"
    assert "ValueError: boom" in record["exception"]


def test_third_party_clients_speak_only_of_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("DEBUG")
    for name in ("aiokafka", "aiormq", "aio_pika", "pymongo"):
        logging.getLogger(name).info("chatter")
    logging.getLogger("perdure.cell").debug("ours")
    err = capsys.readouterr().err
    assert "chatter" not in err and "ours" in err
