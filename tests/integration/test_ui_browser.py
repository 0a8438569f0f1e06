"""The Prefect UI, in a real headless browser, as an operator works a rotation there: the deployments and their
schedules; a Custom run of rotate-access-key with typed durations; approve and reject through the run's form; a
pause-rotation run, after which the rotation's artifact says paused; the UI's Suspend on a running rotation and its
Resume; rollback-rotation from its form while an application re-reads Vault every two seconds, with no call refused;
and the Runs page filtered by a user's tag, listing every run of that user.

The browser is Debian's Chromium (/usr/bin/chromium, installed by ``scripts/install-browser.sh``, which
``make install`` runs) driven by Python playwright (a test extra; its wheel ships its own driver). Playwright's
own browser download (``playwright install``) is never used. Screenshots land in ``OUTPUT`` (``ui-*.png``), and
``ui-failure.png`` (with ``ui-failure.html`` and a playwright trace, ``ui-trace.zip``) when the test fails.
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
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from keyrotor.adapters.connections import Connections
from keyrotor.core.model import Answer, PauseKind, Phase, RotationState
from keyrotor.deployments.table import NAMES, PAUSE, REMEDIATE, ROLLBACK, ROTATE, SWEEP
from keyrotor.stack.simulated_apps import SimulatedApp
from tests.conftest import OUTPUT
from tests.helpers import keyrotor_cli
from tests.integration.flows.test_one_view import artifact_view
from tests.integration.support import active_keys, assert_rotated, required, run_state, schedule_rotation, wait_for

if TYPE_CHECKING:  # playwright is a test extra, imported where it is used (browser_installed says when it is missing)
    from playwright.sync_api import Locator, Page

pytestmark = pytest.mark.integration
T = TypeVar("T")

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
    api_origin = re.sub(r"^https?://", "", api).split("/")[0]
    stray: list[str] = []

    with sync_playwright() as playwright:
        try:
            context = playwright.chromium.launch_persistent_context(
                user_data_dir=str(tmp_path / "chromium-profile"),
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1366, "height": 900},  # a common laptop screen
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
                stray.append(request.url) if "/api/" in request.url and api_origin not in request.url else None
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


def off_the_ui_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Playwright's sync API keeps an asyncio loop running in this thread, where Prefect's sync-or-async functions
    would hand back an un-awaited coroutine: call them from a thread of its own, with this thread's context (Prefect's
    settings, PREFECT_API_URL among them, are context variables)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(contextvars.copy_context().run, function, *args, **kwargs).result(timeout=120)


def form_field(page: Page, scope: Page | Locator, label: str) -> Locator:
    """A field of a Prefect form (on the page, or in a dialog) by its label (``Quiet Period`` also finds
    ``Quiet Period (Optional)``): the innermost property holding it, as a model's fields sit inside its own."""
    title = page.locator(".schema-form-property__label", has_text=re.compile(rf"^{re.escape(label)}( \(Optional\))?$"))
    return scope.locator(".schema-form-property").filter(has=title).last


def custom_run(page: Page, base: str, deployment: str, text: dict[str, str], switches: tuple[str, ...] = ()) -> str:
    """Run > Custom run on the deployment's page, fill the form as an operator types it, submit it, and return the
    id of the flow run it created (the parameters it sent are checked to be those typed)."""
    from playwright.sync_api import expect

    page.goto(f"{base}deployments")
    page.get_by_role("link", name=deployment, exact=True).first.click()
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run", exact=True).click()
    page.wait_for_load_state("networkidle")
    for label, value in text.items():
        field = form_field(page, page, label)
        type_into(field, value)
        expect(field.locator("textarea").first).to_have_value(value)
    for label in switches:
        form_field(page, page, label).get_by_role("switch").click()
    screenshot(page, f"ui-custom-run-{deployment}.png")
    with page.expect_response(lambda response: "create_flow_run" in response.url) as created:
        page.get_by_role("button", name="Submit", exact=True).click()
    response = created.value
    assert response.ok, f"the form's run was refused: {response.status} {response.text()[:500]}"
    run = response.json()
    sent = run["parameters"]["request"]
    assert sent["user_name"] == text["IAM user"] and all(sent[name] is True for name in _fields(switches)), sent
    return str(run["id"])


def _fields(labels: tuple[str, ...]) -> list[str]:
    """The request's field names of form labels (``Require Approval`` is ``require_approval``)."""
    return [label.lower().replace(" ", "_") for label in labels]


def type_into(field: Locator, value: str) -> None:
    """Replace a form field's text and leave it, as a person does: the form takes a value when its field loses focus."""
    box = field.locator("textarea").first
    box.fill(value)
    box.press("Tab")
    box.page.wait_for_timeout(200)


