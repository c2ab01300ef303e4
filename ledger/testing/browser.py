"""A real browser on the pages, for tests/web: Debian's Chromium (browser downloads are
impossible here) driven by Playwright, and axe-core (bundled in axe-playwright-python, so it
runs offline) for accessibility.

Where the browser is: LEDGER_CHROMIUM, else /usr/bin/chromium (`.ci/run` installs Debian's
``chromium`` when it is missing). In CI (CI=true) a missing browser fails the tests instead of
skipping them, so a green run always means the pages were tried in a browser.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["SERIOUS", "axe_violations", "chromium_path", "in_ci", "sign_in", "sign_out"]

DEFAULT_CHROMIUM = "/usr/bin/chromium"
# The impacts that fail a page.
SERIOUS = ("serious", "critical")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def chromium_path() -> Path | None:
    """The Chromium to drive, or None when there is none."""
    path = Path(os.environ.get("LEDGER_CHROMIUM") or DEFAULT_CHROMIUM)
    return path if path.is_file() and os.access(path, os.X_OK) else None


def axe_violations(page: Any, impacts: tuple[str, ...] = SERIOUS) -> list[dict[str, Any]]:
    """axe-core's violations of ``impacts`` on the page as it is now: id, impact, help and the
    offending elements, for an assertion message that says what to fix."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    found: list[dict[str, Any]] = []
    for violation in results.response["violations"]:
        if violation.get("impact") in impacts:
            found.append(
                {
                    "id": violation["id"],
                    "impact": violation["impact"],
                    "help": violation["help"],
                    "nodes": [node.get("html", "")[:200] for node in violation.get("nodes", [])][:5],
                }
            )
    return found


def sign_in(page: Any, token: str) -> None:
    """Sign in at /ui/sign-in as a person would: the field "Token", the button "Sign in"."""
    page.goto("/ui/sign-in")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/")


def sign_out(page: Any) -> None:
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/ui/sign-in")
