"""``perdure backup create|restore``: the control, metering and cell databases to a folder and back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from perdure.infra.settings import get_settings
from perdure.platform.cli.async_command import run_command
from perdure.platform.stores.backups import Manifest, create_backup, restore_backup
from perdure.platform.stores.databases import Databases

backup_app = typer.Typer(
    help="Backups of the control database, the metering database and the cells' histories.",
    no_args_is_help=True,
)


def _summary(manifest: Manifest, verb: str, folder: Path) -> str:
    taken = f"{manifest.created_at:%Y-%m-%d %H:%M:%S} UTC"
    lines = [f"{verb} {folder} (taken {taken}, prefix {manifest.source_prefix})"]
    for copy in manifest.databases:
        documents = sum(c.documents for c in copy.collections)
        lines.append(f"  {copy.role}: {len(copy.collections)} collections, {documents} documents")
    return "\n".join(lines)


@backup_app.command("create")
def create(
    folder: Annotated[Path, typer.Argument(help="an empty (or new) folder for the backup")],
    cell: Annotated[
        list[str] | None, typer.Option("--cell", help="a cell to include (repeatable; default: every cell)")
    ] = None,
) -> None:
    """Copy the databases to FOLDER. For an exact copy stop the cells' processes first (see
    docs/operating.md): a live backup reads each collection as it stands when its turn comes."""

    async def back_up() -> Manifest:
        settings = get_settings()
        databases = Databases.connect(settings)
        try:
            cells = cell or [c.name for c in await databases.control.list_cells()]
            for name in cells:
                await databases.control.get_cell(name)  # an unknown cell is refused, not copied empty
            return await create_backup(databases.client, settings, folder, cells)
        finally:
            await databases.close()

    typer.echo(_summary(run_command("backup create", back_up()), "backup written to", folder))


@backup_app.command("restore")
def restore(folder: Annotated[Path, typer.Argument(help="a folder `perdure backup create` wrote")]) -> None:
    """Restore FOLDER into the databases of the current PERDURE_DATABASE_PREFIX, which must be empty."""

    async def restore_all() -> Manifest:
        settings = get_settings()
        databases = Databases.connect(settings)
        try:
            return await restore_backup(databases.client, settings, folder)
        finally:
            await databases.close()

    typer.echo(_summary(run_command("backup restore", restore_all()), "restored", folder))
