"""A span and a duration for every console request (named by its route, not its URL: a URL holds
workflow ids, which would make one series per run). The Kafka and AMQP hops the request makes carry the
span on (the producers inject it). A browser's ``traceparent`` is not followed: anyone may send one, and
the console's traces (and the records they reach) must not take ids an outsider chose."""

from __future__ import annotations

import time

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RequestTelemetry:
    def __init__(
        self, app: ASGIApp, tracer: trace.Tracer | None = None, meter: metrics.Meter | None = None
    ) -> None:
        self.app = app
        self.tracer = tracer or trace.get_tracer("perdure.console")
        self.duration = (meter or metrics.get_meter("perdure.console")).create_histogram(
            "perdure.console.request.duration", unit="s", description="console requests, by route and status"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.monotonic()

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        with self.tracer.start_as_current_span(
            "console request", context=Context(), kind=SpanKind.SERVER
        ) as span:
            try:
                await self.app(scope, receive, noting_status)
            finally:
                route = getattr(scope.get("route"), "path", None) or "unrouted"
                span.update_name(f"console {scope['method']} {route}")
                span.set_attribute("http.request.method", scope["method"])
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                self.duration.record(
                    time.monotonic() - started,
                    {"http.route": route, "http.request.method": scope["method"], "status": status},
                )
