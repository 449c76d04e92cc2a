"""The dashboard in a real browser: headless Chromium (Debian's, driven by Selenium) against
`bgtaskex web` run by the installed command in a subprocess, on a real database (SQLite
files; PostgreSQL for the live progress bar). Each test sees what a person would see:
the overview, the task filters in the URL and their pages, Retry and Cancel pressed for
real, a bar that moves while `bgtaskex run-once` works in another process, read-only
mode, the login, JavaScript off, the keyboard, and no CSP violation in the console.

A screenshot of each page goes under the test's tmp dir (and to
BGTASKEX_TEST_SCREENSHOTS when set; tests/support/browser.py). One browser serves the
whole module, so its tests share one xdist worker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from bgtaskex.client import Client, connect
from bgtaskex.config import load_settings
from tests.acceptance.conftest import describe
from tests.support import appdb
from tests.support.browser import (
    DESKTOP,
    IN_CI,
    WAIT,
    Shots,
    WebServer,
    csp_violations,
    open_browser,
    phone,
)
from tests.support.cli import Bgx

if not IN_CI:  # under CI=true a missing selenium fails the collection
    pytest.importorskip("selenium", reason="selenium is not installed (the test extra)")
pytest.importorskip("uvicorn", reason="the web extra is not installed")

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.xdist_group("browser")

TOKEN = "browser-token-0123456789"
CONFIG = """\
database_url = {url}
imports = ["tests.scripted", "tests.ops_actions"]
max_attempts = 1
retry_delay = "0s"
max_execution_time = "30s"

[[processes]]
name = "default"
every = "60s"

[[processes]]
name = "nightly"
queues = ["nightly"]
cron = "*/5 * * * *"
window = {{ days = ["sun"], start = "01:00", end = "23:30" }}

[[retention_rules]]
name = "old_tickets"
database = {app}
table = "tickets"
date_column = "created_at"
older_than = "90d"
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = open_browser()
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class Scene:
    """A database with its config, a client of it, the servers started on it, and where
    the screenshots go."""

    config: Path
    env: dict[str, str]
    client: Client
    bgx: Bgx
    shots: Shots
    tmp: Path
    servers: list[WebServer] = field(default_factory=list)

    def serve(self, *args: str, token: str | None = None) -> WebServer:
        env = dict(self.env)
        if token:
            env["BGTASKEX_WEB_TOKEN"] = token
        server = WebServer(env, self.tmp / f"web{len(self.servers)}.log", *args)
        self.servers.append(server)
        return server

    def enqueue(self, name: str, queue: str = "default", **params: Any) -> int:
        ref = ("tests.scripted:Scripted", {"log": str(self.tmp / "hooks.log"), **params})
        return self.client.enqueue(name, [ref], queue=queue)

    def run_once(self) -> None:
        """`bgtaskex run-once`, as cron runs it."""
        result = self.bgx("run-once")
        assert result.returncode in (0, 1), describe(result)  # 1: a task failed

    def failed_task(self, name: str = "import-invoices") -> int:
        """A task whose action raised in a real run (max_attempts = 1: the next run fails
        it, as recovery of a dead execute)."""
        log = self.tmp / "hooks.log"
        ref = ("tests.scripted:Scripted", {"log": str(log), "plan": {"execute": ["raise"]}})
        task_id = self.client.enqueue(name, [ref])
        for _ in range(3):
            self.run_once()
            if self.client.get(task_id).status == "failed":
                break
        assert self.client.get(task_id).status == "failed"
        return task_id


