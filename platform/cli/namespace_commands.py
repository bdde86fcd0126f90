"""``perdure namespace create | list | describe | update | rotate-key | search-attribute add | list``."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Annotated, Any

import typer

from perdure.infra.rabbitmq_admin import rabbitmq_admin
from perdure.infra.settings import get_settings
from perdure.platform.cli.async_command import run_command
from perdure.platform.cli.document_output import JsonOption, document_lines, echo_document
from perdure.platform.cli.metering_commands import usage
from perdure.platform.control.namespace_requests import (
    request_deletion,
    request_move,
    request_namespace,
    request_quota_change,
)
from perdure.platform.control.provisioning import ProvisionedNamespace, rotate_key
from perdure.platform.control.twin_change import TwinChange
from perdure.platform.control.twin_requests import signal_twin
from perdure.platform.core.run_state import RunStatus
from perdure.platform.core.search_attribute_registry import ATTRIBUTE_TYPES
from perdure.platform.core.visibility_query import AttributeType
from perdure.platform.protocol.vhost_layout import (
    ACTIVITIES_DEAD_LETTERS,
    ACTIVITIES_QUEUE,
    INGRESS_DEAD_LETTERS,
    INGRESS_QUEUE,
)
from perdure.platform.sandboxing.app_manifest import read_manifest
from perdure.platform.sandboxing.sandbox import Sandbox
from perdure.platform.stores.artifacts import ArtifactStore, Deployment, deploy
from perdure.platform.stores.control_store import Hosting, NamespaceRecord
from perdure.platform.stores.databases import Databases
from perdure.platform.stores.search_attributes import register_search_attribute
from perdure.platform.tenancy.model import Quota

namespace_app = typer.Typer(
    help="Namespaces: the unit of isolation, capacity and billing.", no_args_is_help=True
)


def _public(record: NamespaceRecord) -> dict[str, Any]:
    """A namespace as shown to people and scripts: never the key hash."""
    shown = record.model_dump(mode="json", exclude={"api_key_hash"})
    return shown


def _announce(provisioned: ProvisionedNamespace, as_json: bool) -> None:
    record = provisioned.record
    if as_json:
        shown = {**_public(record), "connection_string": provisioned.connection_string}
        typer.echo(json.dumps(shown, indent=2))
        return
    typer.echo(
        f"namespace {record.name}: account {record.account or '-'}, app {record.app} on cell {record.cell}, "
        f"vhost {record.vhost}, {record.quota.actions_per_second:g} actions/s (burst {record.quota.burst}), "
        f"weight {record.quota.weight}"
    )
    if provisioned.connection_string:
        typer.echo("connection string (shown once; keep it secret):")
        typer.echo(f"  {provisioned.connection_string}")
    else:
        typer.echo("the namespace existed already: no new key (use `perdure namespace rotate-key`)")


@namespace_app.command("create")
def create(
    name: str,
    app: Annotated[str, typer.Option("--app", help="the app's import path, module:attribute")],
    account: Annotated[str | None, typer.Option("--account", help="the owning account")] = None,
    cell: Annotated[str | None, typer.Option("--cell", help="default: the least loaded cell")] = None,
    rate: Annotated[float, typer.Option("--rate", help="actions per second")] = Quota().actions_per_second,
    burst: Annotated[int, typer.Option("--burst")] = Quota().burst,
    weight: Annotated[int, typer.Option("--weight", help="fair share against other namespaces")] = 1,
    max_concurrent: Annotated[
        int, typer.Option("--max-concurrent", help="running workflows at most")
    ] = Quota().max_concurrent_workflows,
    max_activities: Annotated[
        int, typer.Option("--max-concurrent-activities", help="activity attempts at once, per executor")
    ] = Quota().max_concurrent_activities,
    max_payload: Annotated[int, typer.Option("--max-payload-bytes")] = Quota().max_payload_bytes,
    retention_days: Annotated[int, typer.Option("--retention-days")] = 30,
    workers: Annotated[
        Hosting, typer.Option("--workers", help="who runs its workers: platform (sandboxed) or tenant")
    ] = "platform",
    as_json: JsonOption = False,
) -> None:
    """Provision a namespace running APP through the control plane (the ProvisionNamespace workflow,
    its steps shown as they happen); prints its connection string once. Idempotent."""
    quota = Quota(
        actions_per_second=rate,
        burst=burst,
        weight=weight,
        max_concurrent_workflows=max_concurrent,
        max_concurrent_activities=max_activities,
        max_payload_bytes=max_payload,
    )
    provisioned = run_command(
        "namespace create",
        request_namespace(
            get_settings(),
            name,
            app,
            cell=cell,
            account=account,
            quota=quota,
            retention_days=retention_days,
            hosting=workers,
            on_step=lambda step: typer.echo(f"provisioning {name}: {step}", err=True),
        ),
    )
    _announce(provisioned, as_json)


@namespace_app.command("rotate-key")
def rotate(name: str, as_json: JsonOption = False) -> None:
    """Issue a new API key; the old one is refused from now on."""
    _announce(run_command("namespace rotate-key", rotate_key(get_settings(), name)), as_json)


async def _namespaces(account: str | None) -> list[NamespaceRecord]:
    databases = Databases.connect(get_settings())
    try:
        return await databases.control.list_namespaces(account)
    finally:
        await databases.close()


@namespace_app.command("list")
def list_namespaces(
    account: Annotated[str | None, typer.Option("--account")] = None, as_json: JsonOption = False
) -> None:
    """Namespaces, of one account or all."""
    records = run_command("namespace list", _namespaces(account))
    if as_json:
        typer.echo(json.dumps([_public(r) for r in records], indent=2))
        return
    typer.echo(f"{'NAMESPACE':<24} {'ACCOUNT':<16} {'CELL':<12} {'RATE':>8} {'BURST':>6} {'WEIGHT':>6}")
    for r in records:
        typer.echo(
            f"{r.name:<24} {r.account or '-':<16} {r.cell:<12} {r.quota.actions_per_second:>8g} "
            f"{r.quota.burst:>6} {r.quota.weight:>6}"
        )


@namespace_app.command("describe")
def describe(name: str, as_json: JsonOption = False) -> None:
    """One namespace: owner, cell, quotas, retention, key id (never the key)."""

    async def get() -> NamespaceRecord:
        databases = Databases.connect(get_settings())
        try:
            return await databases.control.get_namespace(name)
        finally:
            await databases.close()

    echo_document(_public(run_command("namespace describe", get())), as_json)


@namespace_app.command("update")
def update(
    name: str,
    rate: Annotated[float | None, typer.Option("--rate")] = None,
    burst: Annotated[int | None, typer.Option("--burst")] = None,
    weight: Annotated[int | None, typer.Option("--weight")] = None,
    max_concurrent: Annotated[int | None, typer.Option("--max-concurrent")] = None,
    max_activities: Annotated[int | None, typer.Option("--max-concurrent-activities")] = None,
    max_payload: Annotated[int | None, typer.Option("--max-payload-bytes")] = None,
    retention_days: Annotated[int | None, typer.Option("--retention-days")] = None,
) -> None:
    """Change a namespace's quotas or retention: through its twin once the control plane is bootstrapped
    (applied within seconds; admission and executors pick it up), else directly."""
    changes = {
        "actions_per_second": rate,
        "burst": burst,
        "weight": weight,
        "max_concurrent_workflows": max_concurrent,
        "max_concurrent_activities": max_activities,
        "max_payload_bytes": max_payload,
    }

    async def apply() -> str:
        settings = get_settings()
        given = {k: v for k, v in changes.items() if v is not None}
        databases = Databases.connect(settings)
        try:
            record = await request_quota_change(settings, databases.control, name, given, retention_days)
        finally:
            await databases.close()
        if record is not None:
            return "\n".join(document_lines(_public(record)))
        shown = {"quota": given, **({"retention_days": retention_days} if retention_days is not None else {})}
        return f"sent to the twin namespace/{name}: {json.dumps(shown)}"

    typer.echo(run_command("namespace update", apply()))


@namespace_app.command("delete")
def delete(name: str) -> None:
    """Delete a namespace through the control plane: unreachable at once (its vhost and user removed),
    its data kept for its retention days, then purged. Refused while it has open runs."""
    outcome = run_command("namespace delete", request_deletion(get_settings(), name))
    typer.echo(outcome)


@namespace_app.command("move")
def move(
    name: str,
    to: Annotated[str, typer.Option("--to", help="the cell to move it to")],
    as_json: JsonOption = False,
) -> None:
    """Move a namespace to another cell through the control plane: its open runs are handed over with
    their histories (their requests wait meanwhile), its clients keep their connection string."""

    def step(name_of_step: str) -> None:
        typer.echo(f"moving {name}: {name_of_step}", err=True)

    result = run_command("namespace move", request_move(get_settings(), name, to, on_step=step))
    if as_json:
        echo_document(result, as_json=True)
        return
    typer.echo(
        f"namespace {name} moved from cell {result['from']} to {result['to']}: {result['runs_copied']} runs "
        f"handed over with their histories, {result['records_handed_over']} held records sent on; its "
        "connection string is unchanged"
    )


@namespace_app.command("suspend")
def suspend(name: str) -> None:
    """Refuse the namespace's new work (starts, signals, cancels, queries) until it is resumed."""
    run_command(
        "namespace suspend", signal_twin(get_settings(), "namespace", name, TwinChange(kind="suspend"))
    )
    typer.echo(f"sent to the twin namespace/{name}: suspend")


