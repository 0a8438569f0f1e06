"""The Prefect UI, in a real headless browser: the deployments and their schedules are visible, and a paused
rotation is resumed by clicking "Resume" on its flow run page.

The browser is Debian's Chromium (/usr/bin/chromium, installed by ``scripts/install-browser.sh``, which
``make install`` runs) driven by Python playwright (a test extra; its wheel ships its own driver). Playwright's
own browser download (``playwright install``) is never used. Screenshots land in ``OUTPUT``: ``ui-deployments.png``,
``ui-resumed.png``, ``ui-completed.png``, and ``ui-failure.png`` (with ``ui-failure.html`` and a playwright trace,
``ui-trace.zip``) when the test fails.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import re
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from keyrotor.adapters.connections import Connections
from keyrotor.adapters.prefect_api import WAITING
from keyrotor.core.model import Phase
from keyrotor.deployments.table import NAMES
from tests.conftest import OUTPUT
from tests.helpers import keyrotor_cli
from tests.integration.support import (
    active_keys,
    assert_rotated,
    processes_of,
    required,
    run_state,
    schedule_rotation,
    wait_for,
)

if TYPE_CHECKING:  # playwright is a test extra, imported where it is used (browser_installed says when it is missing)
    from playwright.sync_api import Page

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
# Flags this machine's closed network needs (no background connections to Google's hosts).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEPLOYMENTS = list(NAMES)
# finish-due-deletions runs hourly: an interval schedule, which the UI's list shows as "Hourly". (Its cron form,
# "At 17 minutes past the hour every day", did not fit the column below 1920 pixels and showed as "+1".)
SWEEP_SCHEDULE = re.compile(r"Hourly|Every hour")
UI_TIMEOUT_MS = 30_000
INSTALL_HINT = (
    "install it with `make install` (or: `bash scripts/install-browser.sh` for Debian's chromium and "
    "`.venv/bin/pip install -c constraints.txt -e '.[test]'` for playwright); never `playwright install`"
)


@pytest.fixture(scope="session")
def browser_installed() -> None:
    """Fail (not skip) at once, before any server starts, when the browser or its driver is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as error:
        pytest.fail(f"Python playwright is missing ({error}): {INSTALL_HINT}")
    if not CHROMIUM.exists():
        pytest.fail(f"Debian's chromium is missing ({CHROMIUM} does not exist): {INSTALL_HINT}")


@pytest.fixture
def ui_page(browser_installed: None, stack_environ: dict[str, str], tmp_path: Path) -> Iterator[tuple[Page, str]]:
    """A fresh headless Chromium (own empty profile) pointed at the stack's Prefect UI; yields (page, base URL)."""
    from playwright.sync_api import sync_playwright

    api = stack_environ["PREFECT_API_URL"].rstrip("/")
    base = api.removesuffix("api")
    api_origin = urlsplit(api).netloc
    stray: list[str] = []

    with sync_playwright() as playwright:
        try:
            context = playwright.chromium.launch_persistent_context(
                user_data_dir=str(tmp_path / "chromium-profile"),
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1366, "height": 768},  # a common laptop screen
            )
        except Exception as error:  # noqa: BLE001 - any launch failure means the browser is not usable
            pytest.fail(f"could not start {CHROMIUM} with playwright: {error}\n{INSTALL_HINT}")
        context.set_default_timeout(UI_TIMEOUT_MS)
        context.tracing.start(screenshots=True, snapshots=True)

        # The UI must be told its own server's API (the stack sets PREFECT_UI_API_URL), whatever the port.
        with urllib.request.urlopen(f"{base}ui-settings", timeout=10) as response:
            assert json.load(response)["api_url"] == api, "the Prefect UI would call another server's API"
        context.on(
            "request",
            lambda request: (
                stray.append(request.url)
                if "/api/" in request.url and urlsplit(request.url).netloc != api_origin
                else None
            ),
        )
        page = context.pages[0] if context.pages else context.new_page()
        try:
            yield page, base
        finally:
            with contextlib.suppress(Exception):  # the test saved the trace itself if it failed
                context.tracing.stop()
            context.close()
    assert not stray, f"the UI called another server's API: {stray[:5]}"


def screenshot(page: Page, name: str) -> Path:
    path = OUTPUT / name
    page.screenshot(path=str(path), full_page=True)
    return path


