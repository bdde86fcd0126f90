"""Structured logs for the long-running processes: one JSON object per line, ``extra`` fields included."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(level: str = "INFO") -> None:
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
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(default=str),
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "aiormq", "aio_pika", "pymongo", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Said on every Kafka connection of the local stack, whose SASL login travels on loopback only.
    logging.getLogger("aiokafka.conn").addFilter(
        lambda record: "username and password in the clear" not in record.getMessage()
    )