@pytest.fixture
def make_scene(tmp_path: Path, cli_env: dict[str, str]) -> Iterator[Callable[[str], Scene]]:
    """make(url): a Scene on bgtaskex's database at `url`; what it started is stopped at
    the end of the test."""
    made: list[Scene] = []

    def make(url: str) -> Scene:
        app_url = f"sqlite:///{tmp_path / 'app.db'}"
        appdb.create_app_schema(app_url)
        appdb.fill(app_url, 50, children=False)
        config = tmp_path / "bgtaskex.toml"
        config.write_text(CONFIG.format(url=json.dumps(url), app=json.dumps(app_url)))
        env = {**cli_env, "BGTASKEX_CONFIG": str(config)}
        client = connect(settings=load_settings(config, environ={}))
        scene = Scene(config, env, client, Bgx(env), Shots(tmp_path / "screens"), tmp_path)
        made.append(scene)
        return scene

    yield make
    for scene in made:
        for server in scene.servers:
            server.stop()
        scene.bgx.cleanup()
        scene.client.close()


@pytest.fixture
def scene(make_scene: Callable[[str], Scene], tmp_path: Path) -> Scene:
    return make_scene(f"sqlite:///{tmp_path / 'bgtaskex.db'}")


@pytest.fixture
def page(browser: Any) -> Any:
    """The module's browser, as a new visitor: no cookie, desktop size, an empty log."""
    browser.delete_all_cookies()
    browser.set_window_size(*DESKTOP)
    browser.get_log("browser")
    return browser


# --- reading the page


def wait(driver: Any, timeout: float = WAIT) -> Any:
    return WebDriverWait(driver, timeout, ignored_exceptions=[StaleElementReferenceException])


def tid(driver: Any, name: str) -> Any:
    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="{name}"]')


def read(driver: Any, name: str, attribute: str | None = None) -> str | None:
    """An attribute (or the text) of the element `name`, read in one script: a live
    part that htmx swaps between a find and a read cannot make it stale."""
    return driver.execute_script(  # type: ignore[no-any-return]
        """const e = document.querySelector(`[data-testid="${arguments[0]}"]`);
        if (!e) return null;
        return arguments[1] === null ? e.textContent.trim() : e.getAttribute(arguments[1]);""",
        name,
        attribute,
    )


def by_prefix(driver: Any, prefix: str) -> list[str]:
    found = driver.find_elements(By.CSS_SELECTOR, f'[data-testid^="{prefix}"]')
    return [e.get_attribute("data-testid")[len(prefix) :] for e in found]


def status_becomes(driver: Any, name: str, status: str) -> None:
    wait(driver).until(
        lambda d: tid(d, name).get_attribute("data-status") == status,
        f"{name} never became {status}",
    )


def row_ids(driver: Any) -> list[int]:
    return [int(i) for i in by_prefix(driver, "task-row-")]


# --- the scenarios


