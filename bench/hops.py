"""Where a workflow's time goes, hop by hop: workflows of three trivial activities through the tenant
client, admission and a cell process with its platform-hosted worker, traced end to end.

The cell process writes its spans to files (``PERDURE_TELEMETRY_EXPORTER=file``); each workflow runs
inside a span of this process, whose context rides the client's message, so every span of one workflow
shares its trace. Per workflow, the platform's spans in time order make a timeline: time inside a
platform span (admission, the engine's batch and its parts, the report relay) and the gaps between
them (the broker hops, and the worker's time between the engine's send and the relay's receipt). The
table gives each step's median and p90 over the workflows of the most common shape.

Worker processes run sandboxed and write no spans: their time is inside the gaps named
``... → perdure.reports.receive``.

``--concurrency N`` keeps N workflows in flight (the profile at saturation); 1 is light load.

Run: .venv/bin/python -m bench.hops [--workflows 100] [--concurrency 1]   (needs ``perdure stack up``)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bench.compare import tenant_namespace
from bench.machine import describe_machine
from bench.throughput import percentile
from bench.throughput_app import ThreeNoops
from perdure.infra.logs import configure_logging

# Spans begun by a message from another process: the hops of a workflow's timeline.
HOP_SPANS = frozenset(
    {"perdure.admission.receive", "perdure.consume", "perdure.reports.receive", "perdure.timers.fire"}
)


@dataclass(frozen=True)
class Span:
    name: str
    span_id: str
    parent_id: str | None
    start: float  # seconds since the epoch
    end: float

    @classmethod
    def of_json(cls, document: dict[str, Any]) -> Span:
        return cls(
            name=document["name"],
            span_id=document["context"]["span_id"],
            parent_id=document.get("parent_id"),
            start=_seconds(document["start_time"]),
            end=_seconds(document["end_time"]),
        )


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def read_spans(folder: Path) -> dict[str, list[Span]]:
    """The spans the platform's processes wrote to ``folder``, by trace id."""
    traces: dict[str, list[Span]] = collections.defaultdict(list)
    for path in folder.glob("spans-*.jsonl"):
        for line in path.read_text().splitlines():
            document = json.loads(line)
            traces[document["context"]["trace_id"]].append(Span.of_json(document))
    return traces


def timeline(workflow: ReadableSpan, spans: list[Span]) -> list[tuple[str, float]]:
    """One workflow's steps in order, with their seconds: the gap before each hop span, the hop span
    (less its parts), each of its parts, and the gap from the last hop to the result."""
    assert workflow.start_time is not None and workflow.end_time is not None
    began, ended = workflow.start_time / 1e9, workflow.end_time / 1e9
    hops = sorted((s for s in spans if s.name in HOP_SPANS), key=lambda s: s.start)
    children: dict[str, list[Span]] = collections.defaultdict(list)
    for span in spans:
        if span.parent_id is not None:
            children[span.parent_id].append(span)
    steps: list[tuple[str, float]] = []
    previous_name, previous_end = "client", began
    for hop in hops:
        steps.append((f"{_short(previous_name)} → {_short(hop.name)}", hop.start - previous_end))
        # Its parts: the spans inside it (a hop span made from its message is another hop).
        parts = sorted(
            (s for s in children.get(hop.span_id, []) if s.name not in HOP_SPANS), key=lambda s: s.start
        )
        inside = hop.end - hop.start - sum(p.end - p.start for p in parts)
        steps.append((f"  in {_short(hop.name)} (own)", inside))
        for part in parts:
            steps.extend(_nested(part, children, "    "))
        previous_name, previous_end = hop.name, hop.end
    steps.append((f"{_short(previous_name)} → client (result)", ended - previous_end))
    return steps


def _nested(span: Span, children: dict[str, list[Span]], indent: str) -> list[tuple[str, float]]:
    """A part of a hop and, below it, its own parts."""
    steps = [(f"{indent}{_short(span.name)}", span.end - span.start)]
    for child in sorted(children.get(span.span_id, []), key=lambda s: s.start):
        if child.name not in HOP_SPANS:  # a message sent from inside it begins a hop of its own
            steps.extend(_nested(child, children, indent + "  "))
    return steps


