"""The Dashboard in a real headless Chromium (Debian's package, driven by Playwright) against the real
system: an account signs in, creates a key, uses it, sees the usage, revokes it and sees it refused; an
operator sees the accounts and the pools."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import IN_CI
from tests.e2e.running_system import RunningSystem
from tests.waiting import eventually_sync

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN_TOKEN = "admin-browser-test-token-0123456789abcdef"
MODEL = "aiorouter/priced-echo"
CONFIG = f"""
worker_heartbeat_interval = 0.5
worker_dead_after = 3.0
key_cache_ttl = 1.0
admin_token = "{ADMIN_TOKEN}"

[providers.simulated]
kind = "simulated"

[[models]]
id = "{MODEL}"
input_price_per_m = 2.0
output_price_per_m = 4.0
deployments = [{{ provider = "simulated", upstream_model = "echo" }}]
"""
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian chromium under Playwright; skipped locally when either is missing, never in CI."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing (apt-get install chromium; scripts/test does it under CI=true)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true: the dashboard browser test must run, but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def system(launch_system) -> RunningSystem:  # type: ignore[no-untyped-def]
    """One ingress (admin API on) and one worker of the simulated pool, with a priced model."""
    return launch_system(CONFIG, pools=["simulated"])


def admin(system: RunningSystem, method: str, path: str, **options: Any) -> dict[str, Any]:
    response = httpx.request(
        method,
        system.origin + path,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
        **options,
    )
    assert response.status_code < 300, response.text
    body: dict[str, Any] = response.json()
    return body


def test_account_creates_uses_and_revokes_a_key(system: RunningSystem, browser: Any) -> None:
    """Sign in with a dashboard token, create a named key (secret shown once), call the API with it, see
    the usage and the spending appear, revoke it, and see the API refuse it within the key cache TTL."""
    created = admin(system, "POST", "/admin/accounts", json={"id": "browser", "name": "Browser Co"})
    admin(system, "POST", "/admin/accounts/browser/credits", json={"amount_usd": 5, "reason": "trial"})
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{system.origin}/dashboard")
    page.fill("#token", created["dashboard_token"])
    page.click("#sign-in")
    page.wait_for_selector("#account-id:text-is('browser')")  # selectors run outside the page's CSP
    assert page.text_content("#account-plan") == "unverified"
    assert page.text_content("#account-rate-limit") == "10 requests/min"
    assert page.text_content("#credit-available") == "5.000000 USD"
    assert page.text_content("#keys td.empty") == "No keys yet — create one above"
    assert (page.text_content("#usage td.empty") or "").startswith("No usage yet")
    assert not page.is_visible("#usage-chart")  # no chart of nothing
    _screenshot(page, "account-empty")

    page.fill("#key-name", "from the browser")
    page.click("#create-key")
    page.wait_for_selector("#new-key:not([hidden])")
    secret = page.text_content("#new-key-secret") or ""
    assert secret.startswith("ak-")
    page.wait_for_selector("#keys tr:has-text('from the browser')")

    client = system.client(api_key=secret)
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello from the dashboard"}], max_tokens=20
    )
    assert completion.choices[0].message.content

    page.click("#refresh")
    page.wait_for_selector(f"#usage tr:has-text('{MODEL}')")
    usage_row = page.text_content(f"#usage tr:has-text('{MODEL}')") or ""
    assert completion.usage is not None and str(completion.usage.prompt_tokens) in usage_row
    assert page.text_content("#credit-spent") != "0.000000 USD"
    assert page.locator("#usage-chart rect").count() == 14
    assert page.locator("#keys td.empty").count() == 0 and page.locator("#usage td.empty").count() == 0
    _assert_chart_axes(page, spent_usd=float((page.text_content("#credit-spent") or "").split()[0]))
    _screenshot(page, "account-usage")

    page.click("#dismiss-key")
    assert page.text_content("#new-key-secret") == ""  # shown once: gone from the page
    page.click("#keys tr:has-text('from the browser') button.revoke")
    page.wait_for_selector("#keys tr.revoked:has-text('from the browser')")
    eventually_sync(lambda: _refused(client), within=5.0, interval=0.5)  # the plan allows 10 requests/min
    context.close()


def test_operator_sees_accounts_and_pools(system: RunningSystem, browser: Any) -> None:
    """Signed in with the admin token, the dashboard lists every account and each pool's queue and live
    workers."""
    admin(system, "POST", "/admin/accounts", json={"id": "someone-else"})
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{system.origin}/dashboard")
    page.fill("#token", ADMIN_TOKEN)
    page.click("#sign-in")
    page.wait_for_selector("#accounts tr:has-text('someone-else')")
    page.wait_for_selector("#pools tr:has-text('simulated')")
    pool_row = page.text_content("#pools tr:has-text('simulated')") or ""
    assert "1: " in pool_row  # one live worker, named
    context.close()


def test_operator_sees_each_pool_live(system: RunningSystem, browser: Any) -> None:
    """After a few completions, the pool's row shows a non-zero throughput, no errors, a TTFT p50 and p99,
    a bar per minute, no queue, and its deployment's breaker closed."""
    account = "traffic"
    admin(system, "POST", "/admin/accounts", json={"id": account})
    admin(system, "POST", f"/admin/accounts/{account}/credits", json={"amount_usd": 5})
    secret = admin(system, "POST", f"/admin/accounts/{account}/keys", json={"name": "load"})["secret"]
    client = system.client(api_key=secret)
    for _ in range(3):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5
        )
    page = _operator_page(browser, system)
    pool = "#pools tr[data-pool='simulated']"
    # Polled from Python: a JavaScript predicate string would need 'unsafe-eval', which the CSP refuses.
    throughput = page.locator(f"{pool} td:nth-child(6)")
    eventually_sync(lambda: throughput.count() and throughput.text_content() != "0.0", interval=0.2)
    cells = page.locator(f"{pool} td").all_text_contents()
    assert cells[1].startswith("1: ") and cells[2] == "0" and cells[3] == "0"  # one worker, nothing waiting
    assert cells[4] == "0 queued, 0 running"  # its batch lane
    assert float(cells[5]) > 0 and cells[7] == "0.0%"
    assert cells[8].endswith(" ms") or cells[8].endswith(" s")
    assert cells[9].endswith(" ms") or cells[9].endswith(" s")
    assert "echo: closed" in cells[10]
    assert page.locator(f"{pool} svg.spark g").count() == 6  # five whole minutes and the current one
    _screenshot(page, "operator")
    page.context.close()


