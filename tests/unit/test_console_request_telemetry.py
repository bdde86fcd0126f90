"""Console requests are traced and timed by route (not by URL), in traces of the console's own (never
one a caller named)."""

from __future__ import annotations

import httpx
from opentelemetry.sdk.metrics.export import HistogramDataPoint
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from perdure.infra.settings import load_settings
from perdure.infra.telemetry import configure_telemetry
from perdure.platform.console.request_telemetry import RequestTelemetry


async def run_page(request: Request) -> PlainTextResponse:
    if request.path_params["workflow_id"] == "broken":
        raise RuntimeError("the page failed")
    return PlainTextResponse("ok")


async def test_a_span_and_a_duration_per_request_named_by_route() -> None:
    telemetry = configure_telemetry(load_settings(telemetry_exporter="memory"), "unit", set_global=False)
    app = Starlette(
        routes=[Route("/namespaces/{namespace}/workflows/{workflow_id}", run_page)],
        middleware=[Middleware(RequestTelemetry, tracer=telemetry.tracer("t"), meter=telemetry.meter("m"))],
    )
    parent_trace = "0af7651916cd43dd8448eb211c80319c"
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
        ok = await client.get(
            "/namespaces/acme/workflows/order-1",
            headers={"traceparent": f"00-{parent_trace}-b7ad6b7169203331-01"},
        )
        assert ok.status_code == 200
        assert (await client.get("/namespaces/acme/workflows/broken")).status_code == 500
        assert (await client.get("/nowhere")).status_code == 404
    spans = {
        span.attributes["http.response.status_code"]: span for span in telemetry.spans.get_finished_spans()
    }  # type: ignore[union-attr,index]
    assert spans[200].name == "console GET /namespaces/{namespace}/workflows/{workflow_id}"
    assert format(spans[200].context.trace_id, "032x") != parent_trace
    assert spans[200].parent is None
    assert spans[500].status.is_ok is False
    assert spans[404].name == "console GET unrouted"
    assert telemetry.metric_reader is not None
    data = telemetry.metric_reader.get_metrics_data()
    points = [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "perdure.console.request.duration"
        for point in metric.data.data_points
    ]
    assert all(isinstance(p, HistogramDataPoint) for p in points)
    assert {p.attributes["status"] for p in points} == {200, 404, 500}  # type: ignore[index]
    assert all("order-1" not in str(p.attributes) for p in points)
