"""Admission's answers to visibility queries: a list by query and a count, of the namespace the request
arrived for (its vhost) and nothing else, checked against the namespace's registered search attributes.

A query that cannot be run (it does not parse, names an unknown field, or no index serves it in a
namespace too large to read) is answered ``malformed`` with the reason, which points at its offending
token; the client raises it as it is."""

from __future__ import annotations

from typing import Any

from bson.errors import InvalidDocument
from opentelemetry import trace
from pymongo.errors import OperationFailure

from perdure.platform.core.visibility_plan import ATTRIBUTE_PREFIX, MAX_UNSERVED_RUNS
from perdure.platform.core.visibility_query import QueryError, VisibilityQuery, parse_query
from perdure.platform.protocol.ingress_wire import CountRequest, IngressReply, ListRequest
from perdure.platform.stores.control_store import ControlStore
from perdure.platform.stores.run_search import count_runs, search_runs
from perdure.platform.stores.run_store import RunStore
from perdure.platform.stores.visibility import list_entry

tracer = trace.get_tracer("perdure.admission")


def listed(document: dict[str, Any]) -> dict[str, Any]:
    """A run as a list by query shows it: its list entry and its search attributes."""
    attributes = {
        key.removeprefix(ATTRIBUTE_PREFIX): value
        for key, value in document.items()
        if key.startswith(ATTRIBUTE_PREFIX)
    }
    return {**list_entry(document), "search_attributes": attributes}


async def _parsed(control: ControlStore, namespace: str, text: str) -> VisibilityQuery:
    # Read afresh: an attribute registered a moment ago is queried at once.
    return parse_query(text, await control.search_attributes_of(namespace))


async def answer_list(
    control: ControlStore,
    store: RunStore,
    namespace: str,
    request: ListRequest,
    *,
    max_unserved_runs: int = MAX_UNSERVED_RUNS,
) -> IngressReply:
    """A page of the runs of ``namespace`` that ``request.query`` matches."""
    with tracer.start_as_current_span("perdure.admission.list_query", attributes={"namespace": namespace}):
        try:
            query = await _parsed(control, namespace, request.query or "")
            page = await search_runs(
                store,
                namespace,
                query,
                page_token=request.page_token,
                limit=request.limit,
                max_unserved_runs=max_unserved_runs,
            )
        except QueryError as exc:
            return IngressReply.failed("malformed", str(exc))
        except OperationFailure as exc:  # the database refused the query (what it was asked is the cause)
            return IngressReply.failed("malformed", f"the query could not be run: {exc}")
        except (InvalidDocument, OverflowError) as exc:
            # A value the driver cannot send (the parser refuses those it knows): the same request would
            # fail again, so it is answered, not handed back to be taken forever.
            return IngressReply.failed("malformed", f"the query could not be sent to the database: {exc}")
        return IngressReply(
            ok=True, runs=[listed(d) for d in page.runs], next_page_token=page.next_page_token
        )


async def answer_count(
    control: ControlStore,
    store: RunStore,
    namespace: str,
    request: CountRequest,
    *,
    max_unserved_runs: int = MAX_UNSERVED_RUNS,
) -> IngressReply:
    """How many runs of ``namespace`` ``request.query`` matches."""
    with tracer.start_as_current_span("perdure.admission.count_query", attributes={"namespace": namespace}):
        try:
            query = await _parsed(control, namespace, request.query)
            count = await count_runs(store, namespace, query, max_unserved_runs=max_unserved_runs)
        except QueryError as exc:
            return IngressReply.failed("malformed", str(exc))
        except OperationFailure as exc:  # the database refused the query (what it was asked is the cause)
            return IngressReply.failed("malformed", f"the query could not be run: {exc}")
        except (InvalidDocument, OverflowError) as exc:
            # A value the driver cannot send (the parser refuses those it knows): the same request would
            # fail again, so it is answered, not handed back to be taken forever.
            return IngressReply.failed("malformed", f"the query could not be sent to the database: {exc}")
        return IngressReply(ok=True, count=count)
