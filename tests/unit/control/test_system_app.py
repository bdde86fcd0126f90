"""The system namespace's app: every control-plane activity bound to the process's one set of
connections, and nothing read or opened by importing it (as reading its manifest does, in a sandbox)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from perdure.platform.control.control_resources import ControlResources
from perdure.platform.processes import system_app

INSPECT = """
import json
from perdure.platform.processes.system_app import app
print(json.dumps({
    name: type(definition.instance).__name__ if definition.instance is not None else None
    for name, definition in app.activities.items()
    if definition.method_of is not None
}))
"""


def test_every_activity_method_is_bound_to_one_set_of_connections() -> None:
    methods = [d for d in system_app.app.activities.values() if d.method_of is not None]
    assert {d.method_of for d in methods} == {
        "ProvisioningActivities",
        "TwinActivities",
        "RolloutActivities",
        "DeletionActivities",
        "MoveActivities",
        "ScheduleActivities",
        "BatchActivities",
    }
    assert not [d.name for d in system_app.app.activities.values() if d.needs_instance]
    shared = {id(getattr(d.instance, "resources", None)) for d in methods}
    assert shared == {id(system_app.resources)} and isinstance(system_app.resources, ControlResources)


def test_importing_the_app_reads_no_settings_and_connects_nothing() -> None:
    # Settings that cannot load: reading them (which opening any connection starts with) would fail.
    environment = {**os.environ, "PERDURE_MONGODB_URI": "not-a-url", "PERDURE_RABBITMQ_URL": "not-a-url"}
    done = subprocess.run(
        [sys.executable, "-c", INSPECT], env=environment, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    bound = json.loads(done.stdout)
    assert bound["place_namespace"] == "ProvisioningActivities" and bound["apply_change"] == "TwinActivities"
    assert None not in bound.values()
