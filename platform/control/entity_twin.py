"""``EntityTwin``: the digital twin of one cell, namespace, account or user, in the system namespace.

It holds the entity's current state, takes changes as ``change`` signals (applied one at a time, in
order, each by an idempotent activity on the control store, which admission, placement and the cells
read), answers the ``current`` and ``last_error`` queries, and continues as new every
``CHANGES_PER_RUN`` changes so its history stays small however long it lives."""

from __future__ import annotations

import collections
from datetime import timedelta
from typing import Any

from perdure.platform.control.control_app import control_app
from perdure.platform.control.twin_activities import TwinActivities
from perdure.platform.control.twin_change import TwinChange
from perdure.platform.control.workflow_ids import ENTITY_TWIN, Entity
from perdure.tenants import ActivityError, RetryPolicy, workflow

CHANGES_PER_RUN = 100
CHANGE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=5)
)


@control_app.workflow(name=ENTITY_TWIN)
class EntityTwin:
    def __init__(self) -> None:
        self.state: dict[str, Any] = {}
        self.pending: collections.deque[TwinChange] = collections.deque()
        self.error = ""

    @workflow.run
    async def run(self, entity: Entity, key: str, state: dict[str, Any] | None = None) -> dict[str, Any]:
        self.state = state or await workflow.execute_activity(
            TwinActivities.read_entity, entity, key, start_to_close_timeout=30, retry_policy=CHANGE_RETRY
        )
        applied = 0
        while True:
            await workflow.wait_condition(lambda: bool(self.pending))
            change = self.pending.popleft()
            if change.kind == "retire" or (change.kind == "delete" and entity != "namespace"):
                return self.state  # the entity is gone: so is its twin
            if change.kind == "delete":
                # A namespace is deleted by its own workflow, which retires this twin once the
                # namespace is closed (a deletion refused leaves the twin as it was).
                await workflow.execute_activity(
                    TwinActivities.start_namespace_deletion,
                    key,
                    start_to_close_timeout=30,
                    retry_policy=CHANGE_RETRY,
                )
                continue
            try:
                self.state = await workflow.execute_activity(
                    TwinActivities.apply_change,
                    entity,
                    key,
                    change,
                    start_to_close_timeout=30,
                    retry_policy=CHANGE_RETRY,
                )
                self.error = ""
            except ActivityError as failure:
                self.error = f"{change.kind} refused: {failure.cause or failure}"
            applied += 1
            if applied >= CHANGES_PER_RUN and not self.pending:
                workflow.continue_as_new(entity, key, self.state)

    @workflow.signal
    def change(self, change: TwinChange) -> None:
        self.pending.append(change)

    @workflow.query
    def current(self) -> dict[str, Any]:
        return self.state

    @workflow.query
    def last_error(self) -> str:
        return self.error
