"""The exceptions of bgtaskex: one root, one class per thing a caller may handle.

Each class carries the exit code that the CLI maps it to, so the table in the README
and the code cannot drift apart.
"""

from __future__ import annotations

from .urls import mask_secrets


class BgtaskexError(Exception):
    """Root of every error bgtaskex raises on purpose."""

    exit_code = 1

    def __str__(self) -> str:
        # The text of an error leaves the process (output, logs, history, systemd's
        # STATUS=), whatever it quotes (a driver's message, a URL): no password in it.
        return mask_secrets(super().__str__())


class UsageError(BgtaskexError):
    """Bad input from the user: a malformed argument, file or JSON document."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration value (file, environment or option) is invalid."""


class InvalidRef(UsageError):
    """An action ref that does not name a loadable subclass of `bgtaskex.Action`."""


class ModuleUnavailable(InvalidRef):
    """A ref whose module is not declared or cannot be imported here: a deploy slip
    (PYTHONPATH, a missing `--import`) rather than a bad task, so the runner leaves the
    task waiting instead of failing it."""

    def __init__(self, message: str, module: str) -> None:
        super().__init__(message)
        self.module = module


class TaskNotFound(BgtaskexError):
    """No task has the requested id."""

    exit_code = 3

    def __init__(self, task_id: int) -> None:
        super().__init__(f"no task with id {task_id}")
        self.task_id = task_id


class InvalidState(BgtaskexError):
    """The operation does not apply to the task in its current status."""

    exit_code = 5


class StorageError(BgtaskexError):
    """The database refused or failed an operation (driver errors are translated to this)."""

    exit_code = 4


class Deadlock(StorageError):
    """The database chose this transaction as the victim of a deadlock (or a lock wait
    timeout) and rolled it back: nothing was written, and trying again is safe."""


class DatabaseUnavailable(StorageError):
    """The database cannot be reached or opened."""


class SchemaOutdated(StorageError):
    """The database schema is older than this release and automatic upgrade is off."""


class LockBusy(BgtaskexError):
    """Another run holds the run lock; `holder` is what its lock file says (pid, host,
    since), when it says it."""

    exit_code = 0

    def __init__(self, message: str, holder: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class OutsideWindow(BgtaskexError):
    """A process was triggered outside its weekly window: nothing to do, not an error."""

    exit_code = 0


class TaskInterrupted(BgtaskexError):
    """A run's write found its task ended or asked to cancel by someone else."""

    def __init__(self, task_id: int) -> None:
        super().__init__(f"task {task_id} was ended or asked to cancel by someone else")
        self.task_id = task_id


class ClaimLost(BgtaskexError):
    """A worker's write carried a claim token older than the task's: another worker
    claimed the task since (this one's lease had expired). Nothing was written."""

    def __init__(self, task_id: int, token: int) -> None:
        super().__init__(
            f"task {task_id}: lost the claim (token {token}): another worker took it over"
        )
        self.task_id = task_id
        self.token = token


class ParamsTooLarge(UsageError):
    """An action's params encode to more JSON than `max_params_bytes` allows."""

    def __init__(self, ref: str, size: int, limit: int) -> None:
        super().__init__(
            f"params of {ref!r} are {size:,} bytes of JSON, over max_params_bytes ({limit:,})"
        )
        self.ref = ref
        self.size = size
        self.limit = limit


class TasksLeftWaiting(BgtaskexError):
    """A run left tasks as they were because their action's module cannot be imported
    (undeclared, or missing from the path): a deploy slip to fix, not a task failure."""

    exit_code = 6

    def __init__(self, count: int, modules: tuple[str, ...]) -> None:
        names = ", ".join(modules) or "?"
        super().__init__(
            f"{count} task(s) left waiting: cannot import {names}; declare it with "
            "--import MODULE, the config's 'imports' or BGTASKEX_IMPORTS, and check that "
            "it is on the Python path (installed into bgtaskex's venv, or in a directory "
            "of the config's pythonpath)"
        )
        self.count = count
        self.modules = modules


class Interrupted(BgtaskexError):
    """The user interrupted the command (Ctrl-C, SIGINT); a run stopped cleanly first."""

    exit_code = 130

    def __init__(self) -> None:
        super().__init__("interrupted")


class Unhealthy(BgtaskexError):
    """`bgtaskex check` found a problem (a stuck task, an unreachable database...); it has
    printed its one line already."""

    exit_code = 1


class SomeRefused(BgtaskexError):
    """A command on several tasks had some of them refused (not found, not in a status it
    applies to); it said which, one line each, and went on with the others. The exit
    code is that of the last refusal."""

    def __init__(self, last: BgtaskexError) -> None:
        super().__init__(str(last))
        self.exit_code = last.exit_code
        self.last = last
