"""The app of the system namespace: the control plane's workflows, from the modules that define them."""

from __future__ import annotations

from perdure.billing.export_schedule import app as billing_app
from perdure.platform.control import (  # noqa: F401  (they register their workflows)
    deletion,
    entity_twin,
    provisioning_workflow,
    rollout_workflow,
)
from perdure.platform.control.control_app import control_app
from perdure.tenants import App

app = App("perdure-system").include(billing_app, control_app)
