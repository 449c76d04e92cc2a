"""The exceptions of bgtaskex: one root, one class per thing a caller may handle.

Each class carries the exit code that the CLI maps it to, so the table in the README
and the code cannot drift apart.
"""

from __future__ import annotations


class BgtaskexError(Exception):
    """Root of every error bgtaskex raises on purpose."""

    exit_code = 1


class UsageError(BgtaskexError):
    """Bad input from the user: a malformed argument, file or JSON document."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration value (file, environment or option) is invalid."""


class InvalidRef(UsageError):
    """An action ref that does not name a loadable subclass of `bgtaskex.Action`."""


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
