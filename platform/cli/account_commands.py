"""``perdure account create`` and ``perdure user add``: who owns namespaces and who may act on them."""

from __future__ import annotations

from typing import Annotated

import typer

from perdure.infra.settings import get_settings
from perdure.platform.cli.async_command import run_command
from perdure.platform.cli.console_commands import read_password
from perdure.platform.control.twin_requests import twin_if_bootstrapped
from perdure.platform.stores.console_credentials import ConsoleCredentials, check_password
from perdure.platform.stores.control_store import ControlError
from perdure.platform.stores.databases import Databases
from perdure.platform.stores.tenancy_store import TenancyStore
from perdure.platform.tenancy.model import ROLES, AccountRecord, Role, UserRecord

account_app = typer.Typer(
    help="Accounts: the tenants that own namespaces and are billed.", no_args_is_help=True
)
user_app = typer.Typer(help="Users of an account and their roles.", no_args_is_help=True)


@account_app.command("create")
def create_account(name: str) -> None:
    """Create an account (idempotent)."""

    async def create() -> AccountRecord:
        databases = Databases.connect(get_settings())
        try:
            store = TenancyStore(databases.control_db)
            await store.ensure_indexes()
            record = await store.create_account(name)
            await twin_if_bootstrapped(get_settings(), "account", record.name)
            return record
        finally:
            await databases.close()

    record = run_command("account create", create())
    typer.echo(f"account {record.name}")


@user_app.command("add")
def add_user(
    email: str,
    account: Annotated[str, typer.Option("--account")],
    role: Annotated[str, typer.Option("--role", help=f"one of {', '.join(ROLES)}")] = "developer",
    password: Annotated[
        bool, typer.Option("--password", help="set (or reset) the console password: asked twice, hidden")
    ] = False,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="set the console password from one line of stdin")
    ] = False,
) -> None:
    """Add a user to an account with a role (or change the role of one already in it), and set or reset
    the password they sign in to the console with."""
    if role not in ROLES:
        typer.echo(f"perdure user add: role {role!r} is not one of {', '.join(ROLES)}", err=True)
        raise typer.Exit(1)
    new_password = read_password(password_stdin) if password or password_stdin else None
    if new_password is not None:
        try:
            check_password(new_password)
        except ControlError as exc:
            typer.echo(f"perdure user add: {exc}", err=True)
            raise typer.Exit(1) from None

    async def add(checked: Role) -> UserRecord:
        databases = Databases.connect(get_settings())
        try:
            record = await TenancyStore(databases.control_db).add_user(email, account, checked)
            if new_password is not None:
                credentials = ConsoleCredentials(databases.control_db)
                await credentials.ensure_indexes()
                await credentials.set_user_password(record.account, record.email, new_password)
            await twin_if_bootstrapped(get_settings(), "user", f"{record.account}/{record.email}")
            return record
        finally:
            await databases.close()

    record = run_command("user add", add(role))
    said = ", password set" if new_password is not None else ""
    typer.echo(f"user {record.email}: {record.role} of account {record.account}{said}")
