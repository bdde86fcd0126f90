"""Namespaces: the list a user may see, and a namespace's page: its settings, its metered usage (charts
and the same numbers as a table), and for owners and admins the quota form, key rotation and the
namespace's recent activity in the audit log.

The quota form changes a namespace the way ``perdure namespace update`` does (through its twin once the
control plane is bootstrapped, else directly in the control database), and rotation is
``perdure namespace rotate-key``'s own function. Everything a form sends is checked before anything is
changed. The fair-share weight is not on the form: how a shared cell is divided between tenants is the
platform's call (`perdure namespace update --weight`), not one tenant's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from starlette.responses import Response
from starlette.routing import Route

from perdure.billing.metering_service import usage_store
from perdure.platform.console.access import Permission
from perdure.platform.console.console_errors import ConsoleInputError
from perdure.platform.console.console_page import ConsolePage, guarded
from perdure.platform.console.usage_charts import decimal_text, usage_charts, window
from perdure.platform.control.namespace_requests import request_quota_change
from perdure.platform.control.provisioning import rotate_key
from perdure.platform.stores.control_store import NamespaceRecord
from perdure.platform.tenancy.model import Quota

DEFAULT_HOURS = 24
MAX_HOURS = 24 * 31
HOUR_CHOICES = ((24, "24 hours"), (72, "3 days"), (168, "7 days"), (MAX_HOURS, "31 days"))
RECENT_ACTIVITY = 10
# Bounds a form's numbers well inside what the control database stores (int64), so that an absurd
# value is refused with its field named rather than failing at the write.
MAX_WHOLE = 10**12
MAX_RATE = 10**9
_WHOLE = re.compile(r"[0-9]{1,13}")
_DECIMAL = re.compile(r"[0-9]{1,10}(\.[0-9]{1,6})?")


@dataclass(frozen=True)
class QuotaField:
    name: str  # the form's field: the Quota field, or the record's retention_days
    label: str
    whole: bool  # a whole number; else a decimal (the rate)
    note: str = ""


QUOTA_FIELDS = (
    QuotaField("actions_per_second", "Actions per second", whole=False, note="admitted at most, on average"),
    QuotaField("burst", "Burst", whole=True, note="actions admitted at once above the rate"),
    QuotaField("max_concurrent_workflows", "Max concurrent workflows", whole=True),
    QuotaField("max_concurrent_activities", "Max concurrent activities", whole=True, note="per executor"),
    QuotaField("max_payload_bytes", "Max payload bytes", whole=True),
    QuotaField("retention_days", "Retention days", whole=True, note="closed runs kept for"),
)
_LABELS = {field.name: field.label for field in QUOTA_FIELDS}
# What the console lets a tenant raise its limits to: the platform's defaults (retention: Temporal Cloud's
# longest, 90 days).
_CEILINGS: dict[str, int | float] = {**Quota().model_dump(), "retention_days": 90}


@guarded(Permission.READ)
async def namespaces(page: ConsolePage) -> Response:
    return page.render("namespaces.html", namespaces=await page.visible_namespaces())


@guarded(Permission.READ)
async def namespace_page(page: ConsolePage) -> Response:
    record = await page.namespace(page.request.path_params["namespace"])
    return await _show(page, record, hours=requested_hours(page.request.query_params.get("hours")))


@guarded(Permission.MANAGE_NAMESPACES, action="namespace.update-quota")
async def update_quota(page: ConsolePage) -> Response:
    record = await page.namespace(page.request.path_params["namespace"])
    given, retention_days = changed_fields(record, {f.name: page.field(f.name) for f in QUOTA_FIELDS})
    validated_quota(record.quota, given)  # a bad value is named before anything is sent
    if not given and retention_days is None:
        return await _show(page, record, notice="Nothing changed: the form held the current values.")
    changes = _describe_changes(record, given, retention_days)
    try:
        changed = await request_quota_change(
            page.resources.settings, page.resources.databases.control, record.name, given, retention_days
        )
    except Exception as exc:
        await page.audit(
            "namespace.update-quota", "failed", namespace=record.name, detail=f"{changes}: {exc}"
        )
        raise
    sent = changed is None
    how = "sent to the control plane" if sent else "applied"
    await page.audit("namespace.update-quota", "done", namespace=record.name, detail=f"{changes} ({how})")
    notice = (
        f"Quota change sent to the control plane, which applies it within seconds: {changes}."
        if sent
        else f"Quota changed: {changes}."
    )
    return await _show(page, await page.namespace(record.name), notice=notice)


@guarded(Permission.MANAGE_NAMESPACES, action="namespace.rotate-key")
async def rotate_api_key(page: ConsolePage) -> Response:
    record = await page.namespace(page.request.path_params["namespace"])
    try:
        rotated = await rotate_key(page.resources.settings, record.name)
    except Exception as exc:
        await page.audit("namespace.rotate-key", "failed", namespace=record.name, detail=str(exc))
        raise
    await page.audit(
        "namespace.rotate-key",
        "done",
        namespace=record.name,
        detail=f"key {record.api_key_id or '-'} replaced by {rotated.record.api_key_id}",
    )
    return await _show(
        page,
        rotated.record,
        notice="A new API key was issued; the previous key no longer works.",
        connection_string=rotated.connection_string,
    )


def requested_hours(value: str | None) -> int:
    """The hours of usage asked for (``?hours=N``): a whole number from 1 to 31 days' worth."""
    if value is None or value == "":
        return DEFAULT_HOURS
    if not _WHOLE.fullmatch(value) or not 1 <= int(value) <= MAX_HOURS:
        raise ConsoleInputError(f"hours must be a whole number from 1 to {MAX_HOURS}, not {value[:40]!r}")
    return int(value)


