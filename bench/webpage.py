"""A page of the web dashboard's task list on 1,000,000 tasks, on SQLite and PostgreSQL
(and MariaDB with `--mariadb-url`), filled by `webfill` (kept between runs).

For each filter of `bgtaskex list` in `_filters`, page 1 and a deep page (`before_id` in
the middle of the table), alternating, median of R runs after a warm-up:

- `Client.page_tasks`: the data layer alone (the page, its total counted up to 10,000);
- `GET /tasks?...`: the HTML page, the server's time for it: the real app
  (`bgtaskex.web.app.create_app`, built as `bgtaskex web` builds it) called as an ASGI
  application in this process, from the request to the response's last byte;
- `GET /api/tasks?...`: the same page as JSON;

and `Client.list_tasks` with the same filter and limit 50, which each is reported as a
ratio to. Target: the server's time for a page under 50 ms at 1,000,000 tasks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from rich.console import Console
from rich.table import Table

from . import BenchError, masked, median, rotated
from .webfill import cached

TASKS_FULL, TASKS_QUICK = 1_000_000, 100_000
RUNS_FULL, RUNS_QUICK = 21, 7
TARGET_MS = 50.0
KINDS = ("page_tasks", "html", "api")
KIND_LABELS = {"page_tasks": "page_tasks", "html": "GET /tasks", "api": "GET /api/tasks"}


def _filters(now: datetime) -> dict[str, dict[str, Any]]:
    """The filters measured: `bgtaskex list`'s, as TaskFilter fields."""
    return {
        "none": {},
        "status failed": {"statuses": frozenset({"failed"})},
        "status active": {"statuses": frozenset({"created", "paused", "running"})},
        "queue reports": {"queues": frozenset({"reports"})},
        "queue imports, failed": {
            "queues": frozenset({"imports"}),
            "statuses": frozenset({"failed"}),
        },
        "type interactive": {"types": frozenset({"interactive"})},
        "name report-1*": {"name_glob": "report-1*"},
        "name *-999 (no index)": {"name_glob": "*-999"},
        "since 1d": {"since": now - timedelta(days=1)},
        "since 30d": {"since": now - timedelta(days=30)},
        "until 80d ago": {"until": now - timedelta(days=80)},
        "failed since 7d": {"statuses": frozenset({"failed"}), "since": now - timedelta(days=7)},
    }


def _query(fields: dict[str, Any], before: int | None) -> str:
    """The Tasks page's query string of TaskFilter `fields` (times as ISO timestamps)."""
    items: list[tuple[str, str]] = []
    for field, key in (("statuses", "status"), ("types", "type"), ("queues", "queue")):
        items += [(key, value) for value in sorted(fields.get(field) or ())]
    if fields.get("name_glob"):
        items.append(("name", fields["name_glob"]))
    for key in ("since", "until"):
        if fields.get(key) is not None:
            items.append((key, fields[key].isoformat()))
    if before is not None:
        items.append(("before", str(before)))
    return "?" + urlencode(items) if items else ""


class _Server:
    """The dashboard's app as `bgtaskex web` builds it, over `url`, called as an ASGI
    application on one event loop (Starlette runs the sync endpoints in its threads, as
    under uvicorn)."""

    def __init__(self, url: str) -> None:
        from bgtaskex.client import connect
        from bgtaskex.config import Settings
        from bgtaskex.web.app import create_app

        settings = Settings(database_url=url)
        self.app = create_app(
            lambda: connect(settings=settings, trust_refs=False, create=False), settings
        )
        self.loop = asyncio.new_event_loop()

    def get(self, path: str) -> bytes:
        """The body of GET `path` (with its query); BenchError unless a 200."""
        where, _, query = path.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": where,
            "raw_path": where.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1:8787"), (b"accept", b"text/html")],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8787),
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        self.loop.run_until_complete(self.app(scope, receive, send))
        status = sent[0].get("status") if sent else None
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        if status != 200:
            raise BenchError(f"GET {path}: {status}: {body[:300]!r}")
        return body

    def close(self) -> None:
        web = self.app.starlette.state.web
        web.clients.close()
        self.loop.close()


def _timed(call: Callable[[], object]) -> float:
    began = time.perf_counter()
    call()
    return (time.perf_counter() - began) * 1000


