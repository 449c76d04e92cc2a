"""The dashboard's pages and JSON API, route by route, over a real database: what
each shows, the actions (retry, retry from the start, cancel, bulk, pause, resume, run
a rule) and their refusals in words, bad input as one line (400/404), a database down
as 503. The actions also run on PostgreSQL and MariaDB (`server_url`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgtaskex.processes import Process
from bgtaskex.rules import RetentionRule
from bgtaskex.schedule import WeeklyWindow
from bgtaskex.views import queue_dict, run_dict, stats_dict
from bgtaskex.web.clients import NO_SCHEMA
from tests.support.cli import isolate, run_cli
from tests.support.web import Web, close, csrf_of, error_of, flash_of, make_web


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    found = make_web(f"sqlite:///{tmp_path / 'web.db'}", tmp_path)
    yield found
    close(found)


def test_overview_shows_counts_queues_check_chart_runs_and_processes(web: Web) -> None:
    failed = web.failed_task()
    waiting = web.waiting_task(queue="reports")
    web.client.pause("reports", "warehouse maintenance")
    html = web.http.get("/").text
    assert 'data-testid="count-row-default-cron"' in html
    assert f'data-testid="oldest-waiting">task {waiting}</a>' in html
    assert 'data-testid="queue-row-reports" data-paused="yes"' in html
    assert "warehouse maintenance" in html
    assert 'data-testid="resume-reports"' in html and 'data-testid="pause-default"' in html
    assert 'data-testid="check-verdict"' in html
    assert 'data-testid="activity-chart"' in html and "<svg" in html
    assert re.search(r"actions ended in the last 24 hours \(UTC\): \d+ done, [1-9]\d* failed", html)
    assert 'data-testid="run-row-' in html  # the runs that failed the task
    assert 'data-testid="process-row-default"' in html
    assert f'href="/tasks/{failed}"' in web.http.get("/tasks?status=failed").text


def test_a_name_glob_page_says_what_it_searched(web: Web, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name glob is checked task by task, SCAN_BUDGET tasks per page and per count:
    the count is said as "at least", the page says where it stopped searching, and
    Next goes on below it, until every match was shown."""
    from bgtaskex.store import pages

    monkeypatch.setattr(pages, "SCAN_BUDGET", 10)
    ids = [web.waiting_task(name=f"{'hit' if i % 6 == 0 else 'miss'}-{i}") for i in range(30)]
    hits = sorted((i for n, i in enumerate(ids) if n % 6 == 0), reverse=True)
    page = web.http.get("/tasks?name=hit-*").text
    assert "At least 1 task(s) match these filters" in page  # hit-24
    assert "the count stopped after the newest 10" in page
    assert 'data-testid="searched-to"' in page
    seen: list[int] = []
    while True:
        seen += [int(i) for i in re.findall(r'data-testid="task-row-(\d+)"', page)]
        following = re.search(r'href="([^"]+)" rel="next"', page)
        if following is None:
            break
        page = web.http.get(following[1].replace("&amp;", "&")).text
    assert seen == hits
    api = web.http.get("/api/tasks?name=hit-*").json()
    assert (api["total"], api["total_is_lower_bound"], api["count_searched"]) == (1, True, 10)
    assert api["searched_to"] == api["next_before"] == ids[-10]


def test_tasks_filters_pages_and_bad_filters(web: Web) -> None:
    failed = web.failed_task()
    ids = [web.waiting_task(name=f"n{i}") for i in range(55)]
    page = web.http.get("/tasks")
    assert 'data-total="56"' in page.text
    rows = re.findall(r'data-testid="task-row-(\d+)"', page.text)
    assert len(rows) == 50 and rows[0] == str(ids[-1])  # newest first
    following = re.search(r'href="([^"]+)" rel="next"', page.text)
    assert following is not None
    second = web.http.get(following[1].replace("&amp;", "&"))
    rows2 = re.findall(r'data-testid="task-row-(\d+)"', second.text)
    assert len(rows2) == 6 and str(failed) in rows2
    assert 'rel="prev"' in second.text and 'rel="next"' not in second.text
    only = web.http.get("/tasks?status=failed").text
    assert re.findall(r'data-testid="task-row-(\d+)"', only) == [str(failed)]
    assert 'data-testid="progress-task-' not in only  # an ended task has no bar
    named = web.http.get("/tasks?name=N1*&type=cron&queue=default&since=1h").text
    assert 'data-total="11"' in named  # n1, n10..n19
    for query, words in [
        ("status=bogus", "unknown status 'bogus'"),
        ("type=batch", "unknown type 'batch'"),
        ("since=yesterday", "since: expected a duration ago"),
        ("before=-3", "before must be a whole number"),
        ("name=a&name=b", "name is given more than once"),
    ]:
        response = web.http.get(f"/tasks?{query}")
        assert response.status_code == 400, query
        said = error_of(response.text) or ""
        assert words in said and "Traceback" not in response.text, (query, said)
        assert response.http_version and web.http.get(f"/api/tasks?{query}").status_code == 400