def test_deployments_visible_and_paused_rotation_resumed_by_click(
    browser_installed: None,
    ui_page: tuple[Page, str],
    served: subprocess.Popen[str],
    iam: Any,
    connections: Connections,
    user_factory: Callable[..., str],
    stack_environ: dict[str, str],
) -> None:
    from playwright.sync_api import expect

    page, base = ui_page
    try:
        # (a) The deployments page: the four deployments and the sweep's hourly schedule.
        page.goto(f"{base}deployments")
        expect(page.get_by_text(re.compile(rf"^\s*{len(NAMES)} Deployments\s*$"))).to_be_visible()
        for name in DEPLOYMENTS:
            row = page.get_by_role("row").filter(has=page.get_by_role("link", name=name, exact=True))
            expect(row, f"a row for deployment {name}").to_have_count(1)
            expect(row).to_be_visible()
        sweep = page.get_by_role("row").filter(has=page.get_by_role("link", name="finish-due-deletions", exact=True))
        expect(sweep, "finish-due-deletions shows its hourly schedule").to_contain_text(SWEEP_SCHEDULE)
        for scheduled in ("finish-due-deletions", "audit-and-remediate"):
            row = page.get_by_role("row").filter(has=page.get_by_role("link", name=scheduled, exact=True))
            expect(row, f"{scheduled}'s schedule is shown whole, not collapsed to +1").not_to_contain_text("+1")
        screenshot(page, "ui-deployments.png")

        # (b) A rotation scheduled as the UI's "Run" does. While its old key has not been quiet long enough it is
        # parked: its run shows "Waiting" and holds no process. An operator pauses it (the UI's own Pause is not
        # offered for a suspended run; `keyrotor pause` or the pause-rotation deployment is).
        user = user_factory("ui")
        old = active_keys(iam, user)[0]
        records = connections.records(user)
        # Playwright's sync API keeps an asyncio loop running in this thread, where Prefect's run_deployment
        # would hand back an un-awaited coroutine: schedule from a thread of its own, with this thread's
        # context (Prefect's settings, PREFECT_API_URL among them, are context variables).
        with ThreadPoolExecutor(max_workers=1) as pool:
            run_id = pool.submit(contextvars.copy_context().run, schedule_rotation, user, quiet_period="12s").result(
                timeout=60
            )
        wait_for(lambda: run_state(run_id).name == WAITING, "the rotation to park")
        wait_for(lambda: not processes_of(run_id), "the parked run's process to exit", timeout=30)
        page.goto(f"{base}runs/flow-run/{run_id}")
        expect(page.get_by_text(WAITING, exact=True).first).to_be_visible()
        screenshot(page, "ui-waiting.png")
        paused = keyrotor_cli(stack_environ, "pause", user)
        assert paused.returncode == 0, paused.stderr
        assert required(required(records.load_state()).pause).run_id == run_id and run_state(run_id).name == "Suspended"

        # (c) Its flow run page shows it Suspended; click "Resume" and confirm in the modal.
        page.goto(f"{base}runs/flow-run/{run_id}")
        expect(page.get_by_text("Suspended", exact=True).first).to_be_visible()
        page.get_by_role("button", name="Resume", exact=True).click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text("resume")
        dialog.get_by_role("button", name=re.compile(r"^\s*(Submit|Resume|Confirm)\s*$")).click()
        expect(dialog).to_be_hidden()
        wait_for(
            lambda: required(records.load_state()).pause is None,
            "the resumed run to take the pause off",
            timeout=60,
        )
        expect(page.get_by_text("Suspended", exact=True)).to_have_count(0, timeout=UI_TIMEOUT_MS)
        screenshot(page, "ui-resumed.png")

        # (d) The resumed run goes on from its wait to the end.
        wait_for(lambda: run_state(run_id).is_final(), "the resumed run to finish", timeout=120)
        assert run_state(run_id).is_completed(), run_state(run_id)
        page.reload()
        expect(page.get_by_text("Completed", exact=True).first).to_be_visible()
        screenshot(page, "ui-completed.png")
    except BaseException as error:
        try:
            shot = screenshot(page, "ui-failure.png")
            (OUTPUT / "ui-failure.html").write_text(page.content())
            page.context.tracing.stop(path=str(OUTPUT / "ui-trace.zip"))
            note = f"(screenshot {shot}, page {OUTPUT / 'ui-failure.html'}, trace {OUTPUT / 'ui-trace.zip'}; url {page.url})"
        except Exception as shot_error:  # noqa: BLE001 - keep the original failure
            note = f"(no failure screenshot: {shot_error})"
        if isinstance(error, AssertionError):
            raise AssertionError(f"{error}\n{note}") from error
        if isinstance(error, Exception):  # a playwright TimeoutError, say
            raise AssertionError(f"{type(error).__name__}: {error}\n{note}") from error
        raise

    assert_rotated(iam, connections, user, old)
    state = required(records.load_state())
    assert state.phase is Phase.COMPLETED and state.pause is None, state
