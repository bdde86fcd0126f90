"""Settling (acknowledging, or handing back) a delivered message whose channel may be gone.

A broker outage closes the channel a message was delivered on; the broker then delivers the message
again by itself, to whichever consumer is there once it is back, and what consumes it recognises the
second delivery (request ids, the state machine's duplicate checks). So a settle that fails for that
reason is no error of the loop settling a batch (one message of the batch must not leave the others
unsettled, or end the loop), and not news of an outage either: the connection's loss was told by
``perdure.infra.outages`` when it happened.
"""

from __future__ import annotations

import logging

from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import MessageProcessError
from opentelemetry import metrics

from perdure.infra.outages import dependency_of

log = logging.getLogger("perdure.amqp")
unsettled = metrics.get_meter("perdure.amqp").create_counter(
    "perdure.amqp.unsettled", description="deliveries whose channel went before they were settled"
)


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
        # The connection's loss was told when it happened; by now it may be back (a message delivered
        # before an outage is settled after it), so this says nothing of the broker's state.
        unsettled.add(1, {"settle": what})
        log.debug("%s a message on a channel that is gone: it is delivered again", what)
    else:  # settled twice: a bug of ours, not the broker's
        log.warning("%s a message failed", what, exc_info=exc)