def test_task_page_and_its_buttons(web: Web) -> None:
    task_id = web.failed_task()
    html = web.http.get(f"/tasks/{task_id}").text
    assert 'data-testid="task-status"' in html and 'data-status="failed"' in html
    assert 'data-testid="traceback-' in html and "<details" in html
    assert (
        'data-testid="retry" data-action="retry"' in html
        and "disabled" not in html.split('id="retry"')[0][-40:]
    )
    assert re.search(r'data-testid="last-failure-1">last failure: RuntimeError', html)
    # retry: a flash message, and the task is back
    done = web.post(f"/tasks/{task_id}/retry")
    assert flash_of(done.text) == f"task {task_id} queued again (its failed actions)"
    assert web.client.get(task_id).status == "created"
    # again: refused, with the CLI's reason
    again = web.post(f"/tasks/{task_id}/retry")
    assert (flash_of(again.text) or "").startswith(f"refused: task {task_id} is created")
    assert "only a failed task can be retried" in again.text
    # cancel it, then cancel again: refused
    cancel = web.post(f"/tasks/{task_id}/cancel")
    assert flash_of(cancel.text) == f"task {task_id} cancelled"
    assert (flash_of(web.post(f"/tasks/{task_id}/cancel").text) or "").startswith("refused:")
    # retry from the start of a failed one
    other = web.failed_task(name="other")
    start = web.post(f"/tasks/{other}/retry-from-start")
    assert flash_of(start.text) == f"task {other} queued again (from the start)"
    # bad and unknown ids: one line
    assert web.http.get("/tasks/0").status_code == 400
    missing = web.http.get("/tasks/424242")
    assert missing.status_code == 404 and error_of(missing.text) == "no task with id 424242"
    gone = web.post("/tasks/424242/retry")  # a refusal, said on the tasks' page
    assert gone.status_code == 200 and flash_of(gone.text) == "refused: no task with id 424242"
    assert "no task with id 424242" in (flash_of(web.post("/tasks/424242/cancel").text) or "")


def test_task_page_shows_progress_rate_and_long_params_folded(web: Web) -> None:
    big = {"rows": list(range(300))}
    task_id = web.waiting_task(**big)
    html = web.http.get(f"/tasks/{task_id}").text
    assert '<details id="params-1"' in html
    short = web.waiting_task(name="short")
    assert '<pre class="params" data-testid="params-1">' in web.http.get(f"/tasks/{short}").text


def test_bulk_retry_and_cancel_confirm_how_many_and_pass_expect(web: Web) -> None:
    failed = [web.failed_task(name=f"f{i}") for i in range(3)]
    confirm = web.http.get("/tasks/bulk?action=retry")
    assert 'data-count="3"' in confirm.text and 'name="expect" value="3"' in confirm.text
    # a fourth failure after the confirmation: more than confirmed, nothing changed
    failed.append(web.failed_task(name="late"))
    late = web.post("/tasks/bulk", {"action": "retry", "expect": "3"})
    assert "more than the 3 confirmed: nothing was changed" in (flash_of(late.text) or "")
    assert all(web.client.get(i).status == "failed" for i in failed)
    done = web.post("/tasks/bulk", {"action": "retry", "expect": "4", "name": "f*"})
    assert flash_of(done.text) == "3 of 3 task(s) queued again"
    assert web.client.get(failed[-1]).status == "failed"  # 'late' does not match f*
    waiting = [web.waiting_task(name=f"w{i}") for i in range(2)]  # after every run_once
    confirm = web.http.get("/tasks/bulk?action=cancel&name=w*")
    assert 'data-count="2"' in confirm.text, re.findall(r'data-count="\d+"', confirm.text)
    done = web.post("/tasks/bulk", {"action": "cancel", "expect": "2", "name": "w*"})
    assert flash_of(done.text) == "2 of 2 task(s) cancelled"
    assert all(web.client.get(i).status == "cancelled" for i in waiting)
    assert web.http.get("/tasks/bulk?action=purge").status_code == 400
    bad = web.post("/tasks/bulk", {"action": "cancel", "expect": "many"})
    assert bad.status_code == 400 and "expect must be" in (error_of(bad.text) or "")


