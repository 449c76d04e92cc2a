"""The operators' commands: list, show, retry, cancel, purge, stats, check.

Registered on the `bgtaskex` group by cli.py; like it, each command parses, calls one
library function and prints. Heavy modules are imported inside the commands.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..config import parse_duration, parse_when
from ..exceptions import BgtaskexError, InvalidState, TaskNotFound, UsageError
from .main import State, _echo_json, _print, _remember, cli, pass_state

if TYPE_CHECKING:
    from ..models import TaskFilter
    from ..registry import Registry
    from ..store.core import Store

F = TypeVar("F", bound=Callable[..., Any])


def _when(_ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_when(value)
    except ValueError as err:
        raise click.BadParameter(str(err), param=param) from None


def _duration(_ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as err:
        raise click.BadParameter(str(err), param=param) from None


def filter_options(func: F) -> F:
    """The task filters shared by list, purge and retry --all-failed."""
    options = [
        click.option(
            "--status",
            "statuses",
            multiple=True,
            metavar="STATUS",
            help="Only this status (repeatable); 'active' = every status not ended.",
        ),
        click.option("--type", "types", multiple=True, type=click.Choice(["interactive", "cron"])),
        click.option("--queue", "queues", multiple=True, metavar="QUEUE", help="Repeatable."),
        click.option("--name", "name_glob", metavar="GLOB", help="Task name, * and ? (any case)."),
        click.option(
            "--since", callback=_when, metavar="WHEN", help="Created since: 2h, 7d, 2026-11-28."
        ),
        click.option("--until", callback=_when, metavar="WHEN", help="Created before WHEN."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _filter(
    statuses: tuple[str, ...] = (),
    types: tuple[str, ...] = (),
    queues: tuple[str, ...] = (),
    name_glob: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    ended_before: datetime | None = None,
) -> TaskFilter:
    from ..client import expand_statuses
    from ..models import TaskFilter

    return TaskFilter(
        statuses=expand_statuses(statuses) if statuses else None,
        types=frozenset(types) or None,
        queues=frozenset(queues) or None,
        name_glob=name_glob,
        since=since,
        until=until,
        ended_before=ended_before,
    )


# -- list / show ---------------------------------------------------------------------------


@cli.command(
    "list",
    epilog="""\b
Examples:
  bgtaskex list                              # waiting tasks in run order, then ended ones
  bgtaskex list --status failed --since 1d
  bgtaskex list --status active --queue reports --json""",
)
@filter_options
@click.option("--limit", type=click.IntRange(min=1, max=10**9), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="A JSON array of task objects.")
@pass_state
def list_(state: State, /, limit: int, as_json: bool, **filters: Any) -> None:
    """Tasks still to run (in the order the run takes them), then ended ones, newest first."""
    where = _filter(**filters)
    client = state.client(readonly=True)
    tasks = client.list_tasks(where, limit=limit)
    cap = 10_000
    total = client.count_tasks(where, up_to=limit + cap) if len(tasks) == limit else len(tasks)
    more = total - len(tasks)
    if as_json:
        from ..views import task_dict

        _echo_json([task_dict(t) for t in tasks])
        return
    if not tasks:
        from ..models import TaskFilter

        click.echo("no tasks match these filters" if where != TaskFilter() else "no tasks yet")
        return
    from ..views import render_tasks

    _print(render_tasks(tasks))
    if more > 0:
        plus = "+" if more >= cap else ""
        click.echo(f"... and {more:,}{plus} more (raise --limit or narrow the filters)")


@cli.command(
    epilog="""\b