def test_overview_shows_counts_queues_chart_runs_and_verdict(page: Any, scene: Scene) -> None:
    done = scene.enqueue("send-newsletter")
    failed = scene.failed_task()  # its run-once also finishes `done`
    waiting = [scene.enqueue(f"report-{i}", queue="reports") for i in range(3)]
    scene.client.pause("reports", "warehouse maintenance")
    web = scene.serve()
    page.get(web.url("/"))
    assert page.title == "Overview · bgtaskex"
    counts = tid(page, "count-row-default-cron").text
    assert re.search(r"\b1\b.*\b1\b", counts), counts  # one finished, one failed
    reports = tid(page, "queue-row-reports")
    assert reports.get_attribute("data-paused") == "yes"
    assert "warehouse maintenance" in reports.text and "3" in reports.text
    assert tid(page, "oldest-waiting").text == f"task {waiting[0]}"
    chart = tid(page, "activity-chart")
    assert chart.find_elements(By.TAG_NAME, "svg") and chart.is_displayed()
    assert "1 done, 1 failed" in chart.text
    assert len(by_prefix(page, "run-row-")) >= 1
    verdict = tid(page, "check-verdict")
    assert verdict.get_attribute("data-verdict") in ("ok", "warning") and verdict.text
    # the headline says what check's verdict does not: a task failed, a queue is paused
    assert tid(page, "glance").get_attribute("data-level") == "bad"
    assert tid(page, "glance-failed").text == "✖ 1 task failed in the last 24 h"
    assert tid(page, "glance-paused").text == "‖ queue reports paused"
    # the run that failed the task ended ok, and its counts say the task failed
    failing = page.find_element(
        By.CSS_SELECTOR, '[data-testid^="run-counts-"] [data-count="failed"]'
    )
    assert failing.text == "✖ 1 failed", failing.text
    assert "nightly" in tid(page, "process-row-nightly").text
    scene.shots.take(page, "overview")
    # on a phone: nothing wider than the screen, no table scrolled sideways, and the
    # queues' pause button in view
    with phone(page):
        page.refresh()
        assert _sideways(page) == (0, []), "the overview is wider than a phone"
        pause = tid(page, "pause-default")
        box = page.execute_script(
            "const r = arguments[0].getBoundingClientRect();"
            "return [r.left, r.right, document.documentElement.clientWidth];",
            pause,
        )
        assert pause.is_displayed() and box[0] >= 0 and box[1] <= box[2], box
        scene.shots.take(page, "overview-phone")
    # from the count of failed tasks to the failed task
    page.find_element(
        By.CSS_SELECTOR, '[data-testid="count-row-default-cron"] a[href*="failed"]'
    ).click()
    assert row_ids(page) == [failed]
    assert scene.client.get(done).status == "finished"


def _sideways(page: Any) -> tuple[int, list[str]]:
    """How many pixels the page is wider than its window, and the tables that scroll
    sideways in their own box."""
    overflow = page.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    tables = page.execute_script(
        "return Array.from(document.querySelectorAll('.scroll'))"
        ".filter(e => e.offsetParent && e.scrollWidth > e.clientWidth)"
        ".map(e => e.querySelector('table').dataset.testid)"
    )
    return max(overflow, 0), tables


def test_filter_tasks_share_the_url_and_page_past_50(page: Any, scene: Scene) -> None:
    wanted = [scene.enqueue(f"batch-{i}", queue="reports") for i in range(55)]
    others = [
        scene.enqueue("batch-x"),  # another queue
        scene.enqueue("rebuild", queue="reports"),  # another name
        scene.enqueue("batch-cancelled", queue="reports"),  # another status
    ]
    scene.client.cancel(others[2])
    web = scene.serve()
    page.get(web.url("/tasks"))
    assert tid(page, "task-total").get_attribute("data-total") == "58"
    tid(page, "filter-status-created").click()
    tid(page, "filter-queue").send_keys("reports")
    tid(page, "filter-name").send_keys("batch-*")
    tid(page, "apply-filters").click()
    wait(page).until(lambda d: "name=" in d.current_url, "the filters never reached the URL")
    shared = page.current_url
    query = parse_qs(urlsplit(shared).query)
    assert query["status"] == ["created"] and query["queue"] == ["reports"]
    assert query["name"] == ["batch-*"]
    assert tid(page, "task-total").get_attribute("data-total") == "55"
    first = row_ids(page)
    assert len(first) == 50 and first == sorted(wanted, reverse=True)[:50]  # newest first
    # read in one script: a live poll may swap the rows between two WebDriver calls
    statuses = set(
        page.execute_script(
            "return [...document.querySelectorAll('tr')].map(e => e.getAttribute('data-status'))"
        )
    )
    assert statuses == {"created", None}  # None: the header row
    scene.shots.take(page, "tasks-filtered")
    tid(page, "next-page").click()
    wait(page).until(lambda d: row_ids(d) != first, "the next page never came")
    second = row_ids(page)
    assert sorted(first + second) == sorted(wanted)
    assert page.find_elements(By.CSS_SELECTOR, '[rel="prev"]')
    assert not page.find_elements(By.CSS_SELECTOR, '[rel="next"]')
    # the URL alone, in a new session, shows the same rows and the same filled form
    page.delete_all_cookies()
    page.get(shared)
    assert row_ids(page) == first
    assert tid(page, "filter-status-created").is_selected()
    assert tid(page, "filter-name").get_attribute("value") == "batch-*"


