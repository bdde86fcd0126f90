"""The operators' pages (platform operators only): cells with their processes, consumer lag and health;
rollouts of platform versions; dead letters and parked runs, with redrive.

Each reads what the matching command reads (``perdure cell list | processes | probe``, ``perdure rollout
status``, ``perdure dlq list``) and redrive is ``perdure dlq redrive``'s own function. A dependency that
does not answer in time is shown as such on the page instead of holding it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from perdure.infra.consumer_backlog import ConsumerBacklog
from perdure.infra.settings import Settings
from perdure.platform.cell import dead_letters
from perdure.platform.console.access import Permission
from perdure.platform.console.console_errors import ConsoleInputError
from perdure.platform.console.console_page import ConsolePage, guarded
from perdure.platform.control.rollout_workflow import Rollout
from perdure.platform.core.definitions import workflow_name_of
from perdure.platform.protocol.cell_wire import DeadLetter, engine_group
from perdure.platform.stores.control_store import CellRecord, ControlError, NamespaceRecord, ProcessReport
from perdure.platform.stores.databases import Databases
from perdure.platform.stores.visibility import describe_run

log = logging.getLogger("perdure.console")
# As ``perdure cell processes``: a process silent for longer is not listed; as ``perdure cell probe``: a
# report older than the probe's window does not vouch for its process.
LIVE_WITHIN = timedelta(minutes=1)
PROBE_WITHIN = timedelta(seconds=30)
# A page waits this long for Kafka (lag, dead letters) before it shows the cell without the answer.
KAFKA_TIMEOUT = 15.0
ROLLOUTS_SHOWN = 100
MAX_ID_LENGTH = 500


@dataclass(frozen=True)
class ProcessView:
    report: ProcessReport
    age_seconds: float
    ok: bool
    verdict: str


@dataclass(frozen=True)
class CellView:
    record: CellRecord
    namespaces: int
    processes: list[ProcessView]
    lag: dict[int, int] | None  # records behind per partition; None when Kafka did not answer
    lag_error: str = ""

    @property
    def total_lag(self) -> int | None:
        return None if self.lag is None else sum(self.lag.values())

    @property
    def verdict(self) -> tuple[bool, str]:
        return cell_verdict(self.processes)


@dataclass(frozen=True)
class RolloutView:
    name: str
    status: str
    phase: str
    ring: str
    detail: str
    started: datetime | None
    closed: datetime | None


@dataclass
class CellLetters:
    record: CellRecord
    letters: list[DeadLetter] = field(default_factory=list)
    redriven: set[str] = field(default_factory=set)
    runs: list[dead_letters.ParkedRun] = field(default_factory=list)
    error: str = ""

    @property
    def waiting(self) -> int:
        return sum(letter.id not in self.redriven for letter in self.letters) + len(self.runs)


def cell_verdict(processes: list[ProcessView]) -> tuple[bool, str]:
    """A cell is healthy when it has a live process and every live process passes the probe."""
    if not processes:
        return False, f"no process reported in the last {LIVE_WITHIN.total_seconds():g} s"
    failing = [p for p in processes if not p.ok]
    if failing:
        return False, f"{len(failing)} of {len(processes)} processes failing the probe"
    return True, f"{len(processes)} process{'es' if len(processes) != 1 else ''} healthy"


async def engine_lag(settings: Settings, cell: CellRecord) -> dict[int, int]:
    """Records of the cell's tasks topic its engine group has not committed yet, per partition."""
    backlog = ConsumerBacklog(
        settings.endpoints(cell.name).kafka(), cell.topic, cell.partitions, engine_group(cell.name)
    )
    try:
        await backlog.start()
        ends = await backlog.end_offsets()
        committed = await backlog.committed_offsets()
    finally:
        with contextlib.suppress(Exception):  # a client that never connected has nothing to close
            await backlog.stop()
    return {partition: max(0, end - committed.get(partition, 0)) for partition, end in sorted(ends.items())}


@guarded(Permission.OPERATE_PLATFORM)
async def cells(page: ConsolePage) -> Response:
    control = page.resources.databases.control
    now = datetime.now(UTC)
    records = await control.list_cells()
    views = await asyncio.gather(*(_cell_view(page, record, now) for record in records))
    return page.render("operator_cells.html", cells=views, probe_within=PROBE_WITHIN.total_seconds())


async def _cell_view(page: ConsolePage, record: CellRecord, now: datetime) -> CellView:
    control = page.resources.databases.control
    reports = await control.processes_of(record.name, now - LIVE_WITHIN)
    processes = []
    for report in sorted(reports, key=lambda r: r.process):
        ok, verdict = report.verdict(now, PROBE_WITHIN)
        processes.append(ProcessView(report, (now - report.reported_at).total_seconds(), ok, verdict))
    namespaces = len([n for n in await control.namespaces_of(record.name) if n.status != "deleted"])
    try:
        async with asyncio.timeout(KAFKA_TIMEOUT):
            lag = await engine_lag(page.resources.settings, record)
    except Exception as exc:
        log.warning("reading a cell's consumer lag failed", extra={"cell": record.name}, exc_info=True)
        return CellView(record, namespaces, processes, None, _reason(exc))
    return CellView(record, namespaces, processes, lag)