Examples:
  bgtaskex show 42
  bgtaskex show 42 --verbose                 # with the tracebacks of errors
  bgtaskex show 42 --actions 500 --events 1000
  bgtaskex show 42 --json | jq '.events[-1]'""",
)
@click.argument("task_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="The task, its actions and events.")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks of errors.")
@click.option(
    "--actions",
    "max_actions",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    metavar="N",
    help="Show the first N actions (and the current one), with the total count.",
)
@click.option(
    "--events",
    "max_events",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    metavar="N",
    help="Show the latest N events of the history, with the total count.",
)
@pass_state
def show(
    state: State, task_id: int, as_json: bool, verbose: bool, max_actions: int, max_events: int
) -> None:
    """A task, its actions with their params and progress, and its history."""
    store = state.client(readonly=True).store
    task, action_count = store.get_task_page(task_id, max_actions)
    events, event_count = store.recent_events(task_id, max_events)
    if as_json:
        from ..views import event_dict, task_dict

        _echo_json(
            {
                **task_dict(task, action_count),
                "events": [event_dict(e) for e in events],
                "event_count": event_count,
            }
        )
    else:
        from ..views import render_task

        _print(
            *render_task(
                task, events, verbose=verbose, action_count=action_count, event_count=event_count
            )
        )


# -- retry / cancel ------------------------------------------------------------------------


def _each(ids: list[int], act: Callable[[int], str]) -> None:
    """Apply `act` to each id, one line per id; errors do not stop the others, and the
    exit code is that of the last error."""
    code = 0
    for task_id in ids:
        try:
            click.echo(act(task_id))
        except (TaskNotFound, InvalidState) as err:
            click.echo(f"bgtaskex: error: {err}", err=True)
            code = err.exit_code
    if code:
        raise click.exceptions.Exit(code)


@cli.command(
    epilog="""\b
Examples:
  bgtaskex retry 42 43
  bgtaskex retry 42 --from-start             # every action again, from init_params
  bgtaskex retry --all-failed --queue reports --since 1d""",
)
@click.argument("task_ids", nargs=-1, type=int, metavar="[TASK_ID]...")
@click.option("--from-start", is_flag=True, help="Re-run every action with its enqueued params.")
@click.option("--all-failed", is_flag=True, help="Every failed task the filters select.")
@filter_options
@pass_state
def retry(
    state: State, /, task_ids: tuple[int, ...], from_start: bool, all_failed: bool, **filters: Any
) -> None:
    """Put failed tasks back in the queue: their failed actions become pending again with
    their attempts reset. A task that is not failed is refused."""
    client = state.client()
    if all_failed == bool(task_ids):
        raise UsageError("give TASK_IDs or --all-failed (with optional filters), not both")
    if filters.get("statuses"):
        raise UsageError("--status does not apply to retry: it retries failed tasks")
    how = "from the start" if from_start else "its failed actions"

    def act(task_id: int) -> str:
        client.retry(task_id, from_start=from_start)
        return f"task {task_id} queued again ({how})"

    if task_ids:
        _each(list(task_ids), act)
        return
    where = _filter(statuses=("failed",), **{k: v for k, v in filters.items() if k != "statuses"})
    count = 0
    while batch := client.list_tasks(where, limit=500):
        for task in batch:
            client.retry(task.id, from_start=from_start)
        count += len(batch)
    click.echo(f"{count} failed task(s) queued again ({how})")


@cli.command(
    epilog="""\b
Examples:
  bgtaskex cancel 42
  bgtaskex cancel 42 43 44""",
)
@click.argument("task_ids", nargs=-1, type=int, required=True, metavar="TASK_ID...")
@pass_state
def cancel(state: State, task_ids: tuple[int, ...]) -> None:
    """End tasks as cancelled. A task a run is executing right now is cancelled at its
    next checkpoint or hook return, never under its feet."""
    client = state.client()

    def act(task_id: int) -> str:
        if client.cancel(task_id):
            return f"task {task_id} cancelled"
        return (
            f"task {task_id} is being executed by a run: "
            "it will be cancelled at its next checkpoint"
        )

    _each(list(task_ids), act)


# -- purge ---------------------------------------------------------------------------------


@cli.command(
    epilog="""\b
