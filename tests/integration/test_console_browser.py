"""The console in a real browser (headless chromium driven by Playwright) on the real stack: sign in,
start a workflow and watch its page follow it live to completion, open its history, signal a waiting
run and see the signal arrive, terminate another and see it terminated.

With PERDURE_UPDATE_SCREENSHOTS=1 the run page's screenshot is written to docs/images/ (the README's
picture); otherwise it goes to the test's folder."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

from playwright.async_api import Page, expect

from perdure.platform.tenancy.model import Quota

from .browser_harness import headless_chromium
from .cell_harness import REPO
from .conftest import TenantCellFactory
from .console_harness import PASSWORD, running_console

SCREENSHOT = REPO / "docs" / "images" / "console-run-timeline.png"
WAIT_MS = 60_000


async def start_from_the_list(
    page: Page, workflows_url: str, workflow_type: str, workflow_id: str, args: str
) -> None:
    await page.goto(workflows_url)
    start = page.locator("section.start-form form")
    await start.locator("[name=workflow_type]").select_option(workflow_type)
    await start.locator("[name=workflow_id]").fill(workflow_id)
    await start.locator("[name=args]").fill(args)
    await start.get_by_role("button", name="Start").click()
    await expect(page.locator("h1 .workflow-id")).to_have_text(workflow_id, timeout=WAIT_MS)


async def mark_document(page: Page) -> None:
    """A mark on this very document: still there later only if the page changed without loading again."""
    await page.evaluate("window.perdureTestMark = 'still the same document'")


async def same_document(page: Page) -> bool:
    return await page.evaluate("window.perdureTestMark === 'still the same document'")  # type: ignore[no-any-return]


async def test_a_browser_follows_runs_live_and_acts_on_them(
    make_tenant_cell: TenantCellFactory, tmp_path: Path
) -> None:
    tenants = await make_tenant_cell({"a": Quota.unthrottled()})
    namespace = tenants.a.record.name
    workflows_url = f"/namespaces/{namespace}/workflows"
    async with running_console(tenants.cell.settings) as console, headless_chromium() as browser:
        await console.add_user("acct-a", "dev@a.example.com", "developer")
        context = await browser.new_context(base_url=console.url, viewport={"width": 1280, "height": 1000})
        page = await context.new_page()

        # Sign in (the first page asks for it, answering 401).
        await page.goto("/")
        await page.get_by_label("E-mail").fill("dev@a.example.com")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("h1")).to_have_text("Namespaces")
        await expect(page.get_by_role("link", name=namespace)).to_be_visible()
        # From here on, no script error and no failed request (a 4xx or 5xx) on any page.
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on(
            "console",
            lambda message: problems.append(message.text) if message.type == "error" else None,
        )

        # Start a run whose activity waits for the test; its page follows it live until it completes.
        ledger = tmp_path / "ledger"
        gated = f"order-{uuid.uuid4().hex[:6]}"
        await start_from_the_list(page, workflows_url, "GatedActivity", gated, f'["{ledger}", "pack"]')
        await expect(page.locator("#live-state")).to_contain_text("Live", timeout=WAIT_MS)
        await expect(page.locator(".pending-activity")).to_contain_text("waits_for_gate", timeout=WAIT_MS)
        await mark_document(page)
        # Its event history, opened while the run waits: it stays open, and grows, as the run advances.
        await page.locator("details.raw-history > summary").click()
        history = page.locator("table.history")
        await expect(history).to_be_visible()
        await expect(history).to_contain_text("activity_task_scheduled")
        await asyncio.to_thread(Path(f"{ledger}.pack.open").touch)
        summary_status = page.locator(".run-summary .status")
        await expect(summary_status).to_have_text("completed", timeout=WAIT_MS)
        await expect(page.locator(".run-result")).to_contain_text("pack-done")
        await expect(page.locator("tr.tl-activity")).to_contain_text("waits_for_gate")
        await expect(page.locator("#live-state")).to_contain_text("closed")
        assert await same_document(page), "the page loaded again: the run's progress did not arrive live"
        await expect(history).to_be_visible()
        await expect(history).to_contain_text("workflow_execution_completed")

        # A run that waits on a signal: send it from the page and see it arrive, and the run complete.
        mixed = f"mixed-{uuid.uuid4().hex[:6]}"
        await start_from_the_list(page, workflows_url, "MixedWork", mixed, f'["{ledger}", "{mixed}"]')
        await expect(page.locator(".waits-on")).to_contain_text("signal", timeout=WAIT_MS)
        signal_form = page.locator("form.signal-form")
        await signal_form.locator("[name=name]").fill("proceed")
        await signal_form.get_by_role("button", name="Send signal").click()
        await expect(page.locator("tr.tl-signal")).to_contain_text("proceed", timeout=WAIT_MS)
        await expect(summary_status).to_have_text("completed", timeout=WAIT_MS)
        await expect(page.locator("tr.tl-child")).to_contain_text(f"{mixed}-child")
        await expect(page.locator("tr.tl-timer")).to_have_count(1)
        shot = SCREENSHOT if os.environ.get("PERDURE_UPDATE_SCREENSHOTS") else tmp_path / SCREENSHOT.name
        # The title, summary and timeline (not the input: it names the test's folder).
        top, bottom = (
            await page.locator("main").bounding_box(),
            await page.locator("#run-live").bounding_box(),
        )
        assert top is not None and bottom is not None
        await page.screenshot(
            path=str(shot),
            full_page=True,
            clip={
                "x": top["x"],
                "y": top["y"],
                "width": top["width"],
                "height": bottom["y"] + bottom["height"] - top["y"],
            },
        )
        assert shot.stat().st_size > 20_000  # a picture of the page, not an empty frame

        # Terminate a waiting run from its page.
        waiting = f"waiting-{uuid.uuid4().hex[:6]}"
        await start_from_the_list(page, workflows_url, "Gated", waiting, f'["{ledger}", "{waiting}"]')
        await expect(page.locator(".waits-on")).to_contain_text("signal", timeout=WAIT_MS)
        terminate = page.locator("form.terminate-form")
        await terminate.locator("[name=reason]").fill("ordered by mistake")
        await terminate.get_by_role("button", name="Terminate").click()
        await expect(summary_status).to_have_text("terminated", timeout=WAIT_MS)
        await expect(page.locator("p.close-reason")).to_contain_text("ordered by mistake")
        # No terminate form for a closed run: absent if the page was drawn after the close, hidden by the
        # live page's end of stream if the close came after it (the redirect after the POST may be first).
        await expect(page.locator("form.terminate-form")).to_be_hidden(timeout=WAIT_MS)

        # The list shows all three with their outcomes.
        await page.goto(workflows_url)
        for workflow_id, status in ((gated, "completed"), (mixed, "completed"), (waiting, "terminated")):
            row = page.locator("tr", has=page.get_by_role("link", name=workflow_id, exact=True))
            await expect(row).to_contain_text(status)
        assert problems == [], problems
        await context.close()
