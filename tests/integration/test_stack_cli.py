"""``perdure stack`` against the running services the session resolved."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from perdure.infra.settings import Endpoints

pytestmark = pytest.mark.exclusive  # it bounds the time of `stack up`


def _perdure(endpoints: Endpoints, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PERDURE_KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap_servers,
        "PERDURE_MONGODB_URI": endpoints.mongodb_uri,
        "PERDURE_RABBITMQ_URL": endpoints.rabbitmq_url,
        "PERDURE_RABBITMQ_MANAGEMENT_URL": endpoints.rabbitmq_management_url,
    }
    executable = shutil.which("perdure", path=os.path.dirname(sys.executable)) or "perdure"
    return subprocess.run(
        [executable, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_up_on_a_running_stack_is_quick_and_reports_every_service(endpoints: Endpoints) -> None:
    started = time.monotonic()
    result = _perdure(endpoints, "stack", "up")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed < 5, f"a second `stack up` took {elapsed:.1f}s"
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    for service in ("kafka", "mongodb", "rabbitmq"):
        assert " up " in lines[service] + " ", lines


def test_status_lists_versions_and_ports(endpoints: Endpoints) -> None:
    result = _perdure(endpoints, "stack", "status")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FerretDB" in result.stdout or "mongodb" in result.stdout
    assert endpoints.kafka_bootstrap_servers.split(",")[0] in result.stdout
