"""A real browser for the portal's tests: Playwright driving the system's Chromium.

Playwright's own browser download does not work on the machines this suite runs on; Debian's
`chromium` package does, and `make test` installs it when it is missing. A missing browser
fails the test that needs it, with the command that installs it: never a skip.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, Page, async_playwright

CHROMIUM: Final = Path("/usr/bin/chromium")
# No network of its own (updates, sync, field trials): the tests reach loopback only.
ARGS: Final = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
# Screenshots of each screen, kept as test artifacts (gitignored), for a person to look at.
ARTIFACTS: Final = Path(__file__).resolve().parents[2] / ".artifacts" / "portal"
# axe-core's impacts that fail a test.
BLOCKING: Final = ("serious", "critical")


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: the browser tests need it. `make test` installs it "
        "(apt-get install -y chromium)"
    )
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def accessible(page: Page) -> None:
    """axe-core (the copy inside the axe-playwright-python package) finds nothing serious."""
    results = await Axe().run(page)
    blocking = [v for v in results.response["violations"] if v["impact"] in BLOCKING]
    assert not blocking, [(v["id"], v["help"], [n["target"] for n in v["nodes"]]) for v in blocking]