def test_a_failed_task_is_retried_with_its_button(page: Any, scene: Scene) -> None:
    task_id = scene.failed_task()
    web = scene.serve()
    page.get(web.url(f"/tasks/{task_id}"))
    assert tid(page, "task-status").get_attribute("data-status") == "failed"
    assert "RuntimeError" in tid(page, "last-failure-1").text
    folded = page.find_element(By.CSS_SELECTOR, 'details[data-testid^="traceback-"]')
    assert folded.get_attribute("open") is None  # the traceback is folded
    assert "Traceback" not in folded.text
    folded.find_element(By.TAG_NAME, "summary").click()
    assert "Traceback" in folded.text
    page.set_window_size(800, DESKTOP[1])  # a narrow window squeezes the columns most
    lines = page.execute_script(  # the history's times stay on one line each
        "return Array.from(document.querySelectorAll('[data-testid=history] td.when'))"
        ".map(td => { const r = document.createRange(); r.selectNodeContents(td);"
        " return new Set(Array.from(r.getClientRects()).map(b => Math.round(b.top))).size; })"
    )
    assert lines and set(lines) == {1}, lines
    page.set_window_size(*DESKTOP)
    scene.shots.take(page, "task-failed")
    tid(page, "retry").click()
    status_becomes(page, "task-status", "created")
    assert "queued again" in tid(page, "flash").text
    assert not tid(page, "retry").is_enabled()  # no second retry of a queued task
    assert scene.client.get(task_id).status == "created"
    scene.shots.take(page, "task-after-retry")


@pytest.mark.postgres
def test_a_running_tasks_bar_advances_live_then_cancel_stops_it(
    page: Any, make_scene: Callable[[str], Scene], pg_schema_url: str
) -> None:
    scene = make_scene(pg_schema_url)
    looper = ("tests.ops_actions:Looper", {"total": 100, "step": 0.2})
    task_id = scene.client.enqueue("reindex", [looper])
    web = scene.serve()
    page.get(web.url(f"/tasks/{task_id}"))
    page.execute_script("document.body.dataset.loaded = 'once'")  # gone if it reloads
    run = scene.bgx.start("run-once")

    def bar(driver: Any) -> float:
        value = read(driver, "progress-action-1", "value")
        return float(value) if value else 0.0

    seen = [0.0]
    for _ in range(3):  # three readings, each higher: the live part polls every 2 s
        higher = wait(page).until(
            lambda d: (value := bar(d)) > seen[-1] and value, f"the bar stayed at {seen[-1]}%"
        )
        seen.append(higher)
    assert seen == sorted(set(seen)) and seen[-1] < 100, seen
    assert page.execute_script("return document.body.dataset.loaded") == "once"
    assert read(page, "task-status", "data-status") == "running"
    assert read(page, "rate-1")  # steps a second, and an ETA
    scene.shots.take(page, "task-running")
    tid(page, "cancel").click()
    status_becomes(page, "task-status", "cancelled")
    assert run.wait(timeout=WAIT) in (0, 1)  # the run saw the cancel at a checkpoint
    assert scene.client.get(task_id).status == "cancelled"


def test_a_waiting_task_is_cancelled_with_its_button(page: Any, scene: Scene) -> None:
    task_id = scene.enqueue("purge-cache")
    web = scene.serve()
    page.get(web.url(f"/tasks/{task_id}"))
    assert tid(page, "task-status").get_attribute("data-status") == "created"
    tid(page, "cancel").click()
    status_becomes(page, "task-status", "cancelled")
    assert tid(page, "flash").text == f"task {task_id} cancelled"
    assert not tid(page, "cancel").is_enabled()
    assert "it has ended (cancelled)" in page.find_element(By.ID, "why-no-cancel").text
    assert scene.client.get(task_id).status == "cancelled"
    scene.shots.take(page, "task-cancelled")


