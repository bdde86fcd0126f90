"""Settling (acknowledging, or handing back) a delivered message whose channel may be gone.

A broker outage closes the channel a message was delivered on; the broker then delivers the message
again by itself, to whichever consumer is there once it is back, and what consumes it recognises the
second delivery (request ids, the state machine's duplicate checks). So a settle that fails for that
reason is the outage, told once by ``perdure.infra.outages``, and not an error of the loop settling a
batch: one message of the batch must not leave the others unsettled, or end the loop.
"""

from __future__ import annotations

import logging

from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import MessageProcessError

from perdure.infra.outages import OUTAGES, dependency_of

log = logging.getLogger("perdure.amqp")


async def ack(message: AbstractIncomingMessage) -> bool:
    """Acknowledge ``message``; False if its channel is gone (it is delivered again)."""
    try:
        await message.ack()
    except Exception as exc:
        _failed("acknowledging", exc)
        return False
    return True


async def hand_back(message: AbstractIncomingMessage) -> bool:
    """Return ``message`` to its queue for another delivery; False if its channel is gone (the broker
    returns it by itself then)."""
    try:
        await message.nack(requeue=True)
    except Exception as exc:
        _failed("handing back", exc)
        return False
    return True


def _failed(what: str, exc: BaseException) -> None:
    if dependency_of(exc) == "rabbitmq" and not isinstance(exc, MessageProcessError):
        OUTAGES.went_away("rabbitmq", f"{what} a message: {type(exc).__name__}: {exc}")
    else:  # settled twice: a bug of ours, not the broker's
        log.warning("%s a message failed", what, exc_info=exc)
