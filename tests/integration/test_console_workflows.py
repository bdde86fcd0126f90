"""The console's workflow pages on the real stack (issue 14): the list with its filters and pages,
starting a run from the form, a run's timeline, signal, query and terminate, refused input, the live
stream (ended by signing out, capped per session), the audit log of every action, and the namespace's
quota holding for the console's actions as for a tenant's (they go through admission)."""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
from markupsafe import escape

from perdure.infra.settings import Settings
from perdure.platform.core import history as h
from perdure.platform.core.messages import SignalWorkflow
from perdure.platform.messaging.ops_client import OpsClient
from perdure.platform.stores.databases import Databases
from perdure.platform.stores.run_bodies import state_of
from perdure.platform.stores.run_store import RunStore
from perdure.platform.tenancy.model import Quota

from .cell_harness import TenantCell, admissions, eventually
from .conftest import TenantCellFactory
from .console_harness import ConsoleUnderTest, SignedIn, running_console, token_of

DEV = "dev@a.example.com"
READER = "reader@a.example.com"
# Small enough to cross in a form, large enough for the app's own arguments.
QUOTA = Quota.unthrottled().model_copy(update={"max_payload_bytes": 4096})
_LIVE_URL = re.compile(r'data-live-url="([^"]+)"')


@dataclass
class Scene:
    tenants: TenantCell
    console: ConsoleUnderTest
    dev: SignedIn
    store: RunStore
    control: Databases
    ops: OpsClient
    ledger: str

    @property
    def namespace(self) -> str:
        return self.tenants.a.record.name

    @property
    def settings(self) -> Settings:
        return self.tenants.cell.settings

    def workflows(self) -> str:
        return f"/namespaces/{self.namespace}/workflows"

    def workflow(self, workflow_id: str) -> str:
        return f"{self.workflows()}/{quote(workflow_id, safe='')}"

    async def latest(self, workflow_id: str) -> dict[str, Any]:
        document = await self.store.latest_run(self.namespace, workflow_id)
        if document is None:
            raise LookupError(f"no run of {workflow_id} yet")
        return document

    async def status_of(self, workflow_id: str, status: str) -> dict[str, Any]:
        """The latest run of ``workflow_id`` once it has ``status`` (another process writes it)."""

        async def check() -> dict[str, Any]:
            document = await self.latest(workflow_id)
            assert document["status"] == status, document["status"]
            return document

        result: dict[str, Any] = await eventually(check, timeout=60)
        return result

    async def audit(self, action: str) -> list[dict[str, Any]]:
        entries = self.control.control_db["audit_log"].find({"action": action}, {"_id": 0})
        return [e async for e in entries]


@asynccontextmanager
async def scene(
    make_tenant_cell: TenantCellFactory, tmp_path: Path, quota: Quota = QUOTA
) -> AsyncIterator[Scene]:
    tenants = await make_tenant_cell({"a": quota})
    settings = tenants.cell.settings
    databases = Databases.connect(settings)
    try:
        async with running_console(settings) as console:
            await console.add_user("acct-a", DEV, "developer")
            dev = await console.signed_in(DEV)
            async with await OpsClient.connect(settings, tenants.a.record.name) as ops:
                yield Scene(
                    tenants=tenants,
                    console=console,
                    dev=dev,
                    store=databases.runs(settings, tenants.a.record.cell),
                    control=databases,
                    ops=ops,
                    ledger=str(tmp_path / "ledger"),
                )
            await dev.aclose()
    finally:
        await databases.close()


def rows_of(page: str) -> list[str]:
    """The workflow ids a list page shows, in its order."""
    return [html.unescape(m) for m in re.findall(r'class="run-link" href="[^"]+">([^<]*)</a>', page)]


def next_page(page: str) -> str | None:
    found = re.search(r'class="next-page" rel="next" href="([^"]+)"', page)
    return html.unescape(found.group(1)) if found else None


