"""The dashboard's pages but the tasks' (tasks.py): overview, processes, retention
rules, runs, and the login. Reads are sync endpoints (Starlette runs them in its thread
pool, over the shared Client); every POST is async, checked by `post_guard` first, and
calls the Client in the thread pool."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..client import Client
from ..exceptions import BgtaskexError, UsageError
from ..processes import Process
from ..walltime import local_now
from .app import web_of
from .charts import hour_bars, week_chart
from .filters import positive_int
from .gate import post_guard
from .glance import FAILED_WITHIN, glance, running_count
from .html import Pages
from .security import COOKIE, SESSION_SECONDS
from .tasks import task_routes


def overview_data(client: Client) -> dict[str, Any]:
    """What the overview shows: counts per queue, type and status, the oldest waiting
    task, the queues, the hourly chart, the last runs, the headline with the check, the
    processes."""
    from ..views import stats_dict

    stats = stats_dict(client.stats())
    queues = client.queues()
    waiting = [q for q in queues if q.oldest_waiting_at is not None]
    latest = datetime.max.replace(tzinfo=UTC)
    oldest = min(waiting, key=lambda q: q.oldest_waiting_at or latest, default=None)
    health = client.health(failed_within=FAILED_WITHIN)
    return {
        "stats": stats,
        "statuses": sorted({row["status"] for row in stats["tasks"]}),
        "by_queue": _by_queue(stats["tasks"]),
        "oldest": oldest,
        "queues": queues,
        "chart": hour_bars(client.activity(24)),
        "runs": client.runs(limit=10),
        "glance": glance(health, running_count(stats)),
        "processes": [process_row(p, client) for p in client.settings.scheduled],
    }


def _by_queue(rows: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, int]]]:
    """`stats --json`'s counts as table rows: (queue, type, {status: count})."""
    table: dict[tuple[str, str], dict[str, int]] = {}
    for row in rows:
        table.setdefault((row["queue"], row["type"]), {})[row["status"]] = row["count"]
    return [(queue, kind, counts) for (queue, kind), counts in sorted(table.items())]


def process_row(process: Process, client: Client, runs: int = 0) -> dict[str, Any]:
    """A scheduled process as `bgtaskex processes` computes it (its next occurrence),
    its window open or closed now, its week drawn, and its last `runs` runs."""
    now = local_now()
    next_at = process.next_occurrence(now)
    window = process.window
    trigger = f"cron {process.cron}" if process.cron else f"every {process.every or 60:g}s"
    return {
        "process": process,
        "trigger": trigger,
        "next_at": next_at,
        "open": window is None or window.contains(now),
        "week": week_chart(window, now, next_at),
        "runs": client.runs(limit=runs, process=process.name) if runs else [],
    }


def refresh_seconds(took: float) -> int:
    """How often a live part that took `took` seconds to read refreshes: every 2 s, or
    less often when it is costly (its counts read every task: about 0.5 s on 1,000,000
    tasks), so that one open page keeps the server busy a tenth of the time at most."""
    return max(2, min(60, math.ceil(took * 10)))


def overview(request: Request) -> Response:
    web = web_of(request)
    began = time.monotonic()
    with web.clients.use() as client:
        data = overview_data(client)
    poll = refresh_seconds(time.monotonic() - began)
    return web.pages.response(request, "overview.html", title="Overview", poll=poll, **data)


def processes(request: Request) -> Response:
    web = web_of(request)
    with web.clients.use() as client:
        rows = [process_row(p, client, runs=5) for p in client.settings.scheduled]
    return web.pages.response(request, "processes.html", title="Processes", rows=rows)


def runs(request: Request) -> Response:
    web = web_of(request)
    process = request.query_params.get("process", "").strip() or None
    failed = request.query_params.get("failed", "") in ("1", "true", "on", "yes")
    limit = positive_int("limit", request.query_params.get("limit"), default=50) or 50
    with web.clients.use() as client:
        found = client.runs(limit=min(limit, 1000), process=process, failed=failed)
        names = [p.name for p in client.settings.scheduled]
    return web.pages.response(
        request,
        "runs.html",
        title="Runs",
        runs=found,
        process=process or "",
        failed=failed,
        names=names,
    )


def rules(request: Request) -> Response:
    from ..builtin.retention import rule_statuses
    from ..urls import mask_secrets
    from ..views import rule_dict

    web = web_of(request)
    with web.clients.use() as client:
        rows = [
            (rule_dict(s, mask_secrets(s.rule.database or client.settings.url)), s.last)
            for s in rule_statuses(client)
        ]
    return web.pages.response(request, "rules.html", title="Retention rules", rows=rows)