Examples:
  bgtaskex purge --older-than 7d --yes       # every ended task older than a week
  bgtaskex purge --status failed --queue reports --dry-run""",
)
@filter_options
@click.option(
    "--older-than",
    callback=_duration,
    metavar="DURATION",
    help="Only tasks that ended more than DURATION ago (7d, 12h).",
)
@click.option("--dry-run", is_flag=True, help="Print what would be deleted, delete nothing.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def purge(
    state: State, /, older_than: float | None, dry_run: bool, yes: bool, **filters: Any
) -> None:
    """Delete ended tasks (finished, failed, cancelled) with their actions and events,
    in batches. Without filters: every ended task. Asks first on a terminal."""
    ended_before = datetime.now(UTC) - timedelta(seconds=older_than) if older_than else None
    where = _filter(**filters, ended_before=ended_before)
    store = state.client().store
    count, sample = store.purge_preview(where)
    if count == 0:
        click.echo("nothing to purge")
        return
    if dry_run:
        shown = ", ".join(map(str, sorted(sample))) + (", ..." if count > len(sample) else "")
        click.echo(f"would delete {count:,} ended task(s): {shown}")
        return
    if not yes and sys.stdin.isatty():
        click.confirm(f"Delete {count:,} ended task(s) with their actions and events?", abort=True)
    deleted = store.purge(where)
    click.echo(f"deleted {deleted:,} ended task(s)")


# -- stats / check -------------------------------------------------------------------------


@cli.command(
    epilog="""\b
Examples:
  bgtaskex stats
  bgtaskex stats --json
  bgtaskex stats --prometheus > /var/lib/node_exporter/bgtaskex.prom.$$ &&
    mv /var/lib/node_exporter/bgtaskex.prom.$$ /var/lib/node_exporter/bgtaskex.prom""",
)
@click.option("--json", "as_json", is_flag=True, help="As one JSON object.")
@click.option("--prometheus", is_flag=True, help="In the Prometheus text format.")
@pass_state
def stats(state: State, as_json: bool, prometheus: bool) -> None:
    """Counts per queue, type and status; the oldest waiting task; actions ended in the
    last hour and day; mean execute time."""
    numbers = state.client(readonly=True).store.stats()
    if prometheus:
        from ..metrics import render

        click.echo(render(numbers), nl=False)
    elif as_json:
        from ..views import stats_dict

        _echo_json(stats_dict(numbers))
    else:
        from ..views import render_stats

        _print(*render_stats(numbers))


@cli.command(
    epilog="""\b
