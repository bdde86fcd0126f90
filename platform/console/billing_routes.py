"""Billing, for an account's owners and admins: the account's billing exports per period (downloadable),
and an estimate of the month so far, priced as the export prices it.

Exports are read where ``billing export`` writes them: ``<export dir>/<period>/<account>.<format>``. A
download names only a period; the account is the signed-in user's own, so no URL reaches another
account's file, and the period is parsed strictly before any path is built from it.
"""

from __future__ import annotations

import asyncio
import collections
import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from perdure.billing.export_files import ExportFormat
from perdure.billing.invoice import BillingPeriod, Invoice, price_usage
from perdure.billing.metering_service import usage_store
from perdure.billing.price_table import load_price_table
from perdure.platform.console.access import AccessDenied, NotVisible, Permission
from perdure.platform.console.console_errors import ConsoleInputError
from perdure.platform.console.console_page import ConsolePage, guarded
from perdure.platform.stores.control_store import ControlError, check_name

FORMATS: tuple[ExportFormat, ...] = ("csv", "jsonl")
MEDIA_TYPES: dict[ExportFormat, str] = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson; charset=utf-8",
}


@dataclass(frozen=True)
class ExportedFile:
    format: ExportFormat
    bytes: int
    written_at: datetime
    status: str  # final or provisional, as the file says ("" when it cannot be read)
    total: str


@dataclass(frozen=True)
class PeriodExports:
    period: BillingPeriod
    files: tuple[ExportedFile, ...]

    @property
    def kind(self) -> str:
        return "month" if self.period.is_month else "day"


@guarded(Permission.MANAGE_NAMESPACES)
async def billing(page: ConsolePage) -> Response:
    account = _account(page)
    settings = page.resources.settings
    exports = await asyncio.to_thread(account_exports, settings.export_dir, account)
    return page.render("billing.html", account=account, exports=exports, estimate=await _estimate(page))


@guarded(Permission.MANAGE_NAMESPACES)
async def download_csv(page: ConsolePage) -> Response:
    return await _download(page, "csv")


@guarded(Permission.MANAGE_NAMESPACES)
async def download_jsonl(page: ConsolePage) -> Response:
    return await _download(page, "jsonl")


async def _download(page: ConsolePage, export_format: ExportFormat) -> Response:
    account = _account(page)
    period = parse_period(page.request.path_params["period"])
    path = export_path(page.resources.settings.export_dir, period, account, export_format)
    if path is None or not await asyncio.to_thread(path.is_file):
        raise NotVisible(period.label)
    content = await asyncio.to_thread(path.read_bytes)
    return Response(
        content,
        media_type=MEDIA_TYPES[export_format],
        headers={"content-disposition": f'attachment; filename="{account}-{period.label}.{export_format}"'},
    )


def _account(page: ConsolePage) -> str:
    # Managing namespaces is an account role's permission; an identity without an account has no bills.
    if page.identity.account is None:
        raise AccessDenied("billing belongs to an account")
    return page.identity.account


def parse_period(label: str) -> BillingPeriod:
    """A period label as exports name their folders (2026-11, or 2026-11-27), and nothing else: ASCII
    digits only (``\\d`` would take other scripts' digits), checked by ``BillingPeriod.parse``."""
    if not label.isascii():
        raise ConsoleInputError(f"period {label[:40]!r}: a month (2026-11) or a day (2026-11-27) is expected")
    try:
        period = BillingPeriod.parse(label)
    except ValueError as exc:
        raise ConsoleInputError(str(exc)) from None
    if period.label != label:
        raise ConsoleInputError(f"period {label[:40]!r}: a month (2026-11) or a day (2026-11-27) is expected")
    return period


def export_path(
    directory: Path, period: BillingPeriod, account: str, export_format: ExportFormat
) -> Path | None:
    """Where the account's export of ``period`` is, if the names make a path inside ``directory``."""
    try:
        check_name("account", account)
    except ControlError:
        return None
    path = directory / period.label / f"{account}.{export_format}"
    # Defence in depth: both parts are checked above; a path leaving the folder is never read.
    if not path.resolve().is_relative_to(directory.resolve()):
        return None
    return path


def account_exports(directory: Path, account: str) -> list[PeriodExports]:
    """The account's exports, newest period first (a month before the days inside it)."""
    if not directory.is_dir():
        return []
    found = []
    for folder in directory.iterdir():
        try:
            period = parse_period(folder.name)
        except ConsoleInputError:
            continue  # not an export's folder
        files = []
        for export_format in FORMATS:
            path = export_path(directory, period, account, export_format)
            if path is not None and path.is_file():
                files.append(_describe(path, export_format))
        if files:
            found.append(PeriodExports(period, tuple(files)))
    return sorted(found, key=lambda e: (e.period.start, e.period.is_month), reverse=True)


def _describe(path: Path, export_format: ExportFormat) -> ExportedFile:
    stat = path.stat()
    status, total = "", ""
    if export_format == "csv":
        # The file's own word on its status and total (export_files.py: a total row with metric
        # "total"); a file that does not read as an export is listed without them.
        try:
            for row in csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))):
                status = row.get("status") or status
                if row.get("metric") == "total":
                    total = f"{row.get('amount', '')} {row.get('currency', '')}".strip()
        except (UnicodeDecodeError, csv.Error):
            status, total = "", ""
    return ExportedFile(
        export_format, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC), status, total
    )


async def _estimate(page: ConsolePage) -> Invoice:
    """The month so far, priced with the default price table like an export of the month (provisional:
    the month has not ended, and the current hour is still being counted)."""
    account = _account(page)
    now = datetime.now(UTC)
    month = BillingPeriod.parse(f"{now:%Y-%m}")
    resources = page.resources
    names = [n.name for n in await resources.databases.control.list_namespaces(account)]
    metered: collections.Counter[tuple[str, str]] = collections.Counter()
    store = usage_store(resources.databases.client, resources.settings)
    for hourly in await store.hourly(names, month.start, now):
        metered[hourly.namespace, hourly.metric] += hourly.quantity
    table = await asyncio.to_thread(load_price_table)
    return price_usage(account, month, "provisional", metered, table)


routes: list[BaseRoute] = [
    Route("/billing", billing, methods=["GET"]),
    Route("/billing/exports/{period}.csv", download_csv, methods=["GET"]),
    Route("/billing/exports/{period}.jsonl", download_jsonl, methods=["GET"]),
]