def rule_preview(request: Request) -> Response:
    from ..builtin.retention import preview
    from ..urls import mask_secrets

    web = web_of(request)
    name = request.path_params["name"]
    with web.clients.use() as client:
        rule = client.settings.retention_rule(name)
        found = preview(client, name, 10)
        database = mask_secrets(rule.database or client.settings.url)
    return web.pages.response(
        request,
        "rule_preview.html",
        title=f"Preview of {name}",
        rule=rule,
        preview=found,
        database=database,
    )


def _act(pages: Pages, back: Callable[[Request], str]) -> Callable[..., Any]:
    """An action's endpoint: calls `work(client, request, form)` in the thread pool and
    goes back to `back(request)` with its message (a refusal's reason included)."""

    def wrap(work: Callable[[Client, Request, dict[str, str]], str]) -> Any:
        @post_guard(pages)
        async def endpoint(request: Request) -> Response:
            form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
            web = web_of(request)

            def call() -> str:
                with web.clients.use(write=True) as client:
                    return work(client, request, form)

            try:
                message = await run_in_threadpool(call)
            except (UsageError, BgtaskexError) as err:
                if err.exit_code not in (2, 3, 5):
                    raise
                message = f"refused: {err}"
            return pages.redirect(request, back(request), message)

        return endpoint

    return wrap


def _pause(client: Client, request: Request, form: dict[str, str]) -> str:
    from ..render_ops import pause_line

    paused, new = client.pause(request.path_params["queue"], form.get("reason") or None)
    return pause_line(paused) if new else f"already {pause_line(paused)}"


def _resume(client: Client, request: Request, form: dict[str, str]) -> str:
    lifted = client.resume(request.path_params["queue"])
    return f"queue {lifted.queue} resumed"


def _run_rule(client: Client, request: Request, form: dict[str, str]) -> str:
    from ..builtin.retention import queue_rule
    from ..rules import RETENTION_PROCESS, RETENTION_QUEUE

    name = request.path_params["name"]
    settings = client.settings
    queue = (settings.process(RETENTION_PROCESS).queues or (RETENTION_QUEUE,))[0]
    task_id, new = queue_rule(client, name, queue=queue)
    if new:
        return f"rule {name}: queued task {task_id} on queue {queue}"
    return f"rule {name}: task {task_id} is already queued or running; not queued again"


def login(request: Request) -> Response:
    web = web_of(request)
    target = _next(request.query_params.get("next"))
    return web.pages.response(request, "login.html", title="Log in", next=target)


def _next(target: str | None) -> str:
    """Where a login goes on: a path of this dashboard only (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def routes(pages: Pages) -> list[BaseRoute]:
    @post_guard(pages, allow_read_only=True)
    async def login_post(request: Request) -> Response:
        form = await request.form()
        given = form.get("token")
        target = _next(str(form.get("next") or "/"))
        guard = pages.guard
        if not isinstance(given, str) or not guard.token_matches(given):
            return pages.response(
                request, "login.html", 403, title="Log in", next=target, message="wrong token"
            )
        _session, value = guard.new_session(authenticated=True)
        response = pages.redirect(request, target)
        secure = request.url.scheme == "https"
        response.headers.append(
            "set-cookie", guard.cookie(COOKIE, value, secure=secure, max_age=SESSION_SECONDS)
        )
        return response

    @post_guard(pages, allow_read_only=True)
    async def logout(request: Request) -> Response:
        response = pages.redirect(request, "/login")
        secure = request.url.scheme == "https"
        response.headers.append(
            "set-cookie", pages.guard.cookie(COOKIE, "", secure=secure, max_age=0)
        )
        return response

    act = _act
    return [
        Route("/", overview, name="overview"),
        Route("/processes", processes, name="processes"),
        Route("/runs", runs, name="runs"),
        Route("/rules", rules, name="rules"),
        Route("/rules/{name}/preview", rule_preview, name="rule_preview"),
        Route("/login", login, name="login"),
        Route("/login", login_post, methods=["POST"]),
        Route("/logout", logout, methods=["POST"], name="logout"),
        Route("/queues/{queue:path}/pause", act(pages, lambda r: "/")(_pause), methods=["POST"]),
        Route("/queues/{queue:path}/resume", act(pages, lambda r: "/")(_resume), methods=["POST"]),
        Route("/rules/{name}/run", act(pages, lambda r: "/rules")(_run_rule), methods=["POST"]),
        *task_routes(pages),
    ]
