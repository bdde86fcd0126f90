"""A headless browser for the console's tests: Playwright driving the system's chromium (Playwright's
own browser download is not used; scripts/bootstrap installs Debian's chromium)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import Browser, async_playwright


def chromium_path() -> str:
    path = os.environ.get("PERDURE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "no chromium on PATH: scripts/bootstrap installs it (or set PERDURE_CHROMIUM)"
    return path


@asynccontextmanager
async def headless_chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        # --no-sandbox: CI runs as root, where chromium's own sandbox refuses to start.
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            await browser.close()
