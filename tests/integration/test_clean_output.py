"""What a tenant's script prints of the client itself: nothing, whether it closes its client or not."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from pathlib import Path

import pytest

from perdure.platform.tenancy.model import Quota

from .cell_harness import REPO
from .conftest import TenantCellFactory

SCRIPT = """
import asyncio, sys
from perdure.tenants import Client
from tests.integration.cell_app import ThreeSteps


async def main(connection: str, ledger: str, close: bool) -> None:
    client = await Client.connect(connection)
    handle = await client.start_workflow(ThreeSteps.run, ledger, "s", id="script-" + str(close))
    print(await handle.result(timeout=60))
    if close:
        await client.close()


asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] == "close"))
"""


@pytest.mark.parametrize("ending", ["close", "leave-open"])
async def test_a_script_prints_its_result_and_nothing_else(
    make_tenant_cell: TenantCellFactory, tmp_path: Path, ending: str
) -> None:
    tenants = await make_tenant_cell({"a": Quota()})
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        tenants.connection_string("a"),
        str(tmp_path / "ledger"),
        ending,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    assert out.decode().strip() == "['s-1-done', 's-2-done', 's-3-done']"
    assert err.decode() == "", err.decode()  # no traceback, no "Event loop is closed", no warnings