def test_operator_changes_plan_credit_and_status(system: RunningSystem, browser: Any) -> None:
    """Each account action opens a dialog saying what it will do and acts only once confirmed: Cancel
    changes nothing, a refused amount keeps the dialog open with the server's message, and a confirmed
    plan change, credit grant, suspension and resumption show in the table and in the admin API; a
    suspended account's key is refused."""
    account = "managed"
    admin(system, "POST", "/admin/accounts", json={"id": account, "name": "Managed Ltd"})
    admin(system, "POST", f"/admin/accounts/{account}/credits", json={"amount_usd": 1})
    secret = admin(system, "POST", f"/admin/accounts/{account}/keys", json={"name": "k"})["secret"]
    page = _operator_page(browser, system)
    row = f"#accounts tr[data-account-id='{account}']"
    page.wait_for_selector(row)

    page.click(f"{row} button[data-action='suspend']")
    page.wait_for_selector("#action-dialog[open]")
    assert page.text_content("#action-title") == f"Suspend {account}?"
    page.click("#action-cancel")
    page.wait_for_selector("#action-dialog", state="hidden")
    assert admin(system, "GET", f"/admin/accounts/{account}")["status"] == "active"

    page.click(f"{row} button[data-action='plan']")
    page.wait_for_selector("#action-dialog[open]")
    assert page.is_disabled("#action-confirm")  # the current plan: nothing to confirm
    page.select_option("#action-plan", "developer")
    assert (
        page.text_content("#action-summary")
        == f"Move {account} from unverified to developer: 60 requests/min."
    )
    page.click("#action-confirm")
    page.wait_for_selector(f"{row} td:nth-child(3):text-is('developer')")
    assert admin(system, "GET", f"/admin/accounts/{account}")["plan"] == "developer"
    assert page.text_content("#operator-notice") == f"{account} is now on plan developer."

    page.click(f"{row} button[data-action='credit']")
    page.wait_for_selector("#action-dialog[open]")
    assert page.is_visible("#action-amount") and not page.is_visible("#action-plan")
    page.fill("#action-amount", "abc")
    assert page.is_disabled("#action-confirm")
    page.fill("#action-amount", "2000000000")  # over the largest grant: the server refuses it
    page.click("#action-confirm")
    page.wait_for_selector("#action-error:not([hidden])")
    assert (page.text_content("#action-error") or "").startswith("An amount")
    assert page.is_visible("#action-dialog")
    page.fill("#action-amount", "2.5")
    assert not page.is_visible("#action-error")  # the refusal was about the amount just replaced
    page.fill("#action-reason", "goodwill")
    _screenshot(page, "operator-add-credit")
    assert page.text_content("#action-summary") == f"Grant 2.5 USD to {account}."
    page.click("#action-confirm")
    page.wait_for_selector(f"{row} td:nth-child(6):text-is('3.500000')")
    ledger = admin(system, "GET", f"/admin/accounts/{account}/credits")["ledger"]
    assert ledger[0]["reason"] == "goodwill"

    page.click(f"{row} button[data-action='suspend']")
    page.wait_for_selector("#action-dialog[open]")
    page.click("#action-confirm")
    page.wait_for_selector(f"{row}.suspended button[data-action='resume']")
    client = system.client(api_key=secret)
    eventually_sync(lambda: _refused(client), within=5.0, interval=0.5)  # after the key cache's TTL

    page.click(f"{row} button[data-action='resume']")
    page.wait_for_selector("#action-dialog[open]")
    page.click("#action-confirm")
    page.wait_for_selector(f"{row}:not(.suspended) button[data-action='suspend']")
    assert admin(system, "GET", f"/admin/accounts/{account}")["status"] == "active"
    page.context.close()