def test_read_only_shows_no_button_and_refuses_a_post(page: Any, scene: Scene) -> None:
    task_id = scene.failed_task()
    scene.client.pause("default", "upgrade")
    web = scene.serve("--read-only")
    for path in ["/", "/tasks", f"/tasks/{task_id}", "/rules", "/processes", "/runs"]:
        page.get(web.url(path))
        assert tid(page, "read-only-badge").is_displayed(), path
        assert not page.find_elements(By.CSS_SELECTOR, "form[method=post], [data-action]"), path
        for button in page.find_elements(By.TAG_NAME, "button"):  # only the filters' GET
            form = button.find_element(By.XPATH, "ancestor::form")
            assert form.get_attribute("method") == "get", (path, button.text)
        if path == "/":
            scene.shots.take(page, "read-only-overview")
    # a POST with this session's own CSRF token, from the page: refused
    status = page.execute_async_script(
        """const done = arguments[arguments.length - 1];
        const token = document.querySelector('meta[name="csrf-token"]').content;
        fetch(arguments[0], {method: 'POST', body: new URLSearchParams({csrf_token: token})})
          .then(r => done(r.status), e => done(String(e)));""",
        f"/tasks/{task_id}/retry",
    )
    assert status == 403
    assert web.post("/queues/default/resume") == 403
    assert scene.client.get(task_id).status == "failed"
    assert [p.queue for p in scene.client.paused_queues()] == ["default"]


