"""The ``perdure`` command imports a sub-command's module only when it is named, and builds each as the
root's ``add_typer`` would have."""

from __future__ import annotations

import subprocess
import sys

from typer.core import TyperGroup
from typer.testing import CliRunner

from perdure.platform.cli.main import COMMANDS, app, command_named


def test_every_command_is_found_and_a_group_of_one_stays_a_group() -> None:
    for name in COMMANDS:
        command = command_named(name)
        assert command is not None and command.name == name
        assert command.help, name
    account = command_named("account")
    assert isinstance(account, TyperGroup) and list(account.commands) == ["create"]
    workflow = command_named("workflow")
    assert isinstance(workflow, TyperGroup) and "batch" in workflow.commands
    namespace = command_named("namespace")
    assert isinstance(namespace, TyperGroup) and "usage" in namespace.commands
    assert command_named("nope") is None


def test_an_unknown_command_is_refused_with_the_names_there_are() -> None:
    result = CliRunner().invoke(app, ["nope"])
    assert result.exit_code == 2
    assert "No such command 'nope'" in result.output


def test_naming_a_command_imports_its_module_only() -> None:
    probe = (
        "import sys\n"
        "from perdure.platform.cli.main import command_named\n"
        "command_named('stack')\n"
        "print(sorted(m for m in sys.modules if m.startswith('perdure.platform.cli.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "perdure.platform.cli.stack_commands" in out
    for other in ("namespace_commands", "workflow_commands", "console_commands", "cell_commands"):
        assert f"perdure.platform.cli.{other}" not in out