def answer_in_the_ui(page: Page, base: str, run_id: str, answer: Answer, note: str, who: str) -> None:
    """Resume on the run's page, and answer its approval form: an explicit choice, a note, a name."""
    page.goto(f"{base}runs/flow-run/{run_id}")
    page.get_by_role("button", name="Resume", exact=True).click()
    dialog = page.get_by_role("dialog")
    choice = form_field(page, dialog, "Answer").locator("button.p-select-button__control")
    choice.focus()
    choice.press("ArrowDown")  # in a dialog the choice's list opens from the keyboard (a click is taken as a close)
    page.get_by_role("option", name=answer.value, exact=True).click()
    type_into(form_field(page, dialog, "Note"), note)
    type_into(form_field(page, dialog, "Answered By"), who)
    screenshot(page, f"ui-approval-{answer.value}.png")
    dialog.get_by_role("button", name="Submit", exact=True).click()
    dialog.wait_for(state="hidden")  # the answer is sent: leaving the page earlier can cancel it


def idle(page: Page) -> None:
    """Leave the UI while the servers work: its pages poll the API every few seconds, which costs the browser and
    the Prefect server CPU that the rotations waited for need (2 cores, shared)."""
    page.goto("about:blank")


def record(connections: Connections, user: str) -> RotationState:
    return required(connections.records(user).load_state(), f"{user}'s rotation")


