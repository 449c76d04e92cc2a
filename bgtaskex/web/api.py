"""The JSON API under /api/: the objects of the CLI's `--json`, from the same
serializers (bgtaskex.views), params masked as on the pages; and a POST for each action
(CSRF token in `X-CSRF-Token`, or the bearer token). Errors are `{"error": "..."}` with
the status of the page's (400, 403, 404, 409, 503)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .. import views
from ..client import Client
from ..exceptions import UsageError
from ..models import TaskFilter
from ..walltime import local_now
from .app import web_of
from .filters import parse_query, positive_int
from .gate import post_guard
from .html import Pages
from .masking import mask_task_dict
from .tasks import PAGE_SIZE, bulk_filter, expected


def _json(value: Any, status: int = 200) -> Response:
    return Response(
        views.dumps(value), status_code=status, media_type="application/json; charset=utf-8"
    )


def _read(request: Request, work: Callable[[Client], Any]) -> Response:
    with web_of(request).clients.use() as client:
        return _json(work(client))


def stats(request: Request) -> Response:
    return _read(request, lambda c: views.stats_dict(c.stats()))


def queues(request: Request) -> Response:
    return _read(request, lambda c: [views.queue_dict(q) for q in c.queues()])


def check(request: Request) -> Response:
    def work(client: Client) -> Any:
        health = client.health()
        return views.health_dict(health, health.problems(), health.notes())

    return _read(request, work)


def runs(request: Request) -> Response:
    params = request.query_params
    process = params.get("process", "").strip() or None
    failed = params.get("failed", "") in ("1", "true", "yes", "on")
    limit = positive_int("limit", params.get("limit"), default=20) or 20
    return _read(
        request,
        lambda c: [views.run_dict(r) for r in c.runs(limit=limit, process=process, failed=failed)],
    )


def processes(request: Request) -> Response:
    now = local_now()
    return _read(
        request,
        lambda c: [views.process_dict(p, p.next_occurrence(now)) for p in c.settings.scheduled],
    )


def rules(request: Request) -> Response:
    from ..builtin.retention import rule_statuses
    from ..urls import mask_secrets

    def work(client: Client) -> Any:
        url = client.settings.url
        return [
            views.rule_dict(s, mask_secrets(s.rule.database or url)) for s in rule_statuses(client)
        ]

    return _read(request, work)


def rule_preview(request: Request) -> Response:
    from ..builtin.retention import preview
    from ..urls import mask_secrets

    name = request.path_params["name"]
    sample = positive_int("sample", request.query_params.get("sample"), default=10) or 10

    def work(client: Client) -> Any:
        rule = client.settings.retention_rule(name)
        found = preview(client, name, min(sample, 10_000))
        database = mask_secrets(rule.database or client.settings.url)
        row = views.preview_dict(found, database, rule.describe())
        row["sql"] = [{"statement": what, "sql": sql} for what, sql in found.sql]
        row["values"] = {
            k: v.isoformat(" ") if hasattr(v, "isoformat") else v for k, v in found.values
        }
        return row

    return _read(request, work)


def activity(request: Request) -> Response:
    hours = positive_int("hours", request.query_params.get("hours"), default=24) or 24
    if hours > 24 * 31:
        raise UsageError(f"hours must be at most {24 * 31}, got {hours}")
    return _read(request, lambda c: views.activity_dict(c.activity(hours)))


def tasks(request: Request) -> Response:
    params = request.query_params
    query = parse_query(params.multi_items())
    before = positive_int("before", params.get("before"))
    limit = positive_int("limit", params.get("limit"), default=PAGE_SIZE) or PAGE_SIZE
    show = web_of(request).show_secrets

    def work(client: Client) -> Any:
        page = client.page_tasks(query.where, before_id=before, limit=min(limit, 500))
        found = views.task_page_dict(page, client.task_states(page.tasks))
        found["tasks"] = [mask_task_dict(t, keys=not show) for t in found["tasks"]]
        return found

    return _read(request, work)


def _task_json(client: Client, task_id: int, show: bool, events: int = 50) -> dict[str, Any]:
    """`show --json`: the task, its state, its latest events."""
    task, action_count = client.task_page(task_id, 50)
    history, event_count = client.recent_events(task_id, events)
    found = views.task_dict(task, action_count, client.task_states([task])[task.id])
    return {
        **mask_task_dict(found, keys=not show),
        "events": [views.event_dict(e) for e in history],
        "event_count": event_count,
    }


def _task_id(request: Request) -> int:
    number = positive_int("task id", request.path_params["task_id"])
    assert number is not None
    return number


def task(request: Request) -> Response:
    task_id, show = _task_id(request), web_of(request).show_secrets
    return _read(request, lambda c: _task_json(c, task_id, show))


def events(request: Request) -> Response:
    task_id = _task_id(request)
    limit = positive_int("limit", request.query_params.get("limit"), default=50) or 50
    return _read(
        request,
        lambda c: [views.event_dict(e) for e in c.recent_events(task_id, min(limit, 100_000))[0]],
    )


def csrf(request: Request) -> Response:
    session = request.scope["bgtaskex.session"]
    return _json(
        {"csrf_token": web_of(request).guard.csrf_token(session), "header": "X-CSRF-Token"}
    )


async def _body(request: Request) -> dict[str, Any]:
    """A POST's arguments: a JSON object, or a form."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            found = json.loads(await request.body() or b"{}")
        except (ValueError, RecursionError):
            raise UsageError("the body is not valid JSON") from None
        if not isinstance(found, dict):
            raise UsageError("the body must be a JSON object")
        return found
    form = await request.form()
    return {k: v for k, v in form.multi_items() if isinstance(v, str)}


