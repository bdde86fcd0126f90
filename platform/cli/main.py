"""The ``perdure`` command."""

from __future__ import annotations

import sys

import typer

from perdure.infra.settings import SettingsError, get_settings
from perdure.platform.cli.account_commands import account_app, user_app
from perdure.platform.cli.backup_commands import backup_app
from perdure.platform.cli.batch_commands import batch_app
from perdure.platform.cli.billing_commands import billing_app
from perdure.platform.cli.cell_commands import cell_app
from perdure.platform.cli.console_commands import console, operator_app
from perdure.platform.cli.controlplane_commands import controlplane_app
from perdure.platform.cli.dev_command import dev
from perdure.platform.cli.dlq_commands import dlq_app
from perdure.platform.cli.metering_commands import metering_app, usage
from perdure.platform.cli.namespace_commands import namespace_app
from perdure.platform.cli.rollout_commands import rollout_app
from perdure.platform.cli.schedule_commands import schedule_app
from perdure.platform.cli.stack_commands import stack_app
from perdure.platform.cli.worker_commands import worker_app
from perdure.platform.cli.workflow_commands import workflow_app

app = typer.Typer(
    name="perdure",
    help="Perdure: durable execution on Kafka, MongoDB and RabbitMQ.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(stack_app, name="stack")
app.add_typer(cell_app, name="cell")
app.add_typer(account_app, name="account")
app.add_typer(user_app, name="user")
app.add_typer(namespace_app, name="namespace")
app.add_typer(workflow_app, name="workflow")
workflow_app.add_typer(batch_app, name="batch")
app.add_typer(schedule_app, name="schedule")
app.add_typer(dlq_app, name="dlq")
app.add_typer(metering_app, name="metering")
app.add_typer(billing_app, name="billing")
app.add_typer(controlplane_app, name="controlplane")
app.add_typer(rollout_app, name="rollout")
app.add_typer(worker_app, name="worker")
app.add_typer(backup_app, name="backup")
namespace_app.command("usage")(usage)
app.add_typer(operator_app, name="operator")
app.command("dev")(dev)
app.command("console")(console)


@app.callback()
def _load_settings() -> None:
    # Fail before any work when a PERDURE_* variable is invalid, naming the variable.
    get_settings()


def run() -> None:
    try:
        app()
    except SettingsError as exc:
        print(f"perdure: {exc}", file=sys.stderr)
        sys.exit(2)