def test_pause_and_resume_from_the_overview(web: Web) -> None:
    web.waiting_task(queue="reports")
    paused = web.post("/queues/reports/pause", {"reason": "maintenance"})
    assert (flash_of(paused.text) or "").startswith("queue reports paused")
    assert [p.reason for p in web.client.paused_queues()] == ["maintenance"]
    resumed = web.post("/queues/reports/resume")
    assert flash_of(resumed.text) == "queue reports resumed"
    refused = web.post("/queues/reports/resume")
    assert flash_of(refused.text) == "refused: queue 'reports' is not paused (no queue is paused)"
    bad = web.post("/queues/reports/pause", {"reason": "bad\x1b[31m"})
    assert (flash_of(bad.text) or "").startswith("refused: a pause's reason must not hold")


def test_processes_page_draws_each_week_and_says_open_or_closed(tmp_path: Path) -> None:
    window = WeeklyWindow(["sun"], "01:00", "23:30")
    always = WeeklyWindow("mon-sun", "00:00", "00:00")
    processes = (
        Process("nightly", queues=("nightly",), every=60.0, window=window),
        Process("all", every=60.0, window=always),
        Process("quick", cron="*/5 * * * *"),
    )
    web = make_web(f"sqlite:///{tmp_path / 'p.db'}", tmp_path, processes=processes)
    try:
        html = web.http.get("/processes").text
        assert html.count('class="week-open"') >= 2
        assert 'data-testid="week-text-nightly"' in html and "open Sun 01:00-23:30" in html
        assert re.search(r'data-testid="window-all" data-open="yes"', html)
        assert "cron */5 * * * *" in html
        assert 'class="now-line"' in html
        listed = web.http.get("/api/processes").json()
        assert [p["name"] for p in listed] == ["nightly", "all", "quick"]
    finally:
        close(web)


def test_rules_page_preview_and_run_now(tmp_path: Path) -> None:
    from tests.support import appdb

    app_url = f"sqlite:///{tmp_path / 'app.db'}"
    appdb.create_app_schema(app_url)
    appdb.fill(app_url, 50, children=False)
    rule = RetentionRule(
        name="old_tickets",
        table="tickets",
        date_column="created_at",
        older_than=0.0,
        database=app_url,
    )
    broken = RetentionRule(
        name="broken", table="no_such_table", older_than=0.0, date_column="x", database=app_url
    )
    web = make_web(f"sqlite:///{tmp_path / 'r.db'}", tmp_path, retention_rules=(rule, broken))
    try:
        html = web.http.get("/rules").text
        assert 'data-testid="rule-old_tickets"' in html and "never run" in html
        preview = web.http.get("/rules/old_tickets/preview")
        assert 'data-testid="preview-count" data-count="50"' in preview.text
        assert web.http.get("/api/rules/old_tickets/preview").json()["count"] == 50
        ran = web.post("/rules/old_tickets/run")
        assert (flash_of(ran.text) or "").startswith("rule old_tickets: queued task")
        again = web.post("/rules/old_tickets/run")
        assert "already queued or running" in (flash_of(again.text) or "")
        refused = web.post("/rules/broken/run")
        assert (flash_of(refused.text) or "").startswith("refused: ")
        assert web.http.get("/rules/nosuch/preview").status_code == 400
        assert web.http.get("/api/rules").json()[0]["last_task"]["status"] == "created"
    finally:
        close(web)


def test_runs_page_filters_by_process_and_failed(web: Web) -> None:
    web.failed_task()
    html = web.http.get("/runs").text
    assert len(re.findall(r'data-testid="run-row-\d+"', html)) >= 2
    assert "No run recorded." in web.http.get("/runs?failed=1").text
    assert "No run recorded." in web.http.get("/runs?process=nightly").text
    assert web.http.get("/runs?limit=0").status_code == 400