Examples:
  bgtaskex check                             # exit 0: OK, exit 1: a problem, one line
  bgtaskex check --stuck-after 10m""",
)
@click.option(
    "--stuck-after",
    metavar="DURATION",
    envvar="BGTASKEX_STUCK_AFTER",
    callback=_remember,
    expose_value=False,
    help="A task not ended and untouched this long is stuck (default: config, 3m).",
)
@pass_state
def check(state: State) -> None:
    """Health check for monitoring (Nagios style): the database answers, its schema is
    current, no task is stuck. One line; exit 0 when all is well, 1 otherwise. Creates
    and migrates nothing: a database without the schema yet is OK, and says so."""
    from ..run.file_lock import describe_holder, lock_state

    settings = state.settings()  # a bad setting is a usage error (exit 2), not a health issue
    problems: list[str] = []
    notes: list[str] = []
    try:
        store = state.client(readonly=True).store
        if store.no_schema:
            notes.append("no schema yet (bgtaskex creates it on first enqueue or run)")
        stuck, ids = store.stuck_tasks(datetime.now(UTC) - timedelta(seconds=settings.stuck_after))
        if stuck:
            shown = ", ".join(map(str, ids)) + (", ..." if stuck > len(ids) else "")
            problems.append(
                f"{stuck} task(s) stuck, untouched for over {settings.stuck_after:g}s (ids {shown})"
            )
        from ..models import TaskFilter

        unimportable = _waiting_on_unimportable(store, state.client(readonly=True).registry)
        if unimportable:
            problems.append(unimportable)
        waiting = store.count_tasks(TaskFilter(statuses=_active()))
        notes.append(f"{waiting} task(s) waiting")
        lock, holder = lock_state(settings.lock_path)
        if lock == "held":
            notes.append(f"a run is working{describe_holder(holder)}")
        elif lock == "stale":
            notes.append(f"stale lock file of a dead run{describe_holder(holder)}, harmless")
    except BgtaskexError as err:
        problems.append(str(err))
    if problems:
        click.echo("BGTASKEX WARNING - " + "; ".join(problems))
        raise click.exceptions.Exit(1)
    click.echo("BGTASKEX OK - " + "; ".join(notes))


def _waiting_on_unimportable(store: Store, registry: Registry) -> str | None:
    """The `check` problem of tasks that wait for a module a run cannot import (not
    declared, or not on the path), or None. Nothing is imported here."""
    from ..exceptions import InvalidRef
    from ..registry import parse_ref
    from ..run.preflight import HOW_TO_DECLARE, findable

    why: dict[str, str | None] = {}  # module: why it cannot be imported, None if it can
    stuck: list[str] = []
    for ref in store.waiting_refs():
        try:
            module = parse_ref(ref)[0]
        except InvalidRef:
            continue  # not a module's fault: the run fails such an action
        if module not in why:
            reasons = [] if registry.allowed(module) else ["not declared"]
            reasons += [] if findable(module) else ["not found"]
            why[module] = ", ".join(reasons) or None
        if why[module] is not None:
            stuck.append(ref)
    if not stuck:
        return None
    count = store.count_tasks_waiting_on(stuck)
    modules = ", ".join(f"{m} ({reason})" for m, reason in sorted(why.items()) if reason)
    return (
        f"{count} task(s) wait for a module that cannot be imported: {modules} "
        f"(declare it with {HOW_TO_DECLARE})"
    )


def _active() -> frozenset[str]:
    from ..models import ACTIVE_STATUSES

    return frozenset(s.value for s in ACTIVE_STATUSES)


# -- processes / daemon --------------------------------------------------------------------


@cli.command(
    epilog="""\b
Examples:
  bgtaskex processes
  bgtaskex --config /etc/bgtaskex/bgtaskex.toml processes --json""",
)
@click.option("--json", "as_json", is_flag=True, help="As a JSON array.")
@pass_state
def processes(state: State, as_json: bool) -> None:
    """The scheduled processes of the config, with their next occurrence."""
    from ..views import process_dict, render_processes

    now = datetime.now().astimezone()
    rows = [process_dict(p, p.next_occurrence(now)) for p in state.settings().scheduled]
    if as_json:
        _echo_json(rows)
    else:
        _print(render_processes(rows))


@cli.command(
    epilog="""\b
Examples:
  bgtaskex daemon
  bgtaskex --config /etc/bgtaskex/bgtaskex.toml --log-format json daemon
  systemctl start bgtaskex            # see systemd/bgtaskex.service""",
)
@pass_state
def daemon(state: State) -> None:
    """Run the scheduled processes until SIGTERM or Ctrl-C (then stop gracefully).

    SIGHUP reloads the config between runs. Under systemd (Type=notify) it reports
    readiness, status and watchdog pings.
    """
    from ..client import Client, connect
    from ..daemon import Daemon

    def load() -> tuple[Any, Client]:
        from ..run.preflight import check_runnable, import_declared

        state.reload()
        settings = state.settings()
        check_runnable(settings)  # at start: exit 2; at a reload: the old config stays
        import_declared(settings)
        return settings, connect(settings=settings, trust_refs=False)

    code = Daemon(load).serve()
    if code:
        raise click.exceptions.Exit(code)