@namespace_app.command("resume")
def resume(name: str) -> None:
    """Take new work again."""
    run_command("namespace resume", signal_twin(get_settings(), "namespace", name, TwinChange(kind="resume")))
    typer.echo(f"sent to the twin namespace/{name}: resume")


STATUSES = typing.get_args(RunStatus)


@namespace_app.command("stats")
def stats(name: str, as_json: JsonOption = False) -> None:
    """Runs by status, work waiting at admission and for executors, dead letters."""

    async def gather() -> dict[str, Any]:
        settings = get_settings()
        databases = Databases.connect(settings)
        try:
            record = await databases.control.get_namespace(name)
            runs = databases.runs(settings, record.cell).runs
            by_status = {
                status: await runs.count_documents({"namespace": name, "status": status})
                for status in STATUSES
            }
        finally:
            await databases.close()
        queues: dict[str, dict[str, int]] = {}
        async with rabbitmq_admin(settings, record.cell) as admin:
            for queue in (INGRESS_QUEUE, INGRESS_DEAD_LETTERS, ACTIVITIES_QUEUE, ACTIVITIES_DEAD_LETTERS):
                ready, unacked = await admin.queue_depth(record.vhost, queue)
                queues[queue] = {"ready": ready, "in_flight": unacked}
        return {
            "namespace": name,
            "cell": record.cell,
            "quota": record.quota.model_dump(),
            "runs": by_status,
            "queues": queues,
        }

    figures = run_command("namespace stats", gather())
    if as_json:
        typer.echo(json.dumps(figures, indent=2))
        return
    quota = figures["quota"]
    typer.echo(
        f"namespace {name} on cell {figures['cell']}: {quota['actions_per_second']:g} actions/s "
        f"(burst {quota['burst']}), weight {quota['weight']}"
    )
    typer.echo("runs:   " + ", ".join(f"{k} {v}" for k, v in figures["runs"].items()))
    waiting = figures["queues"]
    typer.echo(
        f"admission: {waiting[INGRESS_QUEUE]['ready']} waiting in the tenant's queue, "
        f"{waiting[INGRESS_QUEUE]['in_flight']} taken and not yet admitted, "
        f"{waiting[INGRESS_DEAD_LETTERS]['ready']} dead-lettered"
    )
    typer.echo(
        f"activities: {waiting[ACTIVITIES_QUEUE]['ready']} waiting, "
        f"{waiting[ACTIVITIES_QUEUE]['in_flight']} running, "
        f"{waiting[ACTIVITIES_DEAD_LETTERS]['ready']} dead-lettered"
    )