def test_the_api_gives_the_objects_of_the_clis_json(
    web: Web, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = web.failed_task()
    web.waiting_task(queue="reports")
    isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("BGTASKEX_MAX_ATTEMPTS", str(web.settings.max_attempts))
    url = str(web.settings.database_url)
    cli_queues = run_cli("--database-url", url, "queues", "--json").json()
    assert web.http.get("/api/queues").json() == cli_queues
    assert cli_queues == [queue_dict(q) for q in web.client.queues()]
    cli_runs = run_cli("--database-url", url, "runs", "--json").json()
    assert web.http.get("/api/runs").json() == cli_runs
    assert [r["id"] for r in cli_runs] == [run_dict(r)["id"] for r in web.client.runs()]
    shown = run_cli("--database-url", url, "show", task_id, "--json").json()
    api = web.http.get(f"/api/tasks/{task_id}").json()
    for key in ("id", "status", "actions", "events", "event_count", "state"):
        assert api[key] == shown[key], key
    stats = web.http.get("/api/stats").json()
    assert set(stats) == set(stats_dict(web.client.stats()))
    check = web.http.get("/api/check").json()
    assert check["status"] in ("ok", "warning") and "problems" in check
    page = web.http.get("/api/tasks?status=failed").json()
    assert page["total"] == 1 and page["tasks"][0]["id"] == task_id
    hours = web.http.get("/api/activity?hours=3").json()
    assert len(hours) == 3 and sum(h["failed"] for h in hours) >= 1
    events = web.http.get(f"/api/tasks/{task_id}/events").json()
    assert events == shown["events"]
    assert web.http.get("/api/tasks/424242").json() == {"error": "no task with id 424242"}
    assert web.http.get("/api/activity?hours=100000").status_code == 400


def test_api_actions_need_the_csrf_header(web: Web) -> None:
    task_id = web.failed_task()
    token = web.http.get("/api/csrf").json()["csrf_token"]
    headers = {"X-CSRF-Token": token}
    done = web.http.post(f"/api/tasks/{task_id}/retry", headers=headers, json={})
    assert done.status_code == 200 and done.json()["status"] == "created"
    refused = web.http.post(f"/api/tasks/{task_id}/retry", headers=headers, json={})
    assert refused.status_code == 409 and "not failed" in refused.json()["error"]
    bulk = web.http.post("/api/tasks/cancel", headers=headers, json={"expect": 1})
    assert bulk.json() == {"matched": 1, "changed": 1, "pending": 0, "refused": []}
    paused = web.http.post("/api/queues/x/pause", headers=headers, json={"reason": "why"})
    assert paused.json()["queue"] == "x" and paused.json()["new"] is True
    assert web.http.post("/api/queues/x/resume", headers=headers).json()["queue"] == "x"
    bad = web.http.post(
        "/api/tasks/retry",
        headers=headers,
        content=b"{",
    )
    assert bad.status_code in (400, 403)


def test_a_database_down_is_a_503_page(tmp_path: Path) -> None:
    down = "postgresql+psycopg://nobody@127.0.0.1:1/nothing?connect_timeout=2"
    web = make_web(f"sqlite:///{tmp_path / 'ok.db'}", tmp_path)
    close(web)

    from starlette.testclient import TestClient

    from bgtaskex.client import connect
    from bgtaskex.web.app import create_app

    settings = web.settings._replace(database_url=down)
    app = create_app(lambda: connect(settings=settings, trust_refs=False, create=False), settings)
    with TestClient(app) as http:
        for path in ("/", "/tasks", "/api/stats"):
            response = http.get(path)
            assert response.status_code == 503, path
            text = response.text if path != "/api/stats" else response.json()["error"]
            assert "the database is unavailable" in text and "Traceback" not in text


@pytest.mark.parametrize("action", ["retry", "cancel", "bulk", "pause"])
def test_actions_on_a_server_database(server_url: str, tmp_path: Path, action: str) -> None:
    web = make_web(server_url, tmp_path)
    try:
        task_id = web.failed_task()
        if action == "retry":
            assert "queued again" in (flash_of(web.post(f"/tasks/{task_id}/retry").text) or "")
            assert web.client.get(task_id).status == "created"
        elif action == "cancel":
            other = web.waiting_task()
            assert flash_of(web.post(f"/tasks/{other}/cancel").text) == f"task {other} cancelled"
        elif action == "bulk":
            page = web.http.get("/tasks/bulk?action=retry").text
            assert 'data-count="1"' in page
            done = web.post("/tasks/bulk", {"action": "retry", "expect": "1"})
            assert flash_of(done.text) == "1 of 1 task(s) queued again"
        else:
            web.post("/queues/default/pause", {"reason": "on a server"})
            assert [p.queue for p in web.client.paused_queues()] == ["default"]
            assert 'data-paused="yes"' in web.http.get("/").text
        assert 'data-total="' in web.http.get("/tasks").text
    finally:
        close(web)


def test_a_database_without_the_schema_reads_empty_and_refuses_actions(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from bgtaskex.client import connect
    from bgtaskex.config import Settings
    from bgtaskex.web.app import create_app

    path = tmp_path / "none.db"
    settings = Settings(database_url=f"sqlite:///{path}")
    app = create_app(lambda: connect(settings=settings, trust_refs=False, create=False), settings)
    with TestClient(app) as http:
        for page in ("/", "/tasks", "/runs", "/api/stats"):
            assert http.get(page).status_code == 200, page
        token = csrf_of(http.get("/").text)
        paused = http.post("/queues/q/pause", data={"csrf_token": token})
        assert flash_of(paused.text) == f"refused: {NO_SCHEMA}"
    assert not path.exists()  # looking and a refused action created nothing
