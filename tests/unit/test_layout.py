"""The package layout keeps the standard library's ``platform`` reachable (setup.py maps the folders)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_platform_folder_does_not_shadow_the_standard_library() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import platform, pymongo; print(platform.system())"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Linux"
    assert not (REPO / "platform" / "__init__.py").exists()


def test_subpackages_import_under_the_perdure_root() -> None:
    import perdure.billing
    import perdure.infra
    import perdure.platform.cli.main
    import perdure.tenants

    assert Path(perdure.platform.cli.main.__file__).parent == REPO / "platform" / "cli"
    for module, folder in (
        (perdure.tenants, "tenants"),
        (perdure.billing, "billing"),
        (perdure.infra, "infra"),
    ):
        assert Path(module.__file__ or "").parent == REPO / folder
