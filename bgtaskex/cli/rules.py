"""`bgtaskex rules`: list, preview and run the config's retention rules.

Added to the `bgtaskex` group by cli/main.py; each command parses, calls one function of
`bgtaskex.builtin.retention` and prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click

from ..exceptions import UsageError
from ..rules import RETENTION_PROCESS, RETENTION_QUEUE
from .common import State, echo_json, pass_state, print_rich


@click.group()
def rules() -> None:
    """Retention rules: delete old rows of a table in resumable chunks.

    Rules are the config's [[retention_rules]] tables; the 'retention' process queues
    each one once per window (by default Sundays, 01:00-23:30).
    """


@rules.command(
    "list",
    epilog="""\b
Examples:
  bgtaskex rules list
  bgtaskex rules list --json | jq '.[] | {name, last_task}'""",
)
@click.option("--json", "as_json", is_flag=True, help="As a JSON array.")
@pass_state
def rules_list(state: State, as_json: bool) -> None:
    """Each rule, what it deletes, and its last walk (status, rows deleted, when)."""
    from ..builtin.retention import rule_statuses
    from ..render_ops import render_rules
    from ..urls import mask_secrets
    from ..views import rule_dict

    client = state.client(readonly=True)
    rows = [
        rule_dict(status, mask_secrets(status.rule.database or client.settings.url))
        for status in rule_statuses(client)
    ]
    if as_json:
        echo_json(rows)
    elif not rows:
        click.echo("no retention rules configured (add [[retention_rules]] to the config)")
    else:
        print_rich(render_rules(rows))


@rules.command(
    "preview",
    epilog="""\b
Examples:
  bgtaskex rules preview old_tickets
  bgtaskex rules preview old_tickets --sample 50 --json""",
)
@click.argument("name")
@click.option(
    "--sample",
    type=click.IntRange(min=0, max=10_000),
    default=10,
    show_default=True,
    help="How many of the keys that would go to show.",
)
@click.option("--json", "as_json", is_flag=True, help="As one JSON object.")
@pass_state
def rules_preview(state: State, name: str, sample: int, as_json: bool) -> None:
    """How many rows rule NAME would delete now, and a sample of their keys.

    Checks the rule against its database (table, key, columns, condition); deletes
    nothing.
    """
    from ..builtin.retention import preview
    from ..urls import mask_secrets
    from ..views import preview_dict

    client = state.client()
    rule = client.settings.retention_rule(name)
    found = preview(client, name, sample)
    row = preview_dict(found, mask_secrets(rule.database or client.settings.url), rule.describe())
    row["sql"] = [{"statement": what, "sql": sql} for what, sql in found.sql]
    row["values"] = {key: _shown(value) for key, value in found.values}
    if as_json:
        echo_json(row)
        return
    click.echo(f"rule {name}: {row['deletes']}")
    click.echo(f"  database: {row['database']}")
    if found.count == 0:
        click.echo("  would delete no row now")
    else:
        click.echo(
            f"  would delete {found.count:,} row(s) now, "
            f"{found.key} from {found.low} to {found.high}"
        )
    if found.sample:
        more = ", ..." if found.count > len(found.sample) else ""
        keys = ", ".join(str(k) for k in found.sample)
        click.echo(f"  first {len(found.sample)} {found.key}: {keys}{more}")
    if rule.also_delete and found.count:
        children = ", ".join(f"{c.table}.{c.column}" for c in rule.also_delete)
        click.echo(f"  and their rows in {children}")
    _print_sql(found.sql, found.values)


def _print_sql(sql: Sequence[tuple[str, str]], values: Sequence[tuple[str, Any]]) -> None:
    """The deletes of a chunk, exactly as compiled for the walk (--json: every statement)."""
    click.echo("  each chunk deletes with:")
    for what, statement in sql:
        if what == "delete":
            click.echo("\n".join("    " + line for line in statement.splitlines()))
    bound = "".join(f"{key} = {_shown(value)!r}, " for key, value in values)
    click.echo(f"  with {bound}and the chunk's key range in bgtaskex_after, bgtaskex_high")


def _shown(value: Any) -> Any:
    return value.isoformat(" ") if isinstance(value, datetime) else value


@rules.command(
    "run",
    epilog="""\b
Examples:
  bgtaskex rules run old_tickets
  bgtaskex rules run --all
  bgtaskex rules run old_tickets --queue default   # run by plain run-once, now""",
)
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--all", "all_", is_flag=True, help="Every enabled rule.")
@click.option(
    "--queue",
    default=None,
    metavar="QUEUE",
    help=f"Queue the tasks here instead of '{RETENTION_QUEUE}' (the retention process's).",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only the task ids.")
@pass_state
def rules_run(
    state: State, names: tuple[str, ...], all_: bool, queue: str | None, quiet: bool
) -> None:
    """Queue a walk of each rule NAME (one task per rule), unless one is already queued.

    The rule is checked against its database first. The task runs when its queue's
    process does: by default the 'retention' process, inside its window.
    """
    from ..builtin.retention import check_rule, queue_rule

    if all_ == bool(names):
        raise UsageError("give rule names or --all (see 'bgtaskex rules list')")
    client = state.client()
    settings = client.settings
    if all_:
        names = tuple(r.name for r in settings.retention_rules if r.enabled)
        if not names:
            click.echo("no enabled retention rule")
            return
    for name in names:  # every rule checked against its database before any is queued
        check_rule(client, name)
    target_queue = queue or (settings.process(RETENTION_PROCESS).queues or (RETENTION_QUEUE,))[0]
    for name in names:
        task_id, new = queue_rule(client, name, queue=target_queue, check=False)
        if quiet:
            click.echo(task_id)
        elif new:
            note = "" if settings.retention_rule(name).enabled else " (the rule is disabled)"
            click.echo(f"rule {name}: queued task {task_id} on queue {target_queue}{note}")
        else:
            click.echo(
                f"rule {name}: task {task_id} is already queued or running; not queued again"
            )