def changed_fields(record: NamespaceRecord, form: dict[str, str]) -> tuple[dict[str, Any], int | None]:
    """The quota fields the form changes (an empty field leaves its value as it is) and the new
    retention, each checked as a number; ConsoleInputError names the first field that is not one."""
    current: dict[str, Any] = {**record.quota.model_dump(), "retention_days": record.retention_days}
    given: dict[str, Any] = {}
    for field in QUOTA_FIELDS:
        text = form.get(field.name, "").strip()
        if not text:
            continue
        value = _number(field, text)
        if value != current[field.name]:
            given[field.name] = value
    retention_days = given.pop("retention_days", None)
    if retention_days is not None and retention_days < 1:
        raise ConsoleInputError(f"{_LABELS['retention_days']}: at least 1 day, not {retention_days}")
    within_ceilings(current, {**given, **({"retention_days": retention_days} if retention_days else {})})
    return given, retention_days


def within_ceilings(current: dict[str, Any], given: dict[str, Any]) -> None:
    """A tenant may lower its limits freely and raise them up to the platform's defaults (or to what
    the platform granted, if more); beyond is the platform's call (`perdure namespace update`): these
    limits protect the other tenants of the cell, not only the tenant."""
    for name, value in given.items():
        ceiling = max(current[name], _CEILINGS[name])
        if value > ceiling:
            raise ConsoleInputError(
                f"{_LABELS[name]}: at most {_text(ceiling)} here; raising it further is the platform's call "
                "(ask its operators)",
                403,
            )


def _number(field: QuotaField, text: str) -> int | float:
    if field.whole:
        if not _WHOLE.fullmatch(text) or int(text) > MAX_WHOLE:
            raise ConsoleInputError(
                f"{field.label}: a whole number up to {MAX_WHOLE} is expected, not {text[:40]!r}"
            )
        return int(text)
    if not _DECIMAL.fullmatch(text) or float(text) > MAX_RATE:
        raise ConsoleInputError(
            f"{field.label}: a number up to {MAX_RATE} (at most six decimals) is expected, not {text[:40]!r}"
        )
    return float(text)


def validated_quota(current: Quota, given: dict[str, Any]) -> Quota:
    """The quota with ``given`` applied, as ``perdure namespace update`` checks it."""
    try:
        return Quota.model_validate({**current.model_dump(), **given})
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else ""
        raise ConsoleInputError(f"{_LABELS.get(name, name)}: {error['msg']}") from None


def _describe_changes(record: NamespaceRecord, given: dict[str, Any], retention_days: int | None) -> str:
    before: dict[str, Any] = {**record.quota.model_dump(), "retention_days": record.retention_days}
    after = {**given, **({"retention_days": retention_days} if retention_days is not None else {})}
    return ", ".join(f"{name} {_text(before[name])} → {_text(value)}" for name, value in after.items())


def _text(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6f}".rstrip("0").rstrip(".")


async def _show(
    page: ConsolePage,
    record: NamespaceRecord,
    *,
    hours: int = DEFAULT_HOURS,
    notice: str | None = None,
    connection_string: str | None = None,
) -> Response:
    shown_hours = window(datetime.now(UTC), hours)
    store = usage_store(page.resources.databases.client, page.resources.settings)
    rows = await store.hourly([record.name], shown_hours[0], shown_hours[-1] + timedelta(hours=1))
    manage = page.allowed(Permission.MANAGE_NAMESPACES)
    # The account's own entries only: a refused attempt by another account's user names that user.
    recent = (
        await page.resources.audit.recent(
            account=page.identity.account, namespace=record.name, limit=RECENT_ACTIVITY
        )
        if manage
        else []
    )
    current: dict[str, Any] = {**record.quota.model_dump(), "retention_days": record.retention_days}
    return page.render(
        "namespace.html",
        namespace=record,
        charts=usage_charts(rows, shown_hours),
        hours=hours,
        hour_choices=HOUR_CHOICES,
        max_hours=MAX_HOURS,
        decimal_text=decimal_text,
        manage=manage,
        quota_fields=[(field, _text(current[field.name])) for field in QUOTA_FIELDS],
        recent=recent,
        notice=notice,
        connection_string=connection_string,
    )


routes = [
    Route("/namespaces", namespaces, methods=["GET"]),
    Route("/namespaces/{namespace}", namespace_page, methods=["GET"]),
    Route("/namespaces/{namespace}/quota", update_quota, methods=["POST"]),
    Route("/namespaces/{namespace}/rotate-key", rotate_api_key, methods=["POST"]),
]
