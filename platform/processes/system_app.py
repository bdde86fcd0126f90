"""The app of the system namespace: the control plane's workflows, from the modules that define them,
and its activities, bound to one set of connections for the worker process that loads this app
(opened on first use: importing it, as reading its manifest does, connects nothing)."""

from __future__ import annotations

from perdure.billing.export_schedule import app as billing_app
from perdure.platform.control import (  # noqa: F401  (they register their workflows)
    batch_workflow,
    entity_twin,
    namespace_move,
    provisioning_workflow,
    rollout_workflow,
    schedule_workflow,
)
from perdure.platform.control.batch_activities import BatchActivities
from perdure.platform.control.control_app import control_app
from perdure.platform.control.control_resources import ControlResources
from perdure.platform.control.deletion import DeletionActivities
from perdure.platform.control.namespace_move import MoveActivities
from perdure.platform.control.provisioning_activities import ProvisioningActivities
from perdure.platform.control.rollout_activities import RolloutActivities
from perdure.platform.control.schedule_activities import ScheduleActivities
from perdure.platform.control.twin_activities import TwinActivities
from perdure.tenants import App

resources = ControlResources()
app = (
    App("perdure-system")
    .include(billing_app, control_app)
    .bind_activities(
        ProvisioningActivities(resources),
        TwinActivities(resources),
        RolloutActivities(resources),
        DeletionActivities(resources),
        MoveActivities(resources),
        ScheduleActivities(resources),
        BatchActivities(resources),
    )
)
