"""``LocalEnvironment``'s visibility queries: its runs listed and counted in memory, by the same
evaluator the platform's answers are checked against, with the same errors as ``Client``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from perdure.platform.core.run_state import RunState
from perdure.platform.core.visibility_match import run_document, select
from perdure.platform.core.visibility_plan import ATTRIBUTE_PREFIX
from perdure.platform.core.visibility_query import AttributeType, QueryError, VisibilityQuery, parse_query
from perdure.tenants.client_errors import MalformedRequestError


def _document(state: RunState) -> dict[str, Any]:
    return run_document(
        run_id=state.run_id,
        workflow_id=state.workflow_id,
        workflow_type=state.workflow_type,
        status=state.status,
        start_time=state.start_time,
        close_time=state.close_time,
        search_attributes=state.search_attributes,
    )


def _parsed(query: str, attributes: dict[str, AttributeType]) -> VisibilityQuery:
    try:
        return parse_query(query, attributes)
    except QueryError as exc:
        raise MalformedRequestError(str(exc)) from None


def list_runs(
    runs: Iterable[RunState],
    attributes: dict[str, AttributeType],
    *,
    status: str | None,
    workflow_type: str | None,
    query: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """The runs a list names, as ``Client.list_workflows`` shows them."""
    documents = [_document(state) for state in runs]
    if query is None:
        documents = [
            d
            for d in documents
            if (status is None or d["status"] == status)
            and (workflow_type is None or d["workflow_type"] == workflow_type)
        ]
        found = select(documents, _parsed("", {}))
    else:
        found = select(documents, _parsed(query, attributes))
    return [
        {
            "workflow_id": d["workflow_id"],
            "run_id": d["_id"],
            "workflow_type": d["workflow_type"],
            "status": d["status"],
            "start_time": d["start_time"],
            "close_time": d["close_time"],
            **(
                {
                    "search_attributes": {
                        k.removeprefix(ATTRIBUTE_PREFIX): v
                        for k, v in d.items()
                        if k.startswith(ATTRIBUTE_PREFIX)
                    }
                }
                if query is not None
                else {}
            ),
        }
        for d in found[:limit]
    ]


def count_runs(runs: Iterable[RunState], attributes: dict[str, AttributeType], query: str) -> int:
    parsed = _parsed(query, attributes)
    return len(select([_document(state) for state in runs], parsed))
