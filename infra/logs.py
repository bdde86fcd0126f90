"""Structured logs for the long-running processes, ``extra`` fields included: a readable line each by
default, one JSON object per line when asked (``PERDURE_LOG_FORMAT=json``)."""

from __future__ import annotations

import logging
import re
import sys

import structlog

from perdure.infra.outages import OUTAGES


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    shared: list[structlog.types.Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _bounded_fields,
            *_renderers(log_format),
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(client_outage_noise)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "aiormq", "aio_pika", "pymongo", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Said on every Kafka connection of the local stack, whose SASL login travels on loopback only.
    logging.getLogger("aiokafka.conn").addFilter(
        lambda record: "username and password in the clear" not in record.getMessage()
    )


def quiet_clients() -> None:
    """For a one-shot command, which says what went wrong in its own words: the messaging clients' own
    lines (a refused connection per attempt, the SASL login on loopback) are not for its user. A
    long-running process's ``configure_logging`` gives them their warnings back."""
    for client in ("aiokafka", "aio_pika", "aiormq"):
        logging.getLogger(client).setLevel(logging.CRITICAL)


def _renderers(log_format: str) -> list[structlog.types.Processor]:
    if log_format == "json":
        return [structlog.processors.format_exc_info, structlog.processors.JSONRenderer(default=str)]
    return [
        structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback, pad_level=False
        )
    ]


# The clients' own lines about a lost connection, one per attempt and per node: the outage they mean is
# told once by perdure.outages instead. A group coordinator moving or not yet elected (Kafka's start-up,
# a broker restart) is the group protocol's routine, and so is a partition's leader moving: its client
# retries without a word from us.
_CLIENT_DEPENDENCIES = {
    "aiokafka": "kafka",
    "aiormq": "rabbitmq",
    "aio_pika": "rabbitmq",
    "pymongo": "mongodb",
}
_CONNECTION_TROUBLE = re.compile(
    r"unable connect|unable to (update|request) metadata|failed fetch|connection (attempt|to .* closed)|"
    r"reconnect|refused|timed? ?out|not ?ready|connection ?(error|reset|lost)|broken pipe|"
    r"heartbeat|failed to commit on finali[sz]ation|leavegroup request failed|reader exited abnormally|"
    # aio-pika reopening a channel while its connection is going: the connection's restore reopens it.
    r"no active transport|RobustChannel\._on_close",
    re.IGNORECASE,
)
# The client telling that a callback of ours raised (a rebalance listener): never routine, whatever the
# callback's name or the error's text.
_OUR_CALLBACK_FAILED = re.compile(r"user provided (subscription )?listener", re.IGNORECASE)
_COORDINATOR_ROUTINE = re.compile(
    # A member the group forgot (its session ended while the broker was away) joins again by itself.
    r"coordinator|rebalanc|re-?joining group|NotLeader|leader not available|"
    r"got error produce response.*retrying",
    re.IGNORECASE,
)


def client_outage_noise(record: logging.LogRecord) -> bool:
    """False (drop the line) for a client library's line about a lost connection or a coordinator."""
    dependency = _CLIENT_DEPENDENCIES.get(record.name.split(".", 1)[0])
    if dependency is None or record.levelno >= logging.CRITICAL:
        return True
    message = record.getMessage()
    if _OUR_CALLBACK_FAILED.search(message):
        return True
    if _COORDINATOR_ROUTINE.search(message):
        return False
    if _CONNECTION_TROUBLE.search(message):
        OUTAGES.went_away(dependency, message)
        return False
    return True


MAX_FIELD_CHARS = 4000


def _bounded_fields(
    logger: object, method: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """No field of a line longer than ``MAX_FIELD_CHARS``: what a message quotes of a hostile input (an
    exception's text, a reason) must not turn a log line into megabytes."""
    for key, value in event.items():
        if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
            event[key] = f"{value[:MAX_FIELD_CHARS]}... ({len(value)} characters)"
    return event