@guarded(Permission.OPERATE_PLATFORM)
async def rollouts(page: ConsolePage) -> Response:
    settings = page.resources.settings
    databases = page.resources.databases
    try:
        system: NamespaceRecord | None = await databases.control.get_namespace(settings.system_namespace)
    except ControlError:
        system = None
    shown: list[RolloutView] = []
    if system is not None:
        store = databases.runs(settings, system.cell)
        seen: set[str] = set()
        listed = await store.list_runs(
            system.name, workflow_type=workflow_name_of(Rollout.run), limit=ROLLOUTS_SHOWN
        )
        for entry in listed:  # newest first: the first run of an id is its latest
            if entry["workflow_id"] in seen:
                continue
            seen.add(entry["workflow_id"])
            document = await store.run(entry["_id"])
            if document is not None:
                shown.append(_rollout_view(describe_run(document)))
    return page.render(
        "operator_rollouts.html",
        rollouts=shown,
        system_namespace=settings.system_namespace,
        bootstrapped=system,
    )


def _rollout_view(described: dict[str, Any]) -> RolloutView:
    attributes = described["search_attributes"]
    return RolloutView(
        name=str(described["workflow_id"]).removeprefix("rollout/"),
        status=described["status"],
        # As ``perdure rollout status`` shows them: a rollout that set none yet is starting.
        phase=str(attributes.get("Phase", "starting")),
        ring=str(attributes.get("Ring", "")),
        detail=str(attributes.get("Detail", "")),
        started=described["start_time"],
        closed=described["close_time"],
    )


@guarded(Permission.OPERATE_PLATFORM)
async def dead_letter_page(page: ConsolePage) -> Response:
    return await _show_dead_letters(page)


@guarded(Permission.OPERATE_PLATFORM, action="dlq.redrive")
async def redrive(page: ConsolePage) -> Response:
    settings = page.resources.settings
    cell_name = page.field("cell").strip()
    only = page.field("id").strip() or None
    if not cell_name:
        raise ConsoleInputError("cell: name the cell whose dead letters to redrive")
    if only is not None and len(only) > MAX_ID_LENGTH:
        raise ConsoleInputError(f"id: at most {MAX_ID_LENGTH} characters")
    try:
        record = await page.resources.databases.control.get_cell(cell_name)
    except ControlError:
        raise ConsoleInputError(f"cell: there is no cell {cell_name[:60]!r}") from None
    if only is not None:
        # Checked first, so that a mistyped id sends nothing rather than nothing useful.
        known = await _letters_of(settings, record)
        if known.error:
            raise ConsoleInputError(
                f"the dead letters of cell {record.name} cannot be read now: {known.error}", 503
            )
        ids = {letter.id for letter in known.letters} | {run.id for run in known.runs}
        if only not in ids:
            raise ConsoleInputError(f"id: cell {record.name} has no dead letter or parked run {only[:80]!r}")
    target = only or f"{record.name}:all"
    try:
        result = await dead_letters.redrive(settings, record, only)
    except Exception as exc:
        await page.audit("dlq.redrive", "failed", target=target, detail=f"cell {record.name}: {exc}")
        raise
    messages, runs = result["dead_letters"], result["runs"]
    detail = (
        f"cell {record.name}: {len(messages)} message(s) {', '.join(messages)}; "
        f"{len(runs)} run(s) {', '.join(runs)}"
    )
    await page.audit("dlq.redrive", "done", target=target, detail=detail)
    notice = (
        f"Redriven on cell {record.name}: {len(messages)} dead-lettered message(s) sent back to its tasks "
        f"topic, {len(runs)} parked run(s) asked to replay with the current code."
    )
    return await _show_dead_letters(page, notice=notice)


async def _show_dead_letters(page: ConsolePage, notice: str | None = None) -> Response:
    records = await page.resources.databases.control.list_cells()
    found = await asyncio.gather(*(_letters_of(page.resources.settings, record) for record in records))
    return page.render("operator_dead_letters.html", cells=found, notice=notice)


async def _letters_of(settings: Settings, record: CellRecord) -> CellLetters:
    found = CellLetters(record)
    databases = Databases.connect(settings, record.name)
    try:
        found.runs = await dead_letters.parked_runs(databases, settings, record)
        async with asyncio.timeout(KAFKA_TIMEOUT):
            found.letters = await dead_letters.read_dead_letters(settings, record)
        found.redriven = await dead_letters.redriven_ids(settings, record)
    except Exception as exc:
        log.warning("reading a cell's dead letters failed", extra={"cell": record.name}, exc_info=True)
        found.error = _reason(exc)
    finally:
        await databases.close()
    return found


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {KAFKA_TIMEOUT:g} s"
    return f"{type(exc).__name__}: {exc}"[:300]


routes: list[BaseRoute] = [
    Route("/operators/cells", cells, methods=["GET"]),
    Route("/operators/rollouts", rollouts, methods=["GET"]),
    Route("/operators/dead-letters", dead_letter_page, methods=["GET"]),
    Route("/operators/dead-letters/redrive", redrive, methods=["POST"]),
]
