"""The `bgtaskex` command: parse, call one library function, map errors to exit codes.

Heavy modules (SQLAlchemy, rich) are imported inside the commands that need them, so
`bgtaskex run-once` on an idle embedded database starts in a few tens of milliseconds.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..config import Settings, load_settings
from ..exceptions import BgtaskexError, LockBusy, OutsideWindow, TasksLeftWaiting, UsageError
from ..urls import mask_secrets

if TYPE_CHECKING:
    from ..client import Client

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_DATABASE, EXIT_INTERRUPTED = (
    0,
    1,
    2,
    3,
    4,
    130,
)


class _MaskingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


class _MaskingJsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers (python-json-logger), secrets masked
    field by field before encoding, so that the line stays valid JSON."""

    def __init__(self) -> None:
        from pythonjsonlogger.json import JsonFormatter

        class Masked(JsonFormatter):
            def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
                return {
                    k: mask_secrets(v) if isinstance(v, str) else v for k, v in log_data.items()
                }

        super().__init__()
        self.json = Masked(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )

    def format(self, record: logging.LogRecord) -> str:
        return self.json.format(record)


def _setup_logging(level: str, fmt: str = "TEXT") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "JSON":
        handler.setFormatter(_MaskingJsonFormatter())
    else:
        # journald and cron add their own time stamp; a terminal user still wants one.
        handler.setFormatter(_MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("bgtaskex")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # APScheduler says "skipped: maximum number of running instances reached" for every
    # tick coalesced behind a long run: expected here, so only its errors are shown.
    scheduler = logging.getLogger("apscheduler")
    scheduler.handlers[:] = [handler]
    scheduler.setLevel(max(logging.ERROR, logging.getLevelName(level)))
    scheduler.propagate = False
    # Any other library's warning (SQLAlchemy's pool, Alembic) goes to logging's handler of
    # last resort when nothing else takes it: masked too.
    last = logging.StreamHandler(sys.stderr)
    last.setLevel(logging.WARNING)
    last.setFormatter(_MaskingFormatter("%(message)s"))
    logging.lastResort = last


@dataclass
class State:
    """What the global options gave; settings are loaded on first use."""

    config_file: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    _settings: Settings | None = None
    _client: Client | None = None

    def settings(self, **more: Any) -> Settings:
        if more:
            self.overrides.update({k: v for k, v in more.items() if v is not None})
            self._settings = None
        if self._settings is None:
            self._settings = load_settings(self.config_file, self.overrides, sources=self.sources)
            _setup_logging(self._settings.log_level, self._settings.log_format)
        return self._settings

    def client(self, *, readonly: bool = False) -> Client:
        """The client of the settings; `readonly` for the commands that only read: they
        create and migrate nothing, and see a database without the schema as empty."""
        if self._client is None:
            from ..client import connect

            self._client = connect(settings=self.settings(), trust_refs=False, readonly=readonly)
        return self._client

    def reload(self) -> None:
        """Forget the loaded settings (the daemon's SIGHUP): the next use reads them anew."""
        self._settings = None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Record an option's value, and whether it came from the command line or the
    environment, for the settings and their error messages."""
    state = ctx.ensure_object(State)
    if value is None or value == ():
        return value
    assert param.name is not None
    source = ctx.get_parameter_source(param.name)
    if param.name == "config":
        state.config_file = value
        return value
    key = "imports" if param.name == "import_" else param.name
    state.overrides[key] = list(value) if isinstance(value, tuple) else value
    if source is click.core.ParameterSource.ENVIRONMENT and param.envvar:
        state.sources[key] = str(param.envvar)
    return value


def global_options(func: F) -> F:
    """The options every command shares, each with its environment variable."""
    options = [
        click.option(
            "--config",
            metavar="FILE",
            envvar="BGTASKEX_CONFIG",
            callback=_remember,
            expose_value=False,
            help="TOML config file (default: ~/.config/bgtaskex/bgtaskex.toml if present).",
        ),
        click.option(
            "--database-url",
            metavar="URL",
            envvar="BGTASKEX_DATABASE_URL",
            callback=_remember,
            expose_value=False,
            help="SQLAlchemy URL (default: SQLite file in ~/.local/share/bgtaskex).",
        ),
        click.option(
            "--import",
            "import_",
            metavar="MODULE",
            multiple=True,
            callback=_remember,
            expose_value=False,
            help="Module whose Action classes may be run (repeatable; adds to config/env).",
        ),
        click.option(
            "--log-format",
            type=click.Choice(["text", "json"], case_sensitive=False),
            envvar="BGTASKEX_LOG_FORMAT",
            callback=_remember,
            expose_value=False,
            help="Log lines as plain text (default) or one JSON object each.",
        ),
        click.option(
            "--log-level",
            type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
            envvar="BGTASKEX_LOG_LEVEL",
            callback=_remember,
            expose_value=False,
            help="Logging level on stderr (default WARNING).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@global_options
@click.version_option(package_name="bgtaskex", prog_name="bgtaskex")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Long, resumable background work in time-boxed runs."""
    state = ctx.ensure_object(State)
    ctx.call_on_close(state.close)


pass_state = click.make_pass_decorator(State, ensure=True)


def _echo_json(value: Any) -> None:
    from ..views import dumps

    click.echo(dumps(value))


def _print(*renderables: Any) -> None:
    from rich.console import Console

    # Piped output keeps whole lines for grep; a terminal gets its own width.
    console = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 200)
    for renderable in renderables:
        console.print(renderable)


