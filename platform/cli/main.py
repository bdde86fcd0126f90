"""The ``perdure`` command. Each sub-command's module is imported when the command is named, so a
command pays for its own imports only (importing them all took over two seconds, on every call)."""

from __future__ import annotations

import importlib
import sys

import typer
from typer._click import Command, Context  # typer carries its own click (the types its groups use)
from typer.core import TyperGroup

from perdure.infra.logs import quiet_clients
from perdure.infra.settings import SettingsError, get_settings

# Name on the command line: the module holding it and the attribute there (a Typer app, or a command's
# function).
COMMANDS: dict[str, tuple[str, str]] = {
    "dev": ("dev_command", "dev"),
    "console": ("console_commands", "console"),
    "stack": ("stack_commands", "stack_app"),
    "cell": ("cell_commands", "cell_app"),
    "account": ("account_commands", "account_app"),
    "user": ("account_commands", "user_app"),
    "namespace": ("namespace_commands", "namespace_app"),
    "workflow": ("workflow_commands", "workflow_app"),
    "schedule": ("schedule_commands", "schedule_app"),
    "dlq": ("dlq_commands", "dlq_app"),
    "metering": ("metering_commands", "metering_app"),
    "billing": ("billing_commands", "billing_app"),
    "controlplane": ("controlplane_commands", "controlplane_app"),
    "rollout": ("rollout_commands", "rollout_app"),
    "worker": ("worker_commands", "worker_app"),
    "backup": ("backup_commands", "backup_app"),
    "operator": ("console_commands", "operator_app"),
}


def command_named(name: str) -> Command | None:
    """The click command of ``name`` (None if there is none), its module imported now, built as the
    root's ``add_typer`` or ``command`` would have built it."""
    if name not in COMMANDS:
        return None
    module, attribute = COMMANDS[name]
    target = getattr(importlib.import_module(f"perdure.platform.cli.{module}"), attribute)
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
