"""The exit code of the exception that ended a command, and the line that says it.

Without click: `_main` (cli/main.py) maps click's own exceptions and leaves every other one
to `exit_code`, as the click-free `run-once` (cli/fast.py) does.
"""

from __future__ import annotations

from collections.abc import Callable

from ..exceptions import (
    BgtaskexError,
    Interrupted,
    LockBusy,
    OutsideWindow,
    SomeRefused,
    TasksLeftWaiting,
    Unhealthy,
)
from ..urls import mask_secrets

#: Writes one line (on stdout or stderr).
Echo = Callable[[str], None]


def exit_code(err: Exception | KeyboardInterrupt, out: Echo, err_out: Echo) -> int:
    """The exit code for `err`, once its line is written (`out` on stdout, `err_out` on
    stderr). Call it in the `except` block that caught `err` (an internal error's
    traceback goes to the debug log)."""
    if isinstance(err, LockBusy | OutsideWindow):  # nothing to do: not an error
        out(str(err))
        return err.exit_code
    if isinstance(err, TasksLeftWaiting | Unhealthy | SomeRefused):
        # Said already: the run logged one line per module; check printed its line;
        # retry and cancel one line per task refused.
        return err.exit_code
    if isinstance(err, Interrupted | KeyboardInterrupt):
        if isinstance(err, Interrupted):
            err_out("")  # after the terminal's ^C echo, as click does
        return interrupted(err_out)
    if isinstance(err, BgtaskexError):
        error_line(str(err), err_out)
        return err.exit_code
    # A bug: still one line, the traceback only in debug logs.
    import logging

    logging.getLogger("bgtaskex").debug("internal error", exc_info=True)
    hint = "(rerun with --log-level DEBUG)"
    error_line(f"internal error: {type(err).__name__}: {err} {hint}", err_out)
    return BgtaskexError.exit_code


def interrupted(err_out: Echo) -> int:
    """Say that the user interrupted the command: its exit code."""
    err_out("bgtaskex: interrupted")
    return Interrupted.exit_code


def error_line(message: str, err_out: Echo) -> None:
    # One line, whatever the message quotes (a file name or an argument with a newline).
    line = " ".join(message.splitlines())
    err_out(f"bgtaskex: error: {mask_secrets(line)}")
