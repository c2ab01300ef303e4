"""Sign in and out as each role in a real browser; the navigation shows what the role can use;
a page the role may not see is the 403 page; the admin's tokens page. Every page is checked
with axe-core."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect

from ledger.testing.browser import sign_in, sign_out
from ledger.testing.live import Served

# What each role's navigation shows (ledger.web.nav) and a page it may not see.
NAV = {
    "manager": (["Home", "Imports", "Upload a manifest", "Quarantine"], "/ui/tokens"),
    "officer": (["Home", "Imports", "Quarantine", "Audit"], "/ui/imports/new"),
    "auditor": (["Home", "Imports", "Quarantine", "Audit"], "/ui/tokens"),
    "admin": (["Home", "Imports", "Upload a manifest", "Quarantine", "Audit", "Tokens"], None),
}


@pytest.mark.parametrize("who", list(NAV))
def test_sign_in_and_out(page: Any, served: Served, accessible: Callable[[Any], None], who: str) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/ui/sign-in\?next=%2Fui(%2F)?$"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    accessible(page)
    sign_in(page, served.tokens[who])
    links, forbidden = NAV[who]
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link")).to_have_text(links)
    accessible(page)
    if forbidden is not None:
        response = page.goto(forbidden)
        assert response is not None and response.status == 403
        expect(page.get_by_text("You may not see this page")).to_be_visible()
        accessible(page)
    sign_out(page)
    expect(page.get_by_label("Token")).to_be_visible()
    # The session is over: a page sends the browser to sign in again.
    page.goto("/ui/imports")
    expect(page).to_have_url(re.compile(r"/ui/sign-in\?next="))


def test_a_wrong_token_is_told_and_signs_nobody_in(page: Any, accessible: Callable[[Any], None]) -> None:
    page.goto("/ui/sign-in")
    page.get_by_label("Token").fill("ldg_not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("That token is not valid (unknown or revoked).")
    expect(page.get_by_label("Token")).to_have_attribute("aria-invalid", "true")
    accessible(page)
    page.goto("/ui/")
    expect(page).to_have_url(re.compile(r"/ui/sign-in"))


def test_sign_in_returns_to_the_page_asked_for(page: Any, served: Served) -> None:
    page.goto("/ui/imports")
    page.get_by_label("Token").fill(served.tokens["auditor"])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/ui/imports$"))
    expect(page.get_by_role("table", name="Imports")).to_be_visible()


def test_admin_creates_a_token_shown_once_and_revokes_it(
    page: Any, served: Served, accessible: Callable[[Any], None]
) -> None:
    sign_in(page, served.tokens["admin"])
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Tokens").click()
    expect(page.get_by_role("table", name="Tokens")).to_be_visible()
    accessible(page)
    page.get_by_label("Role").select_option("lab_manager")
    page.get_by_label("chem-lab").check()
    page.get_by_label("Label").fill("<b>Lab tech</b>")
    page.get_by_label("Expires in (days)").fill("30")
    page.get_by_role("button", name="Create token").click()
    secret = page.get_by_label("New token").input_value()
    assert secret.startswith("ldg_")
    expect(page.get_by_text("shown this once")).to_be_visible()
    accessible(page)
    row = page.get_by_role("row").filter(has_text="<b>Lab tech</b>")
    expect(row).to_have_count(1)
    # A new browser signs in with it.
    other = page.context.browser.new_context(base_url=served.base_url)
    try:
        second = other.new_page()
        sign_in(second, secret)
        expect(second.get_by_text("Signed in as lab manager for chem-lab")).to_be_visible()
        # Revoked: the session it started ends with it.
        row.get_by_role("button", name=re.compile("^Revoke")).click()
        expect(page.get_by_role("row").filter(has_text="<b>Lab tech</b>")).not_to_contain_text("no")
        second.goto("/ui/imports")
        expect(second).to_have_url(re.compile(r"/ui/sign-in\?"))
    finally:
        other.close()
    assert page.get_by_label("New token").count() == 0  # never shown again
