"""Journals of the test actions and hooks, and `JournalAction`, the workload action.

A journal is a JSON-lines file that actions and hooks of several processes append to:
`append` writes one line with a single `os.write` on a file opened with O_APPEND (lines of
several processes never mix, and a process killed with SIGKILL leaves whole lines only);
`read` returns the lines, oldest first. The scripted actions (tests/scripted.py), the
operations actions (tests/ops_actions.py), `Chunked` (tests/reliability/faults.py) and
the purge hooks log their calls through them.

`JournalAction` records what it does in such a journal.

params (set at enqueue; see `params()`):
    journal:  path of the journal, a JSON-lines file shared by every action of a test
    label:    unique among the actions of that journal: an action cannot know its task id
              or rank, so the label is what ties a journal line to a database row
    units:    how many units of work `execute` does in all (default 5)
    unit_ms:  how long one unit takes, slept (default 5)
    mode:     "work" (default); "raise": execute raises every time; "kill": execute sends
              SIGKILL to its own process every time (poison actions)
    cursor:   the units done so far, saved by `checkpoint()` after each unit

`execute` is cooperative: before each unit it checks the deadline (and `should_stop()`)
and returns False (paused) when the unit would not fit; after each unit it saves its
cursor with `checkpoint()`, so a crash loses at most the unit in flight. When the cursor
reaches `units`, it appends a "done" line, fsync'ed, *before* returning True: the journal
then says "the final execute of this action ran", even if the process dies before the
runner commits `done`.

Exactly once. A crash between the "done" line and the commit of `done` leaves the action
active, and the next run recovers it and calls execute again. Like any consumer that wants
its effect once, the action looks at its journal (its idempotency record) first: if its
"done" line is already there, it appends "redo" instead of a second "done". So a second
"done" line can only come from a second final execute that the action could not see
coming, and `invariants.check` also checks that no execute is *entered* after the commit
of `done`, and that every "redo" (and every unit done twice) follows a process that was
killed.

Journal lines, one `os.write` each (O_APPEND: lines of several processes never mix):
    {"event": E, "label": L, "pid": ..., "t": time.time(), "mono": time.monotonic(), ...}
with E one of: "enter" (execute called; "cursor"), "unit" (unit "n" done, before its
checkpoint), "done" / "redo" (see above), "exit" (execute returns or raises; "outcome":
"done", "paused" or the exception's name), "change" (change_params_on_error called),
"init" (init_params called: only by `JournalActionWithInit`).

`JournalActionDyingOnce` kills its own process (SIGKILL) at two instants that chaos hits
only by chance, once each: right after its "done" line, and inside
change_params_on_error.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bgtaskex import Action

REF = "tests.support.journal:JournalAction"
REF_WITH_INIT = "tests.support.journal:JournalActionWithInit"
REF_DYING_ONCE = "tests.support.journal:JournalActionDyingOnce"


def params(
    journal: str | Path,
    label: str,
    *,
    units: int = 5,
    unit_ms: float = 5.0,
    mode: str = "work",
) -> dict[str, Any]:
    """The enqueue-time params of one JournalAction."""
    if not label or any(c in label for c in '"\\\n'):
        raise ValueError(f"label {label!r}: use plain characters")
    return {
        "journal": str(journal),
        "label": label,
        "units": units,
        "unit_ms": unit_ms,
        "mode": mode,
        "cursor": 0,
    }


def append(path: str | os.PathLike[str], entry: Mapping[str, Any], *, sync: bool = False) -> None:
    """Append `entry` as one JSON line in a single write (fsync'ed if `sync`)."""
    line = (json.dumps(entry) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, line)
        if written != len(line):  # never for a short line on a local file; say so if it does
            raise OSError(f"short write to the journal: {written} of {len(line)} bytes")
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def read(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every line of the journal at `path`, oldest first (none if there is no file). A
    last line cut short by a dying process (no newline yet) is left out."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]


def record(
    journal: str | Path, event: str, label: str, *, sync: bool = False, **fields: Any
) -> None:
    """Append one line of `JournalAction` to the journal (fsync'ed if `sync`)."""
    entry = {
        "event": event,
        "label": label,
        "pid": os.getpid(),
        "ppid": os.getppid(),  # the daemon, for a hook in its run's child process
        "t": time.time(),
        "mono": time.monotonic(),
        **fields,
    }
    append(journal, entry, sync=sync)


def _done_marker(label: str) -> bytes:
    return json.dumps({"event": "done", "label": label})[:-1].encode() + b","


def already_done(journal: str | Path, label: str) -> bool:
    """Whether the journal holds the "done" line of `label`."""
    try:
        with open(journal, "rb") as handle:
            return _done_marker(label) in handle.read()
    except FileNotFoundError:
        return False


class JournalAction(Action):
    description = "units of sleep, each checkpointed, then one fsync'ed 'done' journal line"

    def _journal(self, event: str, *, sync: bool = False, **fields: Any) -> None:
        record(self.params["journal"], event, self.params["label"], sync=sync, **fields)

    def change_params_on_error(self) -> bool:
        self._journal("change", cursor=self.params.get("cursor", 0))
        self.params["recoveries"] = int(self.params.get("recoveries", 0)) + 1
        return True

    def execute(self, deadline: float) -> bool:
        p = self.params
        units = int(p.get("units", 5))
        unit = float(p.get("unit_ms", 5.0)) / 1000.0
        mode = p.get("mode", "work")
        cursor = int(p.get("cursor", 0))
        self._journal("enter", cursor=cursor)
        outcome = "?"
        try:
            if mode == "raise":
                raise RuntimeError(f"poison action {p['label']}: raises on every execute")
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            while cursor < units:
                if time.time() + unit >= deadline or self.should_stop():
                    outcome = "paused"
                    return False
                time.sleep(unit)  # the unit of work
                cursor += 1
                p["cursor"] = cursor
                self.progress(cursor, units)
                self._journal("unit", n=cursor - 1)
                self.checkpoint()
            if already_done(p["journal"], p["label"]):
                self._journal("redo", sync=True)
            else:
                self._journal("done", sync=True)
            outcome = "done"
            return True
        except BaseException as err:
            outcome = type(err).__name__
            raise
        finally:
            self._journal("exit", outcome=outcome, cursor=cursor)


class JournalActionWithInit(JournalAction):
    """The same with an init_params of its own, so the runner writes `starting` first."""

    def init_params(self) -> bool:
        self._journal("init")
        self.params.setdefault("cursor", 0)
        return True


class JournalActionDyingOnce(JournalAction):
    """Dies once right after its "done" line (before the runner commits done), then once
    inside change_params_on_error: what it leaves is an action failed by design
    (docs/semantics.md#at-least-once) whose "done" line is written."""

    def execute(self, deadline: float) -> bool:
        first = not already_done(self.params["journal"], self.params["label"])
        result = super().execute(deadline)
        if first and already_done(self.params["journal"], self.params["label"]):
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    def change_params_on_error(self) -> bool:
        label = self.params["label"]
        first = not any(
            e["label"] == label and e["event"] == "change" for e in read(self.params["journal"])
        )
        result = super().change_params_on_error()
        if first:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