def test_an_operator_works_rotations_from_the_prefect_ui(
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
        # The deployments page: every deployment, the sweep's hourly schedule, the daily remediation shown whole.
        page.goto(f"{base}deployments")
        expect(page.get_by_text(re.compile(rf"^\s*{len(NAMES)} Deployments\s*$"))).to_be_visible()
        for name in NAMES:
            row = page.get_by_role("row").filter(has=page.get_by_role("link", name=name, exact=True))
            expect(row, f"a row for deployment {name}").to_have_count(1)
        sweep = page.get_by_role("row").filter(has=page.get_by_role("link", name=SWEEP.name, exact=True))
        expect(sweep, "finish-due-deletions shows its hourly schedule").to_contain_text(SWEEP_SCHEDULE)
        daily = page.get_by_role("row").filter(has=page.get_by_role("link", name=REMEDIATE.name, exact=True))
        expect(daily, "the daily remediation's schedule is shown whole, not collapsed to +1").not_to_contain_text("+1")
        screenshot(page, "ui-deployments.png")

        # Two Custom runs of rotate-access-key, durations typed as people write them, approval required.
        approver, rejecter = user_factory("ui-approve"), user_factory("ui-reject")
        timings = {"Quiet Period": "2s", "Poll Interval": "1s", "Max Wait": "60s", "Grace Period": "0s"}
        runs = {
            user: custom_run(page, base, ROTATE.name, {"IAM user": user, **timings}, switches=("Require Approval",))
            for user in (approver, rejecter)
        }

        def awaiting_approval(user: str) -> bool:
            state = connections.records(user).load_state()
            return state is not None and state.pause is not None and state.pause.kind is PauseKind.APPROVAL

        idle(page)
        for user in runs:
            wait_for(lambda: awaiting_approval(user), f"{user}'s approval form")  # noqa: B023 - called at once
        answer_in_the_ui(page, base, runs[approver], Answer.APPROVE, "the app moved", "ui-operator")
        answer_in_the_ui(page, base, runs[rejecter], Answer.REJECT, "billing still uses it", "ui-operator")
        idle(page)
        wait_for(
            lambda: all(off_the_ui_thread(run_state, run).is_final() for run in runs.values()),
            "the answered runs to end",
        )
        approved, rejected = record(connections, approver), record(connections, rejecter)
        assert off_the_ui_thread(run_state, runs[approver]).is_completed() and approved.phase is Phase.COMPLETED
        assert approved.approval is not None and approved.approval.note == "the app moved"
        assert approved.approval.answered_by == "ui-operator" and approved.approval.answer is Answer.APPROVE
        ended = off_the_ui_thread(run_state, runs[rejecter])
        assert ended.name == "Rejected" and not ended.is_completed(), "a rejected rotation does not look like success"
        assert rejected.phase is Phase.REJECTED and rejected.error and "billing still uses it" in rejected.error
        page.goto(f"{base}runs/flow-run/{runs[rejecter]}")
        expect(page.get_by_text("Rejected", exact=True).first).to_be_visible()
        screenshot(page, "ui-rejected.png")

        # A rotation waiting for its old key (an application keeps using it), paused from pause-rotation's form:
        # its artifact then says paused; Resume on its run sends it back to waiting.
        waiting = user_factory("ui-pause")
        busy = SimulatedApp(waiting, connections.records(waiting), refresh=10_000, interval=0.5)
        busy.start()
        try:
            parked_run = off_the_ui_thread(schedule_rotation, waiting, quiet_period="60s", max_wait="120s")
            wait_for(lambda: connections.waiting.read(connections.account_id, waiting), "the rotation to park")
            custom_run(page, base, PAUSE.name, {"IAM user": waiting})
            idle(page)
            wait_for(lambda: (p := record(connections, waiting).pause) and p.run_id == parked_run, "the pause")
            said = wait_for(lambda: off_the_ui_thread(artifact_view, connections, waiting), "the artifact")
            wait_for(
                lambda: "paused by an operator" in required(off_the_ui_thread(artifact_view, connections, waiting))[1],
                "the artifact to say paused",
            )
            assert said is not None
            page.goto(f"{base}runs/flow-run/{parked_run}")
            page.get_by_role("button", name="Resume", exact=True).click()
            page.get_by_role("dialog").get_by_role("button", name=re.compile(r"^\s*(Submit|Resume)\s*$")).click()
            wait_for(lambda: record(connections, waiting).pause is None, "the resumed run to take the pause off")
        finally:
            busy.stop()

        # The UI's Suspend on a running rotation (it stalls 8 s after verifying its new key), then Resume: it
        # records the pause, holds no process, and finishes once.
        stalled = user_factory("stall")
        old = active_keys(iam, stalled)[0]
        running = off_the_ui_thread(schedule_rotation, stalled, quiet_period="2s")
        wait_for(lambda: (s := connections.records(stalled).load_state()) and s.phase is Phase.VERIFIED, "the stall")
        page.goto(f"{base}runs/flow-run/{running}")
        page.get_by_role("button", name=re.compile("Suspend")).click()
        page.get_by_role("dialog").get_by_role("button", name="Submit", exact=True).click()
        wait_for(
            lambda: (p := record(connections, stalled).pause) and p.kind is PauseKind.PREFECT, "the UI's pause", 60
        )
        page.reload()
        expect(page.get_by_text("Suspended", exact=True).first).to_be_visible()
        screenshot(page, "ui-suspended.png")
        page.get_by_role("button", name="Resume", exact=True).click()
        page.get_by_role("dialog").get_by_role("button", name=re.compile(r"^\s*(Submit|Resume)\s*$")).click()
        idle(page)
        wait_for(lambda: off_the_ui_thread(run_state, running).is_final(), "the resumed rotation to finish", 120)
        assert off_the_ui_thread(run_state, running).is_completed()
        assert_rotated(iam, connections, stalled, old)

        # Rollback from its form, with an application that re-reads Vault every 2 s: the old key is back at once,
        # the new key stays active until the application has left it, and no call is refused.
        rolled = user_factory("ui-rollback")
        old = active_keys(iam, rolled)[0]
        app = SimulatedApp(rolled, connections.records(rolled), refresh=2, interval=0.25)
        app.start()
        try:
            rotate = ("rotate", rolled, "--local", "--grace-period", "10m", "--json")
            rotated = off_the_ui_thread(keyrotor_cli, stack_environ, *rotate)
            assert rotated.returncode == 0, rotated.stderr
            new = json.loads(rotated.stdout)["new_key_id"]
            wait_for(lambda: app.stats.keys_used[-1:] == [new], "the application to use the new key")
            custom_run(page, base, ROLLBACK.name, {"IAM user": rolled})
            idle(page)
            wait_for(lambda: record(connections, rolled).phase is Phase.ROLLED_BACK, "the rollback to end", 120)
        finally:
            stats = app.stop()
        ended_state = record(connections, rolled)
        assert stats.errors == [], f"refused calls during the rollback: {stats.errors[:3]}"
        assert ended_state.rollback is not None and ended_state.rollback.new_key_deactivated_at is not None
        restored = required(ended_state.rollback.restored_at)
        assert ended_state.rollback.new_key_deactivated_at - restored >= ended_state.timings.quiet_period
        assert required(connections.records(rolled).published()).key_id == old

        # The Runs page, filtered by the user's tag: the user's whole history (the rotation, its scheduled deletion
        # that the rollback cancelled, and the rollback), each run named for what it did.
        page.goto(f"{base}runs")
        tags = page.locator(".p-label").filter(has_text=re.compile(r"^Tags")).first
        tags.locator("button").first.click()
        page.keyboard.type(f"user:{rolled}")
        page.get_by_role("option", name=f"user:{rolled}").click()
        page.keyboard.press("Escape")
        for name in (f"rotate {rolled}", f"delete old key of {rolled}", f"roll back {rolled}"):
            expect(page.get_by_text(re.compile(rf"^{re.escape(name)}( in \d{{12}})?$")).first).to_be_visible()
        expect(page.get_by_text(re.compile(rf"^rotate {re.escape(approver)}"))).to_have_count(0)
        screenshot(page, "ui-user-history.png")
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
