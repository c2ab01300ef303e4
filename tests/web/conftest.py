"""Browser fixtures: the whole service on a real uvicorn server on 127.0.0.1 with a worker in
the process and real PostgreSQL (ledger.testing.live), and Debian's Chromium driven by
Playwright, a fresh browser context (cookies, local storage) per test.

A browser test takes ``page`` (a Playwright page whose relative URLs go to the server),
``served`` (its URL and a token per role of ledger.testing.TOKENS), and checks every page it
visits with ``accessible(page)`` (axe-core: no serious or critical violation). Whatever the
page logs as an error (a script blocked by the Content-Security-Policy, say) fails the test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ledger.config import Settings
from ledger.testing.browser import axe_violations, chromium_path, in_ci
from ledger.testing.checkout import POLICIES_DIR
from ledger.testing.databases import run_admin, with_database
from ledger.testing.live import Served, run_aside, serving_api


def _unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason}: in CI the browser tests must run (.ci/run installs Debian's chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def playwright_browser(served: Served) -> Iterator[Any]:
    """Chromium for one module's tests. Module-scoped, and started after the server: the sync
    Playwright API holds an event loop running in the main thread while it lives, where
    asyncio.run (the database fixtures) and the async tests of other modules cannot run."""
    path = chromium_path()
    if path is None:
        _unavailable("no Chromium at /usr/bin/chromium (or LEDGER_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        # As root (CI, containers) Chromium's sandbox cannot start.
        browser = playwright.chromium.launch(executable_path=str(path), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def served(pg_server: str, template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The service on a database of its own for the module's tests."""
    name = f"ledger_web_{uuid.uuid4().hex[:10]}"
    run_aside(run_admin(pg_server, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"'))
    url = with_database(pg_server, name)
    settings = Settings(
        database_url=url,
        home=tmp_path_factory.mktemp("web"),
        policies_dir=POLICIES_DIR,
        import_processes=0,
        auth_failures_per_minute=1_000,
    )
    try:
        with serving_api(settings, url) as live:
            yield live
    finally:
        run_aside(run_admin(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def page(served: Served, playwright_browser: Any) -> Iterator[Any]:
    context = playwright_browser.new_context(base_url=served.base_url, accept_downloads=True)
    context.set_default_timeout(15_000)
    browser_page = context.new_page()
    errors: list[str] = []
    browser_page.on("console", lambda m: errors.append(m.text) if m.type == "error" and _ours(m.text) else None)
    browser_page.on("pageerror", lambda e: errors.append(str(e)))
    yield browser_page
    context.close()
    assert not errors, f"the page logged errors: {errors}"


def _ours(text: str) -> bool:
    """Errors the page itself caused: a 4xx a test asks for on purpose is not one."""
    return "Failed to load resource" not in text


@pytest.fixture
def accessible() -> Callable[[Any], None]:
    def check(page: Any) -> None:
        violations = axe_violations(page)
        assert not violations, f"{page.url}: {violations}"

    return check
