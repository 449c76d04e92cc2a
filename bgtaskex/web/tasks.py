"""The tasks' pages: the list (the filters of `bgtaskex list`, pages of 50), one task
(actions, params, progress, history, claim), and the actions on them: retry, retry
from the start, cancel, and the same in bulk on the tasks a filter selects, after a
confirmation page that states how many (the count goes back as `expect`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..client import Client
from ..exceptions import BgtaskexError, TaskNotFound, UsageError
from ..models import ACTIVE_STATUSES, TaskFilter, TaskStatus
from .app import web_of
from .filters import TaskQuery, parse_query, positive_int
from .gate import post_guard
from .html import Pages
from .masking import mask_params

PAGE_SIZE = 50
#: How many earlier cursors a page's "previous" link keeps.
MAX_TRAIL = 100
BULK = ("retry", "cancel")


def _trail(text: str | None) -> list[int]:
    if not text:
        return []
    found = [positive_int("back", part) for part in text.split(",")[-MAX_TRAIL:]]
    return [n for n in found if n is not None]


def tasks_page(request: Request) -> Response:
    web = web_of(request)
    params = request.query_params
    query = parse_query(params.multi_items())
    before = positive_int("before", params.get("before"))
    trail = _trail(params.get("back"))
    with web.clients.use() as client:
        page = client.page_tasks(query.where, before_id=before, limit=PAGE_SIZE)
        states = client.task_states(page.tasks)
        queues = client.queue_names()
    previous: dict[str, Any] | None = None
    if before is not None:
        previous = {"before": trail[-1] if trail else None, "back": ",".join(map(str, trail[:-1]))}
    following = None
    if page.next_before is not None:
        back = [*trail, before] if before is not None else []
        following = {"before": page.next_before, "back": ",".join(map(str, back))}
    return web.pages.response(
        request,
        "tasks.html",
        title="Tasks",
        query=query,
        page=page,
        states=states,
        statuses=[s.value for s in TaskStatus],
        queues=queues,
        previous=previous,
        following=following,
        first=before is None,
    )


def bulk_filter(action: str, where: TaskFilter) -> TaskFilter:
    """The tasks a bulk action applies to among those `where` selects: the failed ones
    for retry (as `retry --all-failed`), those not ended for cancel."""
    allowed = {"failed"} if action == "retry" else {s.value for s in ACTIVE_STATUSES}
    statuses = allowed if where.statuses is None else where.statuses & allowed
    return replace(where, statuses=frozenset(statuses))


def expected(value: object) -> int:
    """The `expect` of a bulk action: the count its confirmation stated (0 or more)."""
    text = str(value).strip() if isinstance(value, str | int) and value is not True else ""
    if not text.isdigit() or int(text) > 10**9:
        raise UsageError(
            f"expect must be the number of tasks the confirmation stated, got {value!r}"
        )
    return int(text)


def _bulk_action(text: str | None) -> str:
    if text not in BULK:
        raise UsageError(f"action must be retry or cancel, got {text!r}")
    return text


def bulk_confirm(request: Request) -> Response:
    web = web_of(request)
    action = _bulk_action(request.query_params.get("action"))
    query = parse_query(request.query_params.multi_items())
    with web.clients.use() as client:
        count = client.count_tasks(bulk_filter(action, query.where))
    return web.pages.response(
        request,
        "bulk.html",
        title=f"Confirm {action}",
        action=action,
        query=query,
        count=count,
        from_start=request.query_params.get("from_start") == "1",
    )


def task_page(request: Request) -> Response:
    web = web_of(request)
    task_id = _task_id(request)
    actions = positive_int("actions", request.query_params.get("actions"), default=50) or 50
    events = positive_int("events", request.query_params.get("events"), default=50) or 50
    with web.clients.use() as client:
        task, action_count = client.task_page(task_id, min(actions, 10_000))
        history, event_count = client.recent_events(task_id, min(events, 10_000))
        state = client.task_states([task])[task.id]
    show = web.show_secrets
    params = {a.rank: mask_params(a.params, keys=not show) for a in task.actions}
    return web.pages.response(
        request,
        "task.html",
        title=f"Task {task.id}",
        task=task,
        state=state,
        params=params,
        action_count=action_count,
        events=history,
        event_count=event_count,
        more_actions=actions * 2,
        more_events=events * 2,
    )


def _task_id(request: Request) -> int:
    text = request.path_params["task_id"]
    number = positive_int("task id", text)
    assert number is not None
    return number


def _task_action(client: Client, task_id: int, action: str) -> str:
    if action == "cancel":
        if client.cancel(task_id):
            return f"task {task_id} cancelled"
        return (
            f"task {task_id} is being executed by a run: "
            "it will be cancelled at its next checkpoint"
        )
    from_start = action == "retry-from-start"
    client.retry(task_id, from_start=from_start)
    how = "from the start" if from_start else "its failed actions"
    return f"task {task_id} queued again ({how})"


def bulk_message(action: str, result: Any) -> str:
    """`3 of 3 task(s) cancelled (1 at its next checkpoint); 1 refused: ...`."""
    done = "queued again" if action == "retry" else "cancelled"
    text = f"{result.changed:,} of {result.matched:,} task(s) {done}"
    if result.pending:
        text += f" ({result.pending:,} at their next checkpoint)"
    if result.refused:
        first = "; ".join(f"task {tid}: {why}" for tid, why in result.refused[:3])
        text += f"; {len(result.refused):,} refused: {first}"
    return text


def task_routes(pages: Pages) -> list[BaseRoute]:
    async def act(request: Request, action: str) -> Response:
        task_id = _task_id(request)
        web = web_of(request)

        def call() -> str:
            with web.clients.use(write=True) as client:
                return _task_action(client, task_id, action)

        back = f"/tasks/{task_id}"
        try:
            message = await run_in_threadpool(call)
        except BgtaskexError as err:
            if err.exit_code not in (2, 3, 5):
                raise
            message = f"refused: {err}"
            back = "/tasks" if isinstance(err, TaskNotFound) else back
        return pages.redirect(request, back, message)

    @post_guard(pages)
    async def retry(request: Request) -> Response:
        return await act(request, "retry")

    @post_guard(pages)
    async def retry_from_start(request: Request) -> Response:
        return await act(request, "retry-from-start")

    @post_guard(pages)
    async def cancel(request: Request) -> Response:
        return await act(request, "cancel")

    @post_guard(pages)
    async def bulk(request: Request) -> Response:
        form = await request.form()
        items = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
        action = _bulk_action(dict(items).get("action"))
        query = parse_query(items)
        expect = expected(dict(items).get("expect"))
        from_start = dict(items).get("from_start") == "1"
        web = web_of(request)

        def call() -> str:
            with web.clients.use(write=True) as client:
                where = bulk_filter(action, query.where)
                if action == "retry":
                    done = client.retry_where(where, expect=expect, from_start=from_start)
                else:
                    done = client.cancel_where(where, expect=expect)
                return bulk_message(action, done)

        try:
            message = await run_in_threadpool(call)
        except BgtaskexError as err:
            if err.exit_code not in (2, 5):
                raise
            message = f"refused: {err}"
        return pages.redirect(request, "/tasks" + _query(query), message)

    return [
        Route("/tasks", tasks_page, name="tasks"),
        Route("/tasks/bulk", bulk_confirm, name="bulk_confirm"),
        Route("/tasks/bulk", bulk, methods=["POST"]),
        Route("/tasks/{task_id}", task_page, name="task"),
        Route("/tasks/{task_id}/retry", retry, methods=["POST"]),
        Route("/tasks/{task_id}/retry-from-start", retry_from_start, methods=["POST"]),
        Route("/tasks/{task_id}/cancel", cancel, methods=["POST"]),
    ]


def _query(query: TaskQuery) -> str:
    return query.query()