# -- enqueue -------------------------------------------------------------------------


def _ref_arg(text: str) -> Any:
    """`module:Class` or `module:Class={"json": "params"}`."""
    ref, sep, params = text.partition("=")
    if not sep:
        return ref
    try:
        return (ref, json.loads(params))
    except json.JSONDecodeError as err:
        raise UsageError(f"params of {ref!r} are not valid JSON: {err}") from None
    except RecursionError:
        raise UsageError(f"params of {ref!r} are nested too deeply") from None


def _read_task_file(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()  # noqa: SIM115
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        where = "standard input" if path == "-" else path
        why = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise UsageError(f"{where} is not valid JSON: {why}") from None
    if not isinstance(data, dict):
        raise UsageError("a task file must hold a JSON object with 'name' and 'actions'")
    unknown = set(data) - {"name", "type", "queue", "actions"}
    if unknown:
        raise UsageError(f"unknown key {sorted(unknown)[0]!r} in task file")
    if "name" not in data or "actions" not in data:
        raise UsageError("a task file needs 'name' and 'actions'")
    if not isinstance(data["actions"], list):
        raise UsageError('\'actions\' must be a list of {"ref": ..., "params": {...}}')
    return data


@cli.command(
    epilog="""\b
Examples:
  bgtaskex --import myapp.jobs enqueue reindex myapp.jobs:Reindex myapp.jobs:Notify
  bgtaskex --import myapp.jobs enqueue reindex 'myapp.jobs:Reindex={"batch": 500}' --type cron
  bgtaskex --import myapp.jobs enqueue --file task.json
  echo '{"name": "x", "actions": [{"ref": "myapp.jobs:Reindex"}]}' | bgtaskex enqueue --file -""",
)
@click.argument("name", required=False)
@click.argument("refs", nargs=-1, metavar="[REF[=JSON]]...")
@click.option("--file", "file_", metavar="FILE", help="Read the task as JSON ('-' = stdin).")
@click.option("--type", "type_", type=click.Choice(["cron", "interactive"]), default=None)
@click.option("--queue", default=None, help="Queue name (default 'default').")
@click.option("--json", "as_json", is_flag=True, help="Print the new task as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the new task's id.")
@pass_state
def enqueue(
    state: State,
    name: str | None,
    refs: tuple[str, ...],
    file_: str | None,
    type_: str | None,
    queue: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Queue a task NAME made of actions REF (module:Class), run in order.

    Params go after '=' as a JSON object: myapp.jobs:Reindex='{"batch": 500}'.
    """
    if file_ is not None:
        if name or refs:
            raise UsageError("give either --file or NAME REF..., not both")
        data = _read_task_file(file_)
        name, actions = data["name"], data["actions"]
        type_ = type_ or data.get("type", "cron")
        queue = queue or data.get("queue", "default")
    else:
        if not name or not refs:
            raise UsageError("enqueue needs NAME and at least one REF, or --file FILE")
        actions = [_ref_arg(r) for r in refs]
    client = state.client()
    task_id = client.enqueue(
        name,
        actions,
        type=type_ or "cron",
        queue=queue or "default",
    )
    if quiet:
        click.echo(task_id)
    elif as_json:
        from ..views import task_dict

        _echo_json(task_dict(client.get(task_id)))
    else:
        task = client.get(task_id)
        click.echo(
            f"queued task {task.id}: {task.name} ({len(task.actions)} action(s), "
            f"type {task.type}, queue {task.queue})"
        )


# -- run-once ------------------------------------------------------------------------


@cli.command(
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
    callback=_remember,
    expose_value=False,
    help="Budget of the whole run (default 30; also 45s, 2m).",
)
@click.option(
    "--lock-file",
    metavar="FILE",
    envvar="BGTASKEX_LOCK_FILE",
    callback=_remember,
    expose_value=False,
    help="Lock file (default: next to the SQLite database).",
)
@click.option(
    "--wait",
    metavar="SECONDS",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Wait this long for the lock instead of giving up at once.",
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
    settings = state.settings()
    process = settings.process(process_name) if process_name else None
    began = time.monotonic()
    from ..run.preflight import check_runnable
    from ..store.probe import sqlite_idle

    check_runnable(settings)  # a deploy slip is exit 2 even when nothing is due

    # A process with a callable always runs; one with a window says when it is outside.
    planned = process is not None and (process.callable or process.window) is not None
    queues = process.queues if process else None
    excluded = process.exclude_queues if process else settings.claimed_queues
    if not planned and sqlite_idle(settings.url, settings.keep_ended, queues, excluded):
        elapsed = time.monotonic() - began
        if as_json:
            click.echo(json.dumps({"run_id": None, "idle": True, "elapsed": elapsed}))
        elif not quiet:
            click.echo(f"nothing due ({elapsed:.2f}s)")
        return
    import signal

    from ..run.runner import StopRequest, stop_on_signals

    live = sys.stdout.isatty() if progress is None else progress
    observer = None
    stop = StopRequest()
    try:
        if not wait and settings.concurrency.lock == "file":
            from ..run.file_lock import raise_if_held

            raise_if_held(settings.lock_path)  # before SQLAlchemy is even imported
        from ..run.preflight import import_declared

        import_declared(settings)
        client = state.client()
        if live and not as_json:
            from .live import LiveProgress

            observer = LiveProgress()
        with stop_on_signals(stop, (signal.SIGTERM, signal.SIGINT)):
            summary = client.run_once(wait=wait, process=process, stop=stop, observer=observer)
    except LockBusy as busy:
        if not as_json:
            raise
        click.echo(json.dumps({"run_id": None, "locked": True, "holder": busy.holder}))
        return
    except OutsideWindow as outside:
        if not as_json:
            raise
        click.echo(json.dumps({"run_id": None, "outside_window": True, "message": str(outside)}))
        return
    finally:
        if observer is not None:
            observer.close()
    if as_json:
        from ..views import summary_dict

        click.echo(json.dumps(summary_dict(summary)))
    elif not quiet:
        click.echo(summary.line())
    if stop.signum == signal.SIGINT:
        raise KeyboardInterrupt  # the run stopped cleanly; still, the user interrupted it
    if summary.left_waiting:  # exit 6, so that cron mails the deploy slip
        raise TasksLeftWaiting(summary.left_waiting, summary.missing_modules)


# -- db ------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """The database schema."""


@db.command(
    "upgrade",
    epilog="""\b
Examples:
  bgtaskex db upgrade
  bgtaskex --database-url postgresql+psycopg://bgtaskex@db/bgtaskex db upgrade""",
)
@pass_state
def db_upgrade(state: State) -> None:
    """Create or upgrade the schema to this release (also done on first use)."""
    from ..store.core import Store
    from ..store.probe import VERSION_TABLE

    settings = state.settings()
    store = Store(settings.url, create_dirs=settings.uses_default_url)
    try:
        before, legacy = store.schema_state()
        store.upgrade()
        after = store.schema_revision()
        moved = f"; its revision moved from alembic_version to {VERSION_TABLE}" if legacy else ""
        click.echo(
            f"{store.display_url}: schema at {after}"
            + (" (already current" if before == after else f" (was {before or 'empty'}")
            + f"{moved})"
        )
    finally:
        store.close()


# -- demo ----------------------------------------------------------------------------


@cli.command(
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


# -- entry point ---------------------------------------------------------------------


from . import ops, rules  # noqa: E402, F401 - register list, show, rules, ...


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every error is one line on stderr and a documented exit code."""
    code = _main(argv)
    sys.exit(code)


def _error(message: str) -> None:
    # One line, whatever the message quotes (a file name or an argument with a newline).
    line = " ".join(message.splitlines())
    click.echo(f"bgtaskex: error: {mask_secrets(line)}", err=True)


def _main(argv: list[str] | None) -> int:
    try:
        result = cli.main(args=argv, prog_name="bgtaskex", standalone_mode=False)
        return result if isinstance(result, int) else EXIT_OK
    except (LockBusy, OutsideWindow) as err:
        click.echo(str(err))
        return EXIT_OK
    except TasksLeftWaiting as err:
        # The run logged it already: one line per module, naming how to declare it.
        return err.exit_code
    except BgtaskexError as err:
        _error(str(err))
        return err.exit_code
    except click.exceptions.Abort:
        click.echo("bgtaskex: interrupted", err=True)
        return EXIT_INTERRUPTED
    except click.exceptions.NoArgsIsHelpError as err:
        click.echo(err.format_message())
        return EXIT_USAGE
    except click.UsageError as err:
        hint = f" (see '{err.ctx.command_path} --help')" if err.ctx else ""
        _error(err.format_message() + hint)
        return EXIT_USAGE
    except click.ClickException as err:
        _error(err.format_message())
        return err.exit_code
    except KeyboardInterrupt:
        click.echo("bgtaskex: interrupted", err=True)
        return EXIT_INTERRUPTED
    except Exception as err:  # a bug: still one line, the traceback only in debug logs
        logging.getLogger("bgtaskex").debug("internal error", exc_info=True)
        _error(f"internal error: {type(err).__name__}: {err} (rerun with --log-level DEBUG)")
        return EXIT_INTERNAL