def _short(name: str) -> str:
    return name.removeprefix("perdure.")


def profile(workflows: list[ReadableSpan], traces: dict[str, list[Span]]) -> str:
    timelines = []
    for workflow in workflows:
        trace_id = f"0x{workflow.context.trace_id:032x}"  # as the file exporter writes it
        if trace_id in traces:
            timelines.append(timeline(workflow, traces[trace_id]))
    shapes = collections.Counter(tuple(name for name, _ in steps) for steps in timelines)
    if not shapes:
        return "no traced workflow: did the cell process write spans?"
    shape, count = shapes.most_common(1)[0]
    alike = [steps for steps in timelines if tuple(name for name, _ in steps) == shape]
    totals = [(w.end_time - w.start_time) / 1e9 for w in workflows]  # type: ignore[operator]
    rows = [
        f"{count} of {len(timelines)} traced workflows have the most common shape "
        f"({len(shapes)} shapes); median end to end of all: {statistics.median(totals) * 1000:.1f} ms "
        "(as the client saw it)",
        "",
        "| step | p50 ms | p90 ms |",
        "|---|---|---|",
    ]
    for index, name in enumerate(shape):
        values = [steps[index][1] * 1000 for steps in alike]
        label = name.replace("  ", "\u2003")  # keep the nesting visible in a rendered table
        rows.append(f"| {label} | {statistics.median(values):.1f} | {percentile(values, 0.9):.1f} |")
    return "\n".join(rows)


def totals(traces: dict[str, list[Span]], seconds: float) -> str:
    """Every span of the run by name: how many, their median, and their summed time as a share of the
    run's (a batch of the engine serves many workflows, so at saturation this, not a timeline, says
    where the cell process's time goes)."""
    by_name: dict[str, list[float]] = collections.defaultdict(list)
    for spans in traces.values():
        for span in spans:
            by_name[span.name].append(span.end - span.start)
    rows = ["| span | count | p50 ms | p90 ms | summed, share of the run |", "|---|---|---|---|---|"]
    for name, values in sorted(by_name.items(), key=lambda item: -sum(item[1])):
        rows.append(
            f"| {_short(name)} | {len(values)} | {statistics.median(values) * 1000:.1f} | "
            f"{percentile(values, 0.9) * 1000:.1f} | {sum(values):.1f} s, {sum(values) / seconds:.0%} |"
        )
    return "\n".join(rows)


async def measure(count: int, concurrency: int) -> str:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    tracer = provider.get_tracer("bench.hops")
    folder = Path(tempfile.mkdtemp(prefix="perdure-hops-"))
    async with tenant_namespace(
        PERDURE_TELEMETRY_EXPORTER="file", PERDURE_TELEMETRY_DIR=str(folder)
    ) as client:
        for i in range(3):  # the worker started, its instances cached
            await client.execute_workflow(ThreeNoops.run, id=f"warm-{i}-{uuid.uuid4().hex[:6]}")
        exporter.clear()
        slots = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with slots:
                with tracer.start_as_current_span("bench.workflow"):
                    assert (
                        await client.execute_workflow(ThreeNoops.run, id=f"hop-{i}-{uuid.uuid4().hex[:6]}")
                        == 6
                    )

        began = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        seconds = time.perf_counter() - began
    workflows = [s for s in exporter.get_finished_spans() if s.name == "bench.workflow"]
    traces = read_spans(folder)
    began_at = min(w.start_time for w in workflows if w.start_time is not None) / 1e9
    # The warm-up's spans are not the run's.
    traces = {t: [s for s in spans if s.start >= began_at] for t, spans in traces.items()}
    return (
        f"machine: {describe_machine()}\n"
        f"workload: {count} workflows of three trivial activities, {concurrency} in flight "
        f"({count / seconds:.1f} workflows/s)\n\n"
        + profile(workflows, traces)
        + "\n\nAll the cell process's spans of the run:\n\n"
        + totals(traces, seconds)
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workflows", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=1)
    arguments = parser.parse_args()
    configure_logging("WARNING")
    print(asyncio.run(measure(arguments.workflows, arguments.concurrency)))


if __name__ == "__main__":
    main()
