"""The `bgtaskex` command: the group, its commands, and the one place errors become
exit codes.

Each command module (tasks, run, db, ops, queues, rules, web) defines its commands on top of
cli/common.py and knows nothing of the group; this module adds them with `add_command`.
Heavy modules (SQLAlchemy, rich) are imported inside the commands that need them, so
`bgtaskex run-once` on an idle embedded database starts in a few tens of milliseconds.
"""

from __future__ import annotations

import sys

import click

from ..exceptions import UsageError
from . import db, enqueue, ops, queues, rules, run, tasks, web
from .common import State, global_options
from .exits import error_line, exit_code, interrupted


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@global_options
@click.version_option(package_name="bgtaskex", prog_name="bgtaskex")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Long, resumable background work in time-boxed runs."""
    state = ctx.ensure_object(State)
    ctx.call_on_close(state.close)


for command in (
    enqueue.enqueue,
    tasks.list_,
    tasks.show,
    tasks.retry,
    tasks.cancel,
    tasks.purge,
    run.run_once,
    run.processes,
    run.daemon,
    run.demo,
    ops.stats,
    ops.check,
    queues.queues,
    queues.pause,
    queues.resume,
    ops.runs,
    db.db,
    rules.rules,
    web.web,
):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every error is one line on stderr and a documented exit code."""
    code = _main(argv)
    sys.exit(code)


def _echo_err(line: str) -> None:
    click.echo(line, err=True)


def _main(argv: list[str] | None) -> int:
    """Run the CLI in this process; the exit code, each from the exception that ends
    the command (0 when none does)."""
    try:
        result = cli.main(args=argv, prog_name="bgtaskex", standalone_mode=False)
        return result if isinstance(result, int) else 0  # --help, --version
    except click.exceptions.Abort:  # Ctrl-C: click said its blank line already
        return interrupted(_echo_err)
    except click.exceptions.NoArgsIsHelpError as err:
        click.echo(err.format_message())
        return UsageError.exit_code
    except click.UsageError as err:
        hint = f" (see '{err.ctx.command_path} --help')" if err.ctx else ""
        error_line(err.format_message() + hint, _echo_err)
        return UsageError.exit_code
    except click.ClickException as err:
        error_line(err.format_message(), _echo_err)
        return err.exit_code
    except (Exception, KeyboardInterrupt) as err:
        return exit_code(err, click.echo, _echo_err)
