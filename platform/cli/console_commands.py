"""``perdure console`` (the web console) and ``perdure operator add`` (who operates the platform)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
import uvicorn

from perdure.infra.logs import configure_logging
from perdure.infra.settings import get_settings
from perdure.infra.telemetry import configure_telemetry
from perdure.platform.cli.async_command import run_command
from perdure.platform.console.console_app import build_console
from perdure.platform.stores.console_credentials import ConsoleCredentials
from perdure.platform.stores.console_identity import Identity
from perdure.platform.stores.databases import Databases

DEFAULT_PORT = 8470
operator_app = typer.Typer(
    help="Platform operators: who sees cells, rollouts and dead letters in the console.", no_args_is_help=True
)


def console(
    host: Annotated[str, typer.Option("--host", help="the address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = DEFAULT_PORT,
) -> None:
    """Serve the web console (sign in with an account user's or an operator's e-mail and password)."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    telemetry = configure_telemetry(settings, "perdure-console")
    typer.echo(f"console: http://{host}:{port}/ (Ctrl-C stops it)", err=True)
    try:
        uvicorn.run(build_console(settings), host=host, port=port, log_config=None, access_log=False)
    finally:
        telemetry.shutdown()


def read_password(from_stdin: bool) -> str:
    """A password typed twice at a hidden prompt, or one line of stdin (for scripts)."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    password: str = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    return password


@operator_app.command("add")
def add_operator(
    email: str,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from stdin, not a prompt")
    ] = False,
) -> None:
    """Make EMAIL a platform operator (or set an operator's password). Operators belong to no account."""
    password = read_password(password_stdin)

    async def add() -> Identity:
        databases = Databases.connect(get_settings())
        try:
            credentials = ConsoleCredentials(databases.control_db)
            await credentials.ensure_indexes()
            return await credentials.add_operator(email, password)
        finally:
            await databases.close()

    identity = run_command("operator add", add())
    typer.echo(f"operator {identity.email}")
