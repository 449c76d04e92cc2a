"""The monitoring commands: stats (counts, also for Prometheus), check (Nagios style)
and runs (the record of the latest runs).

Each parses, calls the `Client` and prints; heavy modules are imported inside.
"""

from __future__ import annotations

from typing import Any

import click

from ..exceptions import BgtaskexError, Unhealthy
from .common import State, echo_json, pass_state, positive_duration, print_rich, remember


@click.command(
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
    numbers = state.client(readonly=True).stats()
    if prometheus:
        from ..metrics import render

        click.echo(render(numbers), nl=False)
    elif as_json:
        from ..views import stats_dict

        echo_json(stats_dict(numbers))
    else:
        from ..render_ops import render_stats

        print_rich(*render_stats(numbers))


@click.command(
    epilog="""\b
Examples:
  bgtaskex check                             # exit 0: OK, exit 1: a problem, one line
  bgtaskex check --stuck-after 10m
  bgtaskex check --failed-within 1h --json""",
)
@click.option(
    "--stuck-after",
    metavar="DURATION",
    envvar="BGTASKEX_STUCK_AFTER",
    callback=remember,
    expose_value=False,
    help="A task not ended and untouched this long is stuck (default: config, 3m).",
)
@click.option(
    "--stale-after",
    metavar="DURATION",
    envvar="BGTASKEX_STALE_AFTER",
    callback=remember,
    expose_value=False,
    help="Slack past a process's gap and budget before it is late; plain run-once "
    "runs: none ended ok this long (default: config, 5m; never).",
)
@click.option(
    "--failed-within",
    metavar="DURATION",
    callback=positive_duration,
    help="Warn about tasks that failed within this long (default: off).",
)
@click.option("--json", "as_json", is_flag=True, help="As one JSON object (same exit code).")
@pass_state
def check(state: State, failed_within: float | None, as_json: bool) -> None:
    """Health check for monitoring (Nagios style): the database answers, its schema is
    current, no task is stuck, each process's runs end ok in time (see --stale-after),
    the latest run of each process neither failed, ended on a storage error, died nor
    was refused at start. One line; exit 0 when all
    is well, 1 otherwise. Creates and migrates nothing: a database without the schema
    yet is OK, and says so."""
    state.settings()  # a bad setting is a usage error (exit 2), not a health issue
    health = None
    try:
        health = state.client(readonly=True).health(failed_within=failed_within)
        problems, notes = health.problems(), health.notes()
    except BgtaskexError as err:  # the database cannot be opened, its schema is outdated
        problems, notes = [str(err)], []
    line = "BGTASKEX WARNING - " + "; ".join(problems) if problems else ""
    if as_json:
        from ..views import health_dict

        report: dict[str, Any] = {"status": "warning", "problems": problems, "notes": notes}
        if health is not None:
            report = health_dict(health, problems, notes)
        echo_json(report)
    elif problems:
        click.echo(line)
    else:
        click.echo("BGTASKEX OK - " + "; ".join(notes))
    if problems:
        raise Unhealthy(line)


@click.command(
    epilog="""\b
Examples:
  bgtaskex runs                              # the latest 20 runs, newest first
  bgtaskex runs --failed --limit 5           # those that did not end ok (died too)
  bgtaskex runs --process nightly --json""",
)
@click.option("--limit", type=click.IntRange(min=1, max=10**6), default=20, show_default=True)
@click.option("--process", "process_name", metavar="NAME", help="Only this process's runs.")
@click.option("--failed", is_flag=True, help="Only runs that did not end ok (died included).")
@click.option("--json", "as_json", is_flag=True, help="As a JSON list, newest first.")
@pass_state
def runs(state: State, limit: int, process_name: str | None, failed: bool, as_json: bool) -> None:
    """The record of the latest runs: when each started, how long it took, how it
    ended (ok, failed, storage, died, running, refused) and what it did. Every run that took its
    lock is recorded; one that found the lock busy is not."""
    found = state.client(readonly=True).runs(limit=limit, process=process_name, failed=failed)
    if as_json:
        from ..views import run_dict

        echo_json([run_dict(run) for run in found])
    elif not found:
        click.echo("no run recorded" + (" that did not end ok" if failed else ""))
    else:
        from ..render_ops import render_runs

        print_rich(render_runs(found))
