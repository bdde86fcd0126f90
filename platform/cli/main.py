"""The ``perdure`` command. Each sub-command's module is imported when the command is named, so a
command pays for its own imports only (importing them all took over two seconds, on every call)."""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer._click import Command, Context  # typer carries its own click (the types its groups use)
from typer.core import TyperGroup

from perdure.infra.logs import quiet_clients
from perdure.infra.settings import SettingsError, get_settings

# The commands, in the order the help lists them; each is imported by ``_loaded`` when named.
COMMANDS = (
    "dev",
    "console",
    "stack",
    "cell",
    "account",
    "user",
    "namespace",
    "workflow",
    "schedule",
    "dlq",
    "metering",
    "billing",
    "controlplane",
    "rollout",
    "worker",
    "backup",
    "operator",
)


def _loaded(name: str) -> Any:
    """The Typer app (or the command's function) of ``name``, imported now."""
    match name:
        case "dev":
            from perdure.platform.cli.dev_command import dev

            return dev
        case "console":
            from perdure.platform.cli.console_commands import console

            return console
        case "stack":
            from perdure.platform.cli.stack_commands import stack_app

            return stack_app
        case "cell":
            from perdure.platform.cli.cell_commands import cell_app

            return cell_app
        case "account":
            from perdure.platform.cli.account_commands import account_app

            return account_app
        case "user":
            from perdure.platform.cli.account_commands import user_app

            return user_app
        case "namespace":
            from perdure.platform.cli.namespace_commands import namespace_app

            return namespace_app
        case "workflow":
            from perdure.platform.cli.workflow_commands import workflow_app

            return workflow_app
        case "schedule":
            from perdure.platform.cli.schedule_commands import schedule_app

            return schedule_app
        case "dlq":
            from perdure.platform.cli.dlq_commands import dlq_app

            return dlq_app
        case "metering":
            from perdure.platform.cli.metering_commands import metering_app

            return metering_app
        case "billing":
            from perdure.platform.cli.billing_commands import billing_app

            return billing_app
        case "controlplane":
            from perdure.platform.cli.controlplane_commands import controlplane_app

            return controlplane_app
        case "rollout":
            from perdure.platform.cli.rollout_commands import rollout_app

            return rollout_app
        case "worker":
            from perdure.platform.cli.worker_commands import worker_app

            return worker_app
        case "backup":
            from perdure.platform.cli.backup_commands import backup_app

            return backup_app
        case "operator":
            from perdure.platform.cli.console_commands import operator_app

            return operator_app
    raise KeyError(name)


def command_named(name: str) -> Command | None:
    """The click command of ``name`` (None if there is none), its module imported now, built as the
    root's ``add_typer`` or ``command`` would have built it."""
    if name not in COMMANDS:
        return None
    target = _loaded(name)
    root = typer.Typer(add_completion=False)
    root.callback()(lambda: None)  # a group, even of one command
    if isinstance(target, typer.Typer):
        root.add_typer(target, name=name)
    else:
        root.command(name)(target)
    group = typer.main.get_command(root)
    assert isinstance(group, TyperGroup)
    return group.commands[name]


class _CommandsWhenNamed(TyperGroup):
    def list_commands(self, ctx: Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        return command_named(cmd_name)


app = typer.Typer(
    name="perdure",
    help="Perdure: durable execution on Kafka, MongoDB and RabbitMQ.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=_CommandsWhenNamed,
)


@app.callback()
def _load_settings() -> None:
    # Fail before any work when a PERDURE_* variable is invalid, naming the variable.
    get_settings()
    quiet_clients()


def run() -> None:
    try:
        app()
    except SettingsError as exc:
        print(f"perdure: {exc}", file=sys.stderr)
        sys.exit(2)
