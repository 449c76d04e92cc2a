"""The commands that run tasks: run-once (what cron calls), daemon, demo; and processes,
the scheduled processes the daemon runs.

`run-once` on an idle embedded database answers before SQLAlchemy, rich or the models are
imported (bgtaskex.startup); everything heavy is imported past that point. What it does is
in cli/once.py, which `bgtaskex run-once` reaches without click (cli/fast.py).
"""

from __future__ import annotations

from typing import Any

import click

from ..exceptions import Interrupted
from .common import State, duration, echo_json, pass_state, print_rich, remember
from .once import run_once_command


@click.command(
    "run-once",
    epilog="""\b
Examples:
  bgtaskex run-once                          # what crontab calls every minute
  bgtaskex run-once --max-execution-time 2m --wait 10
  bgtaskex run-once --json | jq .finished""",
)
@click.option(
    "--max-execution-time",
    metavar="SECONDS",
    envvar="BGTASKEX_MAX_EXECUTION_TIME",
    callback=remember,
    expose_value=False,
    help="Budget of the whole run (default 30; also 45s, 2m).",
)
@click.option(
    "--kill-after",
    metavar="SECONDS",
    envvar="BGTASKEX_KILL_AFTER",
    callback=remember,
    expose_value=False,
    help="End the run (exit 7) when a hook runs this long past the deadline (default 60; never).",
)
@click.option(
    "--lock-file",
    metavar="FILE",
    envvar="BGTASKEX_LOCK_FILE",
    callback=remember,
    expose_value=False,
    help="Lock file (default: next to the SQLite database).",
)
@click.option(
    "--wait",
    metavar="DURATION",
    callback=duration,
    default="0",
    help="Wait this long for the lock (10, 10s, 1m) instead of giving up at once.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Live progress bars (default: on when stdout is a terminal).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the run report as one JSON object.")
@click.option(
    "--process",
    "process_name",
    metavar="NAME",
    help="Run as this scheduled process: its queues, budget, window and callable.",
)
@click.option("-q", "--quiet", is_flag=True, help="No summary line.")
@pass_state
def run_once(
    state: State,
    process_name: str | None,
    wait: float,
    progress: bool | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Process due tasks for at most --max-execution-time seconds (what cron calls).

    If another run holds the lock, say so in one line and exit 0. SIGTERM or Ctrl-C lets
    the current hook finish and starts nothing new; a second one stops at once. Tasks
    left waiting because their module cannot be imported: exit 6.
    """
    run_once_command(
        state, process_name, wait, progress=progress, as_json=as_json, quiet=quiet, echo=click.echo
    )


@click.command(
    epilog="""\b
Examples:
  bgtaskex processes
  bgtaskex --config /etc/bgtaskex/bgtaskex.toml processes --json""",
)
@click.option("--json", "as_json", is_flag=True, help="As a JSON array.")
@pass_state
def processes(state: State, as_json: bool) -> None:
    """The scheduled processes of the config, with their next occurrence."""
    from ..render_ops import render_processes
    from ..views import process_dict
    from ..walltime import local_now

    now = local_now()
    rows = [process_dict(p, p.next_occurrence(now)) for p in state.settings().scheduled]
    if as_json:
        echo_json(rows)
    else:
        print_rich(render_processes(rows))


@click.command(
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
        from ..startup import check_runnable, import_declared

        state.reload()
        settings = state.settings()
        check_runnable(settings)  # at start: exit 2; at a reload: the old config stays
        import_declared(settings)
        return settings, connect(settings=settings, trust_refs=False)

    # 0 when it stops on SIGTERM, 130 on Ctrl-C; a run stuck past stop_timeout exits itself
    daemon = Daemon(load)
    if daemon.serve() == Interrupted.exit_code:
        raise Interrupted  # the daemon stopped cleanly; still, the user interrupted it
    if daemon.failure is not None:
        raise daemon.failure  # it stopped itself (its SQLite file deleted): exit 4


@click.command(
    epilog="""\b
Examples:
  bgtaskex demo
  bgtaskex demo --budget 0.3 --max-runs 100""",
)
@click.option(
    "--budget",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="max_execution_time of each run, in seconds.",
)
@click.option("--max-runs", type=click.IntRange(min=1), default=60, show_default=True)
@pass_state
def demo(state: State, budget: float, max_runs: int) -> None:
    """Queue an example task of chunked actions and run it to the end in short runs."""
    from ..demo import run_demo

    run_demo(state.client(), budget=budget, max_runs=max_runs, echo=click.echo)