def test_login_by_token_and_its_cookie(page: Any, scene: Scene) -> None:
    web = scene.serve(token=TOKEN)
    page.get(web.url("/"))
    assert urlsplit(page.current_url).path == "/login"
    page.get(web.url("/tasks?status=failed"))
    assert urlsplit(page.current_url).path == "/login"
    scene.shots.take(page, "login")
    tid(page, "token").send_keys("not-the-token-at-all")
    tid(page, "login").click()
    assert "token" in tid(page, "login-error").text.lower()
    tid(page, "token").send_keys(TOKEN)
    tid(page, "login").click()
    wait(page).until(
        lambda d: urlsplit(d.current_url).path == "/tasks",
        f"no way in: {page.current_url}",
    )
    assert parse_qs(urlsplit(page.current_url).query) == {"status": ["failed"]}  # as asked
    cookie = next(c for c in page.get_cookies() if c["name"] == "bgtaskex_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert TOKEN not in cookie["value"] and not cookie["secure"]  # plain http here
    assert "bgtaskex_session" not in page.execute_script("return document.cookie")
    tid(page, "logout").click()
    page.get(web.url("/"))
    assert urlsplit(page.current_url).path == "/login"


def test_pages_read_with_javascript_off(scene: Scene) -> None:
    task_id = scene.failed_task()
    scene.enqueue("waits", queue="reports")
    web = scene.serve()
    driver = open_browser(javascript=False)
    try:
        driver.get(web.url("/"))
        assert driver.execute_script("return typeof window.htmx") == "undefined"  # JS is off
        assert tid(driver, "check-verdict").text
        assert tid(driver, "queue-row-reports").is_displayed()
        driver.get(web.url("/tasks"))
        tid(driver, "filter-status-failed").click()
        tid(driver, "apply-filters").click()  # a plain GET form: wait for its page
        wait(driver).until(lambda d: row_ids(d) == [task_id], "the filter never applied")
        tid(driver, f"task-link-{task_id}").click()
        status_becomes(driver, "task-status", "failed")
        folded = driver.find_element(By.CSS_SELECTOR, 'details[data-testid^="traceback-"]')
        folded.find_element(By.TAG_NAME, "summary").click()  # <details> needs no script
        assert "RuntimeError" in folded.text
        scene.shots.take(driver, "task-javascript-off")
    finally:
        driver.quit()


def _tab_to(driver: Any, value: str, attribute: str = "id", most: int = 60) -> Any:
    """Press Tab until the element whose `attribute` is `value` has the focus; it."""
    for _ in range(most):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        active = driver.switch_to.active_element
        if active.get_attribute(attribute) == value:
            return active
    pytest.fail(f"{most} presses of Tab never reached [{attribute}={value}]")


def _outline(element: Any) -> str:
    return (
        str(element.value_of_css_property("outline-style"))
        + " "
        + str(element.value_of_css_property("outline-width"))
    )


def _count_swaps(driver: Any) -> None:
    driver.execute_script(
        "window.swaps = 0; document.body.addEventListener('htmx:afterSwap', () => swaps++)"
    )


def _refreshed(driver: Any) -> None:
    """Wait for the next refresh of a live part (every 2 s), after `_count_swaps`."""
    wait(driver).until(lambda d: d.execute_script("return window.swaps") >= 1, "no refresh")


def test_keyboard_reaches_filters_and_buttons_with_visible_focus(page: Any, scene: Scene) -> None:
    task_id = scene.failed_task()
    web = scene.serve()
    page.get(web.url("/tasks?status=failed"))
    ActionChains(page).send_keys(Keys.TAB).perform()
    skip = page.switch_to.active_element
    assert skip.text == "Skip to the content" and skip.is_displayed()  # shown on focus
    name = _tab_to(page, "filter-name")
    assert _outline(name) == "solid 3px"
    # a link in a live table keeps the focus through its refresh
    link = _tab_to(page, f"task-link-{task_id}", attribute="data-testid")
    _count_swaps(page)
    _refreshed(page)
    after = page.switch_to.active_element
    assert after.get_attribute("data-testid") == f"task-link-{task_id}", after.tag_name
    assert _outline(after) == "solid 3px" and link != after  # the new one has it
    page.get(web.url(f"/tasks/{task_id}"))
    retry = _tab_to(page, "retry")
    assert _outline(retry) == "solid 3px"
    _count_swaps(page)
    _refreshed(page)
    assert page.switch_to.active_element.get_attribute("id") == "retry"
    page.switch_to.active_element.send_keys(Keys.ENTER)  # the keyboard presses it too
    status_becomes(page, "task-status", "created")


def test_every_page_keeps_the_csp(page: Any, scene: Scene) -> None:
    task_id = scene.failed_task()
    scene.enqueue("later", queue="nightly")
    web = scene.serve()
    pages = {
        "overview": "/",
        "tasks": "/tasks?status=failed",
        "task": f"/tasks/{task_id}",
        "processes": "/processes",
        "rules": "/rules",
        "rule-preview": "/rules/old_tickets/preview",
        "runs": "/runs",
        "bulk-confirm": "/tasks/bulk?status=failed&action=retry",
    }
    for name, path in pages.items():
        page.get(web.url(path))
        assert not page.find_elements(By.CSS_SELECTOR, '[data-testid="error"]'), path
        if name in ("processes", "rules", "runs", "rule-preview", "bulk-confirm"):
            scene.shots.take(page, name)
        if name in ("tasks", "task", "processes", "runs"):
            with phone(page):
                page.refresh()
                assert _sideways(page) == (0, []), name
                scene.shots.take(page, f"{name}-phone")
    page.get(web.url("/"))  # and the live swaps: htmx must not add inline styles
    _count_swaps(page)
    _refreshed(page)
    assert csp_violations(page) == []
    # the check sees a violation when there is one: an inline script is refused
    page.execute_script(
        "const s = document.createElement('script'); s.textContent = 'window.ran = 1';"
        "document.body.appendChild(s)"
    )
    wait(page).until(lambda d: csp_violations(d), "the inline script's refusal was not logged")
    assert page.execute_script("return window.ran") is None
