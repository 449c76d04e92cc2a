"""The monitoring commands: stats (counts, also for Prometheus) and check (Nagios style).

Each parses, calls the `Client` and prints; heavy modules are imported inside.
"""

from __future__ import annotations

import click

from ..exceptions import BgtaskexError, Unhealthy
from .common import State, echo_json, pass_state, print_rich, remember


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
        from ..render import render_stats

        print_rich(*render_stats(numbers))


@click.command(
    epilog="""\b
Examples:
  bgtaskex check                             # exit 0: OK, exit 1: a problem, one line
  bgtaskex check --stuck-after 10m""",
)
@click.option(
    "--stuck-after",
    metavar="DURATION",
    envvar="BGTASKEX_STUCK_AFTER",
    callback=remember,
    expose_value=False,
    help="A task not ended and untouched this long is stuck (default: config, 3m).",
)
@pass_state
def check(state: State) -> None:
    """Health check for monitoring (Nagios style): the database answers, its schema is
    current, no task is stuck. One line; exit 0 when all is well, 1 otherwise. Creates
    and migrates nothing: a database without the schema yet is OK, and says so."""
    state.settings()  # a bad setting is a usage error (exit 2), not a health issue
    try:
        health = state.client(readonly=True).health()
        problems, notes = health.problems(), health.notes()
    except BgtaskexError as err:  # the database cannot be opened, its schema is outdated
        problems, notes = [str(err)], []
    if problems:
        line = "BGTASKEX WARNING - " + "; ".join(problems)
        click.echo(line)
        raise Unhealthy(line)
    click.echo("BGTASKEX OK - " + "; ".join(notes))
