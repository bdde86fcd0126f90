"""``perdure rollout start | status | pause | resume | abort``: platform versions rolled out over cells,
ring by ring, by the ``Rollout`` workflow of the control plane."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

import typer

from perdure.infra.settings import get_settings
from perdure.platform.cli.async_command import run_command
from perdure.platform.cli.document_output import JsonOption, echo_document
from perdure.platform.control.rollout_workflow import Ring, Rollout, RolloutSpec, rollout_id
from perdure.platform.core.definitions import workflow_name_of
from perdure.platform.messaging.ops_client import OpsClient

rollout_app = typer.Typer(
    help="Roll a platform version out over the cells, ring by ring.", no_args_is_help=True
)
UNITS = {"s": 1, "m": 60, "h": 3600}


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", value.strip())
    if match is None:
        raise typer.BadParameter(f"{value!r} is not a duration (30s, 5m, 1h)")
    return float(match.group(1)) * UNITS[match.group(2) or "s"]


def ring(value: str) -> Ring:
    name, sep, cells = value.partition("=")
    if not sep or not name or not cells:
        raise typer.BadParameter(f"{value!r} is not a ring (name=cell-1,cell-2)")
    return Ring(name=name, cells=[c for c in cells.split(",") if c])


@rollout_app.command("start")
def start(
    version: Annotated[str, typer.Option("--version")],
    rings: Annotated[
        list[str], typer.Option("--ring", help="name=cell[,cell...]; rings go in the order given")
    ],
    bake: Annotated[str, typer.Option("--bake", help="how long each ring bakes (30s, 5m)")] = "30s",
    ready_timeout: Annotated[
        str, typer.Option("--ready-timeout", help="for a ring to run the version")
    ] = "5m",
) -> None:
    """Start a rollout; prints its id."""
    spec = RolloutSpec(
        version=version,
        rings=[ring(value) for value in rings],
        bake_seconds=seconds(bake),
        ready_timeout_seconds=seconds(ready_timeout),
    )
    name = f"r-{uuid.uuid4().hex[:8]}"

    async def begin() -> None:
        settings = get_settings()
        async with await OpsClient.connect(settings, settings.system_namespace) as ops:
            await ops.start_workflow(
                workflow_name_of(Rollout.run), spec.model_dump(mode="json"), id=rollout_id(name)
            )

    run_command("rollout start", begin())
    typer.echo(name)


@rollout_app.command("status")
def status(name: str, as_json: JsonOption = False) -> None:
    """Where the rollout is: phase (deploying, waiting, baking, paused, completed, halted, aborted), ring,
    and why."""

    async def read() -> dict[str, Any]:
        settings = get_settings()
        async with await OpsClient.connect(settings, settings.system_namespace) as ops:
            described = await ops.describe(rollout_id(name))
        attributes = described["search_attributes"]
        return {
            "rollout": name,
            "workflow": described["status"],
            "phase": attributes.get("Phase", "starting"),
            "ring": attributes.get("Ring", ""),
            "detail": attributes.get("Detail", ""),
            "result": described.get("result"),
        }

    echo_document(run_command("rollout status", read()), as_json)


def _signal(command: str, name: str) -> None:
    async def send() -> None:
        settings = get_settings()
        async with await OpsClient.connect(settings, settings.system_namespace) as ops:
            await ops.describe(rollout_id(name))  # an unknown rollout is an error, not a lost signal
            await ops.signal(rollout_id(name), command)

    run_command(f"rollout {command}", send())
    typer.echo(f"rollout {name}: {command} sent")


@rollout_app.command("pause")
def pause(name: str) -> None:
    """Hold the rollout before its next bake or gate."""
    _signal("pause", name)


@rollout_app.command("resume")
def resume(name: str) -> None:
    _signal("resume", name)


@rollout_app.command("abort")
def abort(name: str) -> None:
    """Stop the rollout and roll its current ring back."""
    _signal("abort", name)