async def test_the_list_filters_and_pages_on_the_index(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    async with scene(make_tenant_cell, tmp_path) as s:
        done = [f"noop-{i}" for i in range(5)]
        await s.ops.start_workflows("Noop", [(w, [w]) for w in done])
        await s.ops.start_workflow("Gated", s.ledger, "g", id="gated-1")
        await s.ops.start_workflow("MixedWork", s.ledger, "blue", id="mixed-blue")
        # MixedWork starts a child of its own, which is a run of the namespace too.
        for workflow_id in [*done, "blue-child"]:
            await s.status_of(workflow_id, "completed")
        everything = [*done, "gated-1", "mixed-blue", "blue-child"]

        async def attribute_set() -> None:
            document = await s.latest("mixed-blue")
            assert state_of(document)["search_attributes"].get("Tag") == "blue"

        await eventually(attribute_set, timeout=60)

        # Newest first, two to a page, each page after the last run of the one before: every run once.
        seen: list[str] = []
        url: str | None = f"{s.workflows()}?size=2"
        pages = 0
        while url is not None:
            page = await s.dev.get(url)
            assert page.status_code == 200, page.text
            rows = rows_of(page.text)
            assert 1 <= len(rows) <= 2
            seen += rows
            url, pages = next_page(page.text), pages + 1
        assert pages == 4
        assert sorted(seen) == sorted(everything)
        assert len(set(seen)) == len(seen)
        start_times = [(await s.latest(w))["start_time"] for w in seen]
        assert start_times == sorted(start_times, reverse=True)

        # Each row links to its run's page.
        first = await s.dev.get(s.workflows())
        gated = await s.latest("gated-1")
        assert f'href="{s.workflow("gated-1")}/runs/{gated["_id"]}"' in first.text

        async def shown(query: str) -> list[str]:
            page = await s.dev.get(f"{s.workflows()}?{query}")
            assert page.status_code == 200, page.text
            return rows_of(page.text)

        assert sorted(await shown("status=completed")) == sorted([*done, "blue-child"])
        assert sorted(await shown("status=running")) == ["gated-1", "mixed-blue"]
        assert await shown("type=Gated") == ["gated-1"]
        assert sorted(await shown("id=noop-")) == sorted(done)
        assert await shown("attribute=Tag%3Dblue") == ["mixed-blue"]
        assert await shown("attribute=Tag%3Dred") == []
        assert await shown("from=2999-01-01T00:00") == []
        assert len(await shown("from=2000-01-01T00:00&to=2999-01-01")) == len(everything)
        # A second page of a filtered list keeps its filter.
        page_one = await s.dev.get(f"{s.workflows()}?id=noop-&size=3")
        later = next_page(page_one.text)
        assert later is not None and "id=noop-" in later
        assert sorted(rows_of(page_one.text) + rows_of((await s.dev.get(later)).text)) == sorted(done)

        for bad, message in [
            ("status=sleeping", "is no run status"),
            ("attribute=a.b%3D1", "search attribute filter is name=value"),
            ("from=yesterday", "is no time"),
            ("size=0", "page size"),
            ("after_time=2026-01-01T00:00", "page link is damaged"),
        ]:
            refused = await s.dev.get(f"{s.workflows()}?{bad}")
            assert refused.status_code == 400, bad
            assert message in html.unescape(refused.text), bad

        # Another account's user sees nothing of this namespace.
        await s.console.add_user("acct-other", "eve@other.example.com", "owner")
        eve = await s.console.signed_in("eve@other.example.com")
        assert (await eve.get(s.workflows())).status_code == 404
        assert (await eve.get(s.workflow("gated-1"))).status_code == 404
        await eve.aclose()


async def test_start_from_the_form_then_the_completed_timeline(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    async with scene(make_tenant_cell, tmp_path) as s:
        form = await s.dev.get(s.workflows())
        assert 'name="workflow_type"' in form.text and '<option value="ThreeSteps">' in form.text
        # A hostile workflow id: a separator and markup, neither of which may act as such.
        workflow_id = 'shop/<script>alert("x")</script>'
        started = await s.dev.post_from(
            s.workflows(),
            s.workflows(),
            {
                "workflow_type": "ThreeSteps",
                "workflow_id": workflow_id,
                "args": json.dumps([s.ledger, "t"]),
            },
        )
        assert started.status_code == 303, started.text
        document = await s.status_of(workflow_id, "completed")
        run_page = f"{s.workflow(workflow_id)}/runs/{document['_id']}"
        # The run's page, once the engine wrote the run (else the list says the start was sent).
        location = started.headers["location"]
        assert location == run_page or location.startswith(f"{s.workflows()}?id="), location

        page = await s.dev.get(run_page)
        assert page.status_code == 200, page.text
        assert "<script>alert" not in page.text
        assert str(escape(workflow_id)) in page.text
        assert 'class="status status-completed"' in page.text
        assert page.text.count('class="tl-activity o-completed"') == 3
        assert page.text.count('<strong class="name">step</strong>') == 3
        assert '<svg class="spanbar"' in page.text and 'class="o-completed" x="' in page.text
        # Decoded result and input, and the history behind them.
        assert json.dumps(["t-1-done", "t-2-done", "t-3-done"], indent=2) in html.unescape(page.text)
        assert "workflow_execution_completed" in page.text
        assert "data-live-url" not in page.text  # closed: nothing to follow
        # The latest run's own address shows the same run.
        latest = await s.dev.get(s.workflow(workflow_id))
        assert latest.status_code == 200 and document["_id"] in latest.text

        [entry] = await s.audit("workflow.start")
        assert (entry["actor"], entry["outcome"], entry["namespace"], entry["target"]) == (
            f"acct-a/{DEV}",
            "done",
            s.namespace,
            workflow_id,
        )
        assert document["_id"] in entry["detail"]


async def test_signal_query_and_terminate(make_tenant_cell: TenantCellFactory, tmp_path: Path) -> None:
    async with scene(make_tenant_cell, tmp_path) as s:
        await s.ops.start_workflow("Gated", s.ledger, "g", id="gated")
        await s.ops.start_workflow("Gated", s.ledger, "h", id="doomed")
        await s.ops.start_workflow("Gated", s.ledger, "c", id="unwanted")
        run_page = s.workflow("gated")

        async def waiting_for_the_signal() -> None:
            history = await s.ops.history("gated")
            assert sum(isinstance(e, h.ActivityTaskCompleted) for e in history) == 2

        await eventually(waiting_for_the_signal, timeout=60)
        page = await s.dev.get(run_page)
        assert "signal or condition" in page.text
        assert 'class="danger">Terminate</button>' in page.text

        # A query's answer is shown on the run's page; a failing handler's message too.
        asked = await s.dev.post_from(run_page, f"{run_page}/query", {"name": "released", "args": '["p"]'})
        assert asked.status_code == 200, asked.text
        assert '<pre class="payload query-answer">&#34;p:no&#34;</pre>' in asked.text
        broken = await s.dev.post_from(run_page, f"{run_page}/query", {"name": "broken", "args": ""})
        assert broken.status_code == 422, broken.text
        assert "this handler is broken" in broken.text

        # A signal the workflow has no handler for is recorded all the same (and shown escaped).
        hostile = "<img src=x onerror=alert(1)>"
        stray = await s.dev.post_from(run_page, f"{run_page}/signal", {"name": hostile, "args": '{"a": 1}'})
        assert stray.status_code == 303, stray.text
        signalled = await s.dev.post_from(run_page, f"{run_page}/signal", {"name": "proceed", "args": ""})
        assert signalled.status_code == 303, signalled.text
        document = await s.latest("gated")
        assert signalled.headers["location"] == f"{run_page}/runs/{document['_id']}"
        await s.status_of("gated", "completed")
        page = await s.dev.get(run_page)
        assert '<strong class="name">proceed</strong>' in page.text
        assert hostile not in page.text and str(escape(hostile)) in page.text
        assert page.text.count('class="tl-activity o-completed"') == 3
        # A closed run offers no signal, cancel or terminate; a query still goes to it.
        assert "Terminate</button>" not in page.text and "query-form" in page.text

        doomed = s.workflow("doomed")
        ended = await s.dev.post_from(doomed, f"{doomed}/terminate", {"reason": "stuck on <b>purpose</b>"})
        assert ended.status_code == 303, ended.text
        await s.status_of("doomed", "terminated")
        page = await s.dev.get(doomed)
        assert 'class="status status-terminated"' in page.text
        assert "stuck on &lt;b&gt;purpose&lt;/b&gt;" in page.text

        unwanted = s.workflow("unwanted")
        await s.status_of("unwanted", "running")
        cancelled = await s.dev.post_from(unwanted, f"{unwanted}/cancel", {"reason": "changed my mind"})
        assert cancelled.status_code == 303, cancelled.text
        await s.status_of("unwanted", "canceled")
        assert "changed my mind" in (await s.dev.get(unwanted)).text

        # A read-only user sees the runs but no button, and a post of theirs is refused.
        await s.console.add_user("acct-a", READER, "read-only")
        reader = await s.console.signed_in(READER)
        await s.ops.start_workflow("Gated", s.ledger, "r", id="watched")
        await s.status_of("watched", "running")
        watched = await reader.get(s.workflow("watched"))
        assert watched.status_code == 200
        assert (
            "Terminate" not in watched.text and '<form method="post" action="/namespaces' not in watched.text
        )
        refused = await reader.post_from(
            s.workflow("watched"), f"{s.workflow('watched')}/terminate", {"reason": "x"}
        )
        assert refused.status_code == 403
        assert (await s.latest("watched"))["status"] == "running"
        await reader.aclose()

        for action, outcomes in [
            ("workflow.query", ["done", "failed"]),
            ("workflow.signal", ["done", "done"]),
            ("workflow.terminate", ["done", "refused"]),
            ("workflow.cancel", ["done"]),
        ]:
            entries = await s.audit(action)
            assert sorted(e["outcome"] for e in entries) == sorted(outcomes), entries
            assert all(e["namespace"] == s.namespace or e["outcome"] == "refused" for e in entries)
            assert {e["actor"] for e in entries} <= {f"acct-a/{DEV}", f"acct-a/{READER}"}
        [terminated] = [e for e in await s.audit("workflow.terminate") if e["outcome"] == "done"]
        assert terminated["target"] == "doomed" and "stuck on <b>purpose</b>" in terminated["detail"]


async def test_bad_input_is_refused_and_nothing_is_sent(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    async with scene(make_tenant_cell, tmp_path) as s:
        await s.ops.start_workflow("Gated", s.ledger, "g", id="gated")
        await s.status_of("gated", "running")
        gated = s.workflow("gated")
        valid = {"workflow_type": "Noop", "workflow_id": "fresh", "args": '["x"]'}

        async def start(**changes: str) -> httpx.Response:
            return await s.dev.post_from(s.workflows(), s.workflows(), {**valid, **changes})

        nope = await start(workflow_type="Nope")
        assert "FanOut, Gated, " in nope.text  # the types the app registers, in order
        cases: list[tuple[httpx.Response, int, str]] = [
            (
                await start(args='["x", {"a": 1,}]'),
                400,
                "the workflow input is not JSON: Expecting property name",
            ),
            (await start(args="[1,\n 2,,]"), 400, "Expecting value at line 2, column 4"),
            (await start(args=json.dumps(["x" * 5000])), 413, "over the limit of 4096 bytes"),
            (nope, 400, "unknown workflow type 'Nope'; this namespace's app registers: "),
            (await start(workflow_id=""), 400, "the workflow id is empty"),
            (await start(workflow_id="x" * 401), 400, "over the limit of 400"),
            (await start(workflow_id="gated", workflow_type="Gated"), 409, "is already running"),
            (
                await s.dev.post_from(gated, f"{gated}/signal", {"name": "", "args": ""}),
                400,
                "signal name is empty",
            ),
            (
                await s.dev.post_from(gated, f"{gated}/signal", {"name": "s" * 201, "args": ""}),
                400,
                "over the limit of 200",
            ),
            (
                await s.dev.post_from(gated, f"{gated}/signal", {"name": "proceed", "args": "{nope"}),
                400,
                "the signal input is not JSON",
            ),
            (
                await s.dev.post_from(
                    gated, f"{s.workflow('ghost')}/signal", {"name": "proceed", "args": ""}
                ),
                404,
                "no workflow 'ghost'",
            ),
            (
                await s.dev.post_from(gated, f"{gated}/terminate", {"reason": " "}),
                400,
                "a reason is required",
            ),
            (await s.dev.get(s.workflow("ghost")), 404, "no workflow 'ghost'"),
            (await s.dev.get(f"{gated}/runs/not-a-run"), 404, "no run not-a-run"),
            # Digits that are no ASCII digits, and more digits than int() takes, are no page size.
            (await s.dev.get(s.workflows(), params={"size": "²"}), 400, "page size is a number"),
            (await s.dev.get(s.workflows(), params={"size": "9" * 5000}), 400, "page size is a number"),
        ]
        for response, status, message in cases:
            assert response.status_code == status, (status, message, response.text[-600:])
            assert message in html.unescape(response.text), (message, response.text[-600:])

        # Nothing was started or signalled.
        assert await s.store.latest_run(s.namespace, "fresh") is None
        assert await s.store.latest_run(s.namespace, "x" * 401) is None
        history = await s.ops.history("gated")
        assert not [e for e in history if isinstance(e, h.WorkflowExecutionSignaled)]
        assert (await s.latest("gated"))["status"] == "running"
        # Each refusal is in the audit log, failed, with its reason.
        starts = await s.audit("workflow.start")
        assert len(starts) == 7 and {e["outcome"] for e in starts} == {"failed"}
        assert any("unknown workflow type 'Nope'" in e["detail"] for e in starts)
        assert any("is already running" in e["detail"] for e in starts)
        signals = await s.audit("workflow.signal")
        assert len(signals) == 4 and {e["outcome"] for e in signals} == {"failed"}

        # A damaged count of the events seen is taken for none: the stream sends the run at once.
        document = await s.latest("gated")
        for seen in ("²", "9" * 5000):
            live = f"{gated}/runs/{document['_id']}/live"
            async with (
                asyncio.timeout(30),
                s.dev.http.stream("GET", live, params={"seen": seen, "status": "running"}) as stream,
            ):
                assert stream.status_code == 200
                async for event, data in server_sent_events(stream):
                    assert event == "update" and 'class="status status-running"' in data
                    break


async def test_the_live_stream_follows_the_run_until_it_closes(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    async with scene(make_tenant_cell, tmp_path) as s:
        await s.ops.start_workflow("Gated", s.ledger, "g", id="gated")

        async def waiting_for_the_signal() -> None:
            history = await s.ops.history("gated")
            assert sum(isinstance(e, h.ActivityTaskCompleted) for e in history) == 2

        await eventually(waiting_for_the_signal, timeout=60)
        page = await s.dev.get(s.workflow("gated"))
        found = _LIVE_URL.search(page.text)
        assert found is not None and '<script src="/static/run_live.js" defer>' in page.text
        live_url = html.unescape(found.group(1))

        events: list[tuple[str, str]] = []
        async with asyncio.timeout(60), s.dev.http.stream("GET", live_url) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            # The stream is open (as of the page's state): now the run advances.
            response = await s.dev.post_from(
                s.workflow("gated"), f"{s.workflow('gated')}/signal", {"name": "proceed", "args": ""}
            )
            assert response.status_code == 303
            # It ends by itself once the run closed.
            events = [pair async for pair in server_sent_events(stream)]
        kinds = [event for event, _ in events]
        assert kinds[-1] == "end" and events[-1][1] == "completed"
        updates = [data for event, data in events if event == "update"]
        assert updates, kinds
        assert 'class="status status-completed"' in updates[-1]
        assert '<strong class="name">proceed</strong>' in updates[-1]
        assert updates[-1].count('class="tl-activity o-completed"') == 3
        # A stream of a closed run sends its last state and ends at once.
        async with asyncio.timeout(30), s.dev.http.stream("GET", live_url) as stream:
            assert [event async for event, _ in server_sent_events(stream)] == ["update", "end"]


async def waiting_for_the_signal(s: Scene, workflow_id: str) -> None:
    """Until ``Gated`` of ``workflow_id`` ran its first two steps and waits for its signal."""

    async def two_steps() -> None:
        history = await s.ops.history(workflow_id)
        assert sum(isinstance(e, h.ActivityTaskCompleted) for e in history) == 2

    await eventually(two_steps, timeout=60)


async def live_url_of(s: Scene, workflow_id: str) -> str:
    page = await s.dev.get(s.workflow(workflow_id))
    found = _LIVE_URL.search(page.text)
    assert found is not None, page.text[-600:]
    return html.unescape(found.group(1))


async def test_signing_out_ends_the_open_streams(make_tenant_cell: TenantCellFactory, tmp_path: Path) -> None:
    async with scene(make_tenant_cell, tmp_path) as s:
        await s.ops.start_workflow("Gated", s.ledger, "g", id="gated")
        await waiting_for_the_signal(s, "gated")
        live_url = await live_url_of(s, "gated")

        async with asyncio.timeout(60), s.dev.http.stream("GET", live_url) as stream:
            assert stream.status_code == 200
            signed_out = await s.dev.post_from(s.workflows(), "/signout", {})
            assert signed_out.status_code == 303
            # The run advances after the session ended: the stream tells nothing of it.
            await s.ops.signal("gated", "proceed")
            events = [pair async for pair in server_sent_events(stream)]
        assert events == [("end", "signed-out")]
        document = await s.status_of("gated", "completed")
        # The stream had something to send (the signal and what followed it) and did not.
        [seen] = parse_qs(urlsplit(live_url).query)["seen"]
        assert document["next_event_id"] > int(seen)
        # A stream opened afterwards is a page of a signed-out visitor.
        async with s.dev.http.stream("GET", live_url) as again:
            assert again.status_code == 401


async def test_live_streams_are_capped_per_session(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    async with scene(make_tenant_cell, tmp_path) as s:
        await s.ops.start_workflow("Gated", s.ledger, "g", id="gated")
        await waiting_for_the_signal(s, "gated")
        live_url = await live_url_of(s, "gated")
        async with AsyncExitStack() as streams:
            opened = [await streams.enter_async_context(s.dev.http.stream("GET", live_url)) for _ in range(8)]
            assert [r.status_code for r in opened] == [200] * 8
            async with asyncio.timeout(30), s.dev.http.stream("GET", live_url) as refused:
                assert refused.status_code == 429
                assert "this session follows 8 runs live already" in (await refused.aread()).decode()
            # Another session of the same user has streams of its own.
            other = await s.console.signed_in(DEV)
            async with other.http.stream("GET", live_url) as elsewhere:
                assert elsewhere.status_code == 200
            await other.aclose()
            # A stream the browser closed gives its place back.
            await opened[0].aclose()

            async def reopened() -> None:
                async with s.dev.http.stream("GET", live_url) as stream:
                    assert stream.status_code == 200, stream.status_code

            await eventually(reopened, timeout=30)


# The security review's reproduction, smaller: a namespace allowed one action every two seconds (a burst
# of one) and two workflows at once.
TIGHT = Quota(actions_per_second=0.5, burst=1, max_concurrent_workflows=2)


async def test_console_starts_are_held_to_the_concurrency_quota(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    async with scene(make_tenant_cell, tmp_path, TIGHT) as s:
        form = await s.dev.get(s.workflows())
        token = token_of(form.text)

        async def start(workflow_id: str) -> httpx.Response:
            return await s.dev.http.post(
                s.workflows(),
                data={
                    "workflow_type": "Gated",
                    "workflow_id": workflow_id,
                    "args": json.dumps([s.ledger, workflow_id]),
                    "csrf_token": token,
                },
            )

        # Six starts at once: two run, the others are refused by admission's concurrency quota (the
        # second of the two waits two seconds for its turn at the namespace's rate). Admission takes
        # deliveries concurrently: its running count must hold across them (RunningCounts).
        ids = [f"q-{i}" for i in range(6)]
        answers = await asyncio.gather(*(start(w) for w in ids))
        codes = sorted(a.status_code for a in answers)
        assert codes == [303, 303, 429, 429, 429, 429], [(a.status_code, a.text[-400:]) for a in answers]
        for answer in answers:
            if answer.status_code == 429:
                assert "the namespace allows 2 at once" in html.unescape(answer.text)
        assert len(await s.store.list_runs(s.namespace, limit=100)) == 2
        assert await s.store.count_running(s.namespace) == 2
        starts = await s.audit("workflow.start")
        assert sorted(e["outcome"] for e in starts) == ["done"] * 2 + ["failed"] * 4
        assert sum("allows 2 at once" in e["detail"] for e in starts) == 4


async def test_console_signals_wait_their_turn_at_the_namespace_rate(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    async with scene(make_tenant_cell, tmp_path, TIGHT) as s:
        # Started past admission (the test's own setup): the bucket is full when the signals come.
        target = "signalled"
        await s.ops.start_workflow("Gated", s.ledger, "g", id=target)
        await s.status_of(target, "running")
        page = s.workflow(target)
        token = token_of((await s.dev.get(page)).text)
        signals = 4
        # The bucket holds at most the burst: by time t admission can have let burst + rate * t in, so
        # the last signal is answered (admitted, produced) no sooner than this after they were sent.
        least = (signals - TIGHT.burst) / TIGHT.actions_per_second
        loop = asyncio.get_running_loop()
        sent = loop.time()
        answers = await asyncio.gather(
            *(
                s.dev.http.post(f"{page}/signal", data={"name": f"ping-{i}", "args": "", "csrf_token": token})
                for i in range(signals)
            )
        )
        took = loop.time() - sent
        assert [a.status_code for a in answers] == [303] * signals, [a.text[-400:] for a in answers]
        assert took >= least, (took, least)

        async def recorded() -> list[h.WorkflowExecutionSignaled]:
            history = await s.ops.history(target)
            pings = [e for e in history if isinstance(e, h.WorkflowExecutionSignaled)]
            assert len(pings) == signals, pings
            return pings

        # Each recorded once (none sent again while it waited), and let into the cell spread out at the
        # rate: admission's own times (the engine's, in the history, move with its pace on the machine).
        await eventually(recorded, timeout=30)
        admitted = [
            t
            for t, envelope in await admissions(s.tenants.cell, s.namespace)
            if isinstance(envelope.message, SignalWorkflow)
        ]
        assert len(admitted) == signals, admitted
        span = max(admitted) - min(admitted)
        assert span >= least - 0.25, (span, least)
        assert {e["outcome"] for e in await s.audit("workflow.signal")} == {"done"}


async def server_sent_events(stream: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """The (event, data) pairs of a text/event-stream response; a ping (a comment) is none."""
    event = "message"
    data: list[str] = []
    async for line in stream.aiter_lines():
        if line == "":
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
