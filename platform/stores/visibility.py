"""How a run document is shown to ops and tenants (describe and list), the same on every path."""

from __future__ import annotations

from typing import Any

from perdure.platform.stores.run_bodies import state_of

Document = dict[str, Any]


def describe_run(document: Document) -> dict[str, Any]:
    """A run's description; its result stays an encoded payload (the reader decodes it with its type)."""
    state = state_of(document)
    return {
        "workflow_id": document["workflow_id"],
        "run_id": document["_id"],
        "workflow_type": document["workflow_type"],
        "status": document["status"],
        "start_time": document["start_time"],
        "close_time": document["close_time"],
        "history_length": document["next_event_id"] - 1,
        "pending_activities": len(state.get("pending_activities") or {}),
        "pending_timers": len(state.get("pending_timers") or {}),
        "blocked_reason": document.get("blocked_reason"),
        "result": state.get("result"),
        "failure": state.get("failure"),
        "new_run_id": state.get("new_run_id"),
        # Resets (docs/reset.md): the run this one was reset into, or the run it was reset from, and the
        # event of the run reset from that the reset went back to.
        "reset_run_id": state.get("reset_run_id"),
        "reset_from_run_id": state.get("reset_from_run_id"),
        "reset_point": state.get("reset_point"),
        "search_attributes": state.get("search_attributes") or {},
    }


def list_entry(document: Document) -> dict[str, Any]:
    return {
        "workflow_id": document["workflow_id"],
        "run_id": document["_id"],
        "workflow_type": document["workflow_type"],
        "status": document["status"],
        "start_time": document["start_time"],
        "close_time": document.get("close_time"),
    }
