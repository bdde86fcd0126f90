"""The ``perdure`` command."""

from __future__ import annotations

import sys

import typer

from perdure.infra.settings import SettingsError, get_settings
from perdure.platform.cli.stack_commands import stack_app

app = typer.Typer(
    name="perdure",
    help="Perdure: durable execution on Kafka, MongoDB and RabbitMQ.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(stack_app, name="stack")


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
