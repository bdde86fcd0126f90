"""The canary every namespace can run: a platform workflow with one activity, started through the
namespace's own ingress to show that its whole path works (vhost, queues, admission, engine, activity
executors, results) before the namespace is handed over. Its runs are not billed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from perdure.platform.core.definitions import ActivityDefinition, WorkflowDefinition, WorkflowRegistry
from perdure.platform.protocol.ingress_wire import CANARY_WORKFLOW as CANARY_WORKFLOW
from perdure.tenants import App, workflow

# The billing policy: the platform's own runs in a tenant's namespace are not billed to it.
UNBILLED_WORKFLOW_TYPES = frozenset({CANARY_WORKFLOW})
canary_app = App("perdure-canary")


@canary_app.activity
async def canary_step(token: str) -> str:
    return f"{token}:ok"


@canary_app.workflow
class PerdureCanary:
    @workflow.run
    async def run(self, token: str) -> str:
        result: str = await workflow.execute_activity(
            canary_step, token, start_to_close_timeout=timedelta(seconds=30)
        )
        return result


assert CANARY_WORKFLOW in canary_app.workflows


class WithCanary:
    """A namespace's app, plus the canary (which the app's own list of workflows does not show)."""

    def __init__(self, app: WorkflowRegistry) -> None:
        self.app = app
        self.workflows: dict[str, Any] = getattr(app, "workflows", {})

    def get_workflow(self, name: str) -> WorkflowDefinition:
        if name in canary_app.workflows:
            return canary_app.workflows[name]
        return self.app.get_workflow(name)

    def get_activity(self, name: str) -> ActivityDefinition:
        if name in canary_app.activities:
            return canary_app.activities[name]
        return self.app.get_activity(name)