def _flag(value: object) -> bool:
    return value is True or str(value).lower() in ("1", "true", "yes", "on")


def _post(pages: Pages, work: Callable[[Client, Request, dict[str, Any]], Any]) -> Any:
    @post_guard(pages)
    async def endpoint(request: Request) -> Response:
        body = await _body(request)
        clients = web_of(request).clients

        def call() -> Any:
            with clients.use(write=True) as client:
                return work(client, request, body)

        return _json(await run_in_threadpool(call))

    return endpoint


def _retry(client: Client, request: Request, body: dict[str, Any]) -> Any:
    task_id = _task_id(request)
    client.retry(task_id, from_start=_flag(body.get("from_start")))
    return _task_json(client, task_id, web_of(request).show_secrets)


def _cancel(client: Client, request: Request, body: dict[str, Any]) -> Any:
    task_id = _task_id(request)
    now = client.cancel(task_id)
    return {"cancelled_now": now, **_task_json(client, task_id, web_of(request).show_secrets)}


def _bulk_args(action: str, body: dict[str, Any]) -> tuple[TaskFilter, int]:
    """The tasks a bulk action applies to (`tasks.bulk_filter`) and its `expect`."""
    pairs: list[tuple[str, str]] = []
    for key, value in body.items():
        for one in value if isinstance(value, list) else [value]:
            pairs.append((key, str(one)))
    return bulk_filter(action, parse_query(pairs).where), expected(body.get("expect"))


def _bulk_retry(client: Client, request: Request, body: dict[str, Any]) -> Any:
    where, expect = _bulk_args("retry", body)
    done = client.retry_where(where, expect=expect, from_start=_flag(body.get("from_start")))
    return views.bulk_dict(done)


def _bulk_cancel(client: Client, request: Request, body: dict[str, Any]) -> Any:
    where, expect = _bulk_args("cancel", body)
    return views.bulk_dict(client.cancel_where(where, expect=expect))


def _pause(client: Client, request: Request, body: dict[str, Any]) -> Any:
    reason = body.get("reason")
    paused, new = client.pause(request.path_params["queue"], reason if reason else None)
    return {**views.pause_dict(paused), "new": new}


def _resume(client: Client, request: Request, body: dict[str, Any]) -> Any:
    return views.pause_dict(client.resume(request.path_params["queue"]))


def _run_rule(client: Client, request: Request, body: dict[str, Any]) -> Any:
    from ..builtin.retention import queue_rule
    from ..rules import RETENTION_PROCESS, RETENTION_QUEUE

    queue = (client.settings.process(RETENTION_PROCESS).queues or (RETENTION_QUEUE,))[0]
    task_id, new = queue_rule(client, request.path_params["name"], queue=queue)
    return {"task_id": task_id, "queued": new, "queue": queue}


def routes(pages: Pages) -> list[BaseRoute]:
    reads: list[tuple[str, Callable[[Request], Response]]] = [
        ("/api/stats", stats),
        ("/api/check", check),
        ("/api/queues", queues),
        ("/api/runs", runs),
        ("/api/processes", processes),
        ("/api/rules", rules),
        ("/api/rules/{name}/preview", rule_preview),
        ("/api/activity", activity),
        ("/api/tasks", tasks),
        ("/api/tasks/{task_id}", task),
        ("/api/tasks/{task_id}/events", events),
        ("/api/csrf", csrf),
    ]
    writes: list[tuple[str, Callable[[Client, Request, dict[str, Any]], Any]]] = [
        ("/api/tasks/retry", _bulk_retry),
        ("/api/tasks/cancel", _bulk_cancel),
        ("/api/tasks/{task_id}/retry", _retry),
        ("/api/tasks/{task_id}/cancel", _cancel),
        ("/api/queues/{queue:path}/pause", _pause),
        ("/api/queues/{queue:path}/resume", _resume),
        ("/api/rules/{name}/run", _run_rule),
    ]
    found: list[BaseRoute] = [Route(path, endpoint) for path, endpoint in reads]
    found += [Route(path, _post(pages, work), methods=["POST"]) for path, work in writes]
    return found