def _calls(client: Any, server: _Server, n: int, now: datetime) -> dict[str, Callable[[], object]]:
    from bgtaskex.models import TaskFilter

    calls: dict[str, Callable[[], object]] = {}
    for label, fields in _filters(now).items():
        where = TaskFilter(**fields)
        for page, before in (("page 1", None), ("deep page", n // 2)):
            key = f"{label}|{page}"
            calls[f"{key}|page_tasks"] = lambda w=where, b=before: client.page_tasks(w, before_id=b)
            query = _query(fields, before)
            calls[f"{key}|html"] = lambda q=query: server.get("/tasks" + q)
            calls[f"{key}|api"] = lambda q=query: server.get("/api/tasks" + q)
        calls[f"{label}|list_tasks"] = lambda w=where: client.list_tasks(w, limit=50)
    return calls


def _measure(url: str, n: int, now: datetime, runs: int) -> dict[str, Any]:
    from bgtaskex.client import connect
    from bgtaskex.models import TaskFilter

    server = _Server(url)
    try:
        with connect(url) as client:
            calls = _calls(client, server, n, now)
            samples: dict[str, list[float]] = {key: [] for key in calls}
            for call in calls.values():  # warm-up
                call()
            for r in range(runs):
                for key in rotated(list(calls), r):
                    samples[key].append(_timed(calls[key]))
            sizes = {
                label: client.page_tasks(TaskFilter(**fields))
                for label, fields in _filters(now).items()
            }
    finally:
        server.close()
    results: dict[str, Any] = {}
    for label in _filters(now):
        listed = median(samples[f"{label}|list_tasks"])
        row: dict[str, Any] = {
            "list_tasks_ms": listed,
            "total": sizes[label].total,
            "total_is_lower_bound": sizes[label].total_is_lower_bound,
        }
        for page in ("page 1", "deep page"):
            for kind in KINDS:
                found = median(samples[f"{label}|{page}|{kind}"])
                row[f"{kind}|{page}|ms"] = found
                row[f"{kind}|{page}|ratio"] = found / listed
        row["met"] = all(
            row[f"{k}|{p}|ms"] <= TARGET_MS
            for k in ("html", "api")
            for p in ("page 1", "deep page")
        )
        results[label] = row
    return results


def run(
    console: Console,
    *,
    quick: bool = False,
    postgres_url: str,
    use_postgres: bool = True,
    mariadb_url: str | None = None,
    tasks: int | None = None,
    rebuild: bool = False,
    runs: int | None = None,
) -> dict[str, Any]:
    n = tasks or (TASKS_QUICK if quick else TASKS_FULL)
    runs = runs or (RUNS_QUICK if quick else RUNS_FULL)
    kinds = [("sqlite", "")]
    if use_postgres:
        kinds.append(("postgresql", postgres_url))
    if mariadb_url:
        kinds.append(("mariadb", mariadb_url))
    results: dict[str, Any] = {}
    for kind, server in kinds:
        try:
            began = time.perf_counter()
            with cached(kind, n, server, rebuild=rebuild) as (url, now, reused):
                fill_s = time.perf_counter() - began
                results[kind] = {
                    "fill_s": fill_s,
                    "reused": reused,
                    "filters": _measure(url, n, now, runs),
                }
        except BenchError:
            raise
        except Exception as err:  # no server: skip its rows, say why
            console.print(f"[yellow]webpage: {kind} skipped ({masked(str(err))[:200]})[/yellow]")
    _print(console, results, n, runs)
    worst = max(
        (
            row[f"{k}|{p}|ms"]
            for r in results.values()
            for row in r["filters"].values()
            for k in ("html", "api")
            for p in ("page 1", "deep page")
        ),
        default=0.0,
    )
    return {"tasks": n, "runs": runs, "target_ms": TARGET_MS, "worst_ms": worst, "results": results}


def _print(console: Console, results: dict[str, Any], n: int, runs: int) -> None:
    for kind, found in results.items():
        how = "kept fill" if found["reused"] else f"filled in {found['fill_s']:.0f} s"
        table = Table(
            title=f"{kind}: a page of 50 on {n:,} tasks ({how}): median of {runs}, ms "
            "(page 1 / deep page), and as a ratio to list_tasks(limit=50)",
            title_justify="left",
        )
        table.add_column("filter")
        table.add_column("total", justify="right")
        for k in KINDS:
            table.add_column(f"{KIND_LABELS[k]} ms", justify="right")
        table.add_column("list_tasks ms", justify="right")
        for k in ("html", "api"):
            table.add_column(f"{KIND_LABELS[k]} / list", justify="right")
        table.add_column(f"< {TARGET_MS:g} ms")
        for label, row in found["filters"].items():
            over = "+" if row["total_is_lower_bound"] else ""
            table.add_row(
                label,
                f"{row['total']:,}{over}",
                *(f"{_ms(row[f'{k}|page 1|ms'])} / {_ms(row[f'{k}|deep page|ms'])}" for k in KINDS),
                f"{row['list_tasks_ms']:.2f}",
                *(
                    f"{row[f'{k}|page 1|ratio']:.1f} / {row[f'{k}|deep page|ratio']:.1f}"
                    for k in ("html", "api")
                ),
                "met" if row["met"] else "[red]not met[/red]",
            )
        console.print(table)
    console.print(f"target: the server's time for a page under {TARGET_MS:g} ms (red: over)\n")


def _ms(value: float) -> str:
    text = f"{value:.1f}"
    return f"[red]{text}[/red]" if value > TARGET_MS else text