@namespace_app.command("deploy")
def deploy_app(
    name: str,
    source: Annotated[Path, typer.Option("--source", help="the app's source folder, or a wheel")],
    app: Annotated[str, typer.Option("--app", help="the app's import path inside it, module:attribute")],
) -> None:
    """Deploy a new version of NAME's app: stored as a content-addressed artifact, run by the cell's
    sandboxed workers; the previous version's workers finish what they hold and stop."""

    async def deploying() -> Deployment:
        settings = get_settings()
        databases = Databases.connect(settings)
        try:
            record = await databases.control.get_namespace(name)
            sandbox = Sandbox.for_namespace(settings, name, record.quota, "deploy")

            async def manifest(app_path: str, folder: Path) -> list[str]:
                return (await read_manifest(app_path, isolated_as=sandbox, code=folder)).workflow_types

            deployment = await deploy(
                ArtifactStore(databases.control_db),
                record.deployment,
                name,
                source,
                app,
                manifest,
                sandbox.artifact_folder,
            )
            await databases.control.update_namespace(
                name, deployment=deployment, app=app, workflow_types=deployment.workflow_types
            )
            return deployment
        finally:
            await databases.close()

    deployment = run_command("namespace deploy", deploying())
    typer.echo(
        f"namespace {name}: version {deployment.version} deployed (artifact {deployment.artifact[:12]}, "
        f"app {deployment.app}, workflows: {', '.join(deployment.workflow_types) or 'none'})"
    )


search_attribute_app = typer.Typer(
    help="Search attributes a namespace's visibility queries may name (docs/visibility.md).",
    no_args_is_help=True,
)
namespace_app.add_typer(search_attribute_app, name="search-attribute")


@search_attribute_app.command("add")
def add_search_attribute(
    namespace: str,
    name: str,
    kind: Annotated[str, typer.Argument(metavar="TYPE", help=", ".join(ATTRIBUTE_TYPES))],
) -> None:
    """Register NAME of TYPE: indexed in the namespace's cell, then named by queries."""

    async def register() -> bool:
        settings = get_settings()
        databases = Databases.connect(settings)
        try:
            record = await databases.control.get_namespace(namespace)
            store = databases.runs(settings, record.cell)
            return await register_search_attribute(
                databases.control, store, namespace, name, typing.cast(AttributeType, kind)
            )
        finally:
            await databases.close()

    added = run_command("namespace search-attribute add", register())
    typer.echo(f"{name} ({kind}) {'registered' if added else 'was registered already'} in {namespace}")


@search_attribute_app.command("list")
def list_search_attributes(namespace: str, as_json: JsonOption = False) -> None:
    """The search attributes NAMESPACE registered, with their types."""

    async def read() -> dict[str, str]:
        databases = Databases.connect(get_settings())
        try:
            return dict(await databases.control.search_attributes_of(namespace))
        finally:
            await databases.close()

    attributes = run_command("namespace search-attribute list", read())
    if as_json:
        typer.echo(json.dumps(attributes, indent=2))
        return
    for name, kind in sorted(attributes.items()):
        typer.echo(f"{name}\t{kind}")


namespace_app.command("usage")(usage)