def _operator_page(browser: Any, system: RunningSystem) -> Any:
    """A new page signed in with the admin token."""
    page = browser.new_context().new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{system.origin}/dashboard")
    page.fill("#token", ADMIN_TOKEN)
    page.click("#sign-in")
    return page


def test_operator_sees_no_accounts_yet(system: RunningSystem, browser: Any) -> None:
    """With no account at all (the admin API answering an empty list), the operator's table says so."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    empty = '{"object": "list", "data": [], "total": 0, "offset": 0, "limit": 1000}'
    page.route(
        "**/admin/accounts?*", lambda route: route.fulfill(body=empty, content_type="application/json")
    )
    page.goto(f"{system.origin}/dashboard")
    page.fill("#token", ADMIN_TOKEN)
    page.click("#sign-in")
    page.wait_for_selector("#accounts td.empty")
    assert (page.text_content("#accounts td.empty") or "").startswith("No accounts yet")
    page.wait_for_selector("#pools tr:has-text('simulated')")
    _screenshot(page, "operator-empty")
    context.close()


def test_wrong_token_is_refused_with_a_message(system: RunningSystem, browser: Any) -> None:
    """An unknown dashboard token leaves the page on the sign-in form with the server's message."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{system.origin}/dashboard")
    page.fill("#token", "dt-not-a-real-token")
    page.click("#sign-in")
    page.wait_for_selector("#error:not([hidden])")
    assert "dashboard token" in (page.text_content("#error") or "")
    assert page.is_visible("#sign-in-form")
    context.close()


def _assert_chart_axes(page: Any, *, spent_usd: float) -> None:
    """Both axes are titled; the x axis names today's date, the y axis has rising USD ticks from 0 to at
    least the highest bar, and the tallest bar (all of today's spending) reaches the right height."""
    assert page.text_content("#usage-chart-x-title") == "Day (UTC)"
    assert page.text_content("#usage-chart-y-title") == "Cost (USD)"
    x_labels = page.locator("#usage-chart text.tick-x").all_text_contents()
    assert len(x_labels) == 14 and x_labels[-1] == time.strftime("%m-%d", time.gmtime())
    ticks = [float(t) for t in page.locator("#usage-chart text.tick-y").all_text_contents()]
    assert ticks[0] == 0 and ticks == sorted(ticks) and len(ticks) >= 2 and ticks[-1] >= spent_usd > 0
    bars = page.locator("#usage-chart rect.bar")
    heights = [float(bars.nth(i).get_attribute("height") or 0) for i in range(bars.count())]
    assert heights[-1] == max(heights) > 0 and heights[:-1] == [0.0] * 13


def _screenshot(page: Any, name: str) -> None:
    """Save a full-page screenshot under $AIOROUTER_SCREENSHOT_DIR when set, for people to look at."""
    directory = os.environ.get("AIOROUTER_SCREENSHOT_DIR")
    if directory:
        page.screenshot(path=str(Path(directory) / f"dashboard-{name}.png"), full_page=True)


def _refused(client: openai.OpenAI) -> bool:
    try:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=5)
    except openai.AuthenticationError:
        return True
    return False
