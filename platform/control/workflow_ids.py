"""The control plane's workflow types and the ids their runs take: one run per entity, so that a
request made twice finds the run the first one started. Activities that start or signal these runs
name them from here, which keeps the activities apart from the workflows that call them."""

from __future__ import annotations

from typing import Literal

Entity = Literal["cell", "namespace", "account", "user"]

PROVISION_NAMESPACE = "ProvisionNamespace"
DELETE_NAMESPACE = "DeleteNamespace"
MOVE_NAMESPACE = "MoveNamespace"
ENTITY_TWIN = "EntityTwin"
SCHEDULE = "Schedule"
BATCH = "Batch"


def provisioning_id(namespace: str) -> str:
    return f"provision-namespace/{namespace}"


def deletion_id(namespace: str) -> str:
    return f"delete-namespace/{namespace}"


def move_id(namespace: str) -> str:
    return f"move-namespace/{namespace}"


def twin_id(entity: Entity, key: str) -> str:
    return f"{entity}/{key}"


def schedule_workflow_id(namespace: str, schedule_id: str) -> str:
    """A tenant's schedule runs in the system namespace under the namespace it starts workflows in."""
    return f"{schedules_prefix(namespace)}{schedule_id}"


def schedules_prefix(namespace: str) -> str:
    return f"schedule/{namespace}/"


def batch_workflow_id(namespace: str, batch_id: str) -> str:
    """A batch operation over a namespace's runs runs in the system namespace under that namespace."""
    return f"{batches_prefix(namespace)}{batch_id}"


def batches_prefix(namespace: str) -> str:
    return f"batch/{namespace}/"
