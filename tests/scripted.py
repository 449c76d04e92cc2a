"""A test action whose every hook call follows a script and is logged to a file.

params:
    name: a label for the log (default "A")
    log:  path of a JSON-lines file; one line per hook call, written *before* the call
          does anything, so even a call that kills the process is recorded
    plan: {"init": [...], "change": [...], "execute": [...]}: the n-th call of a hook
          (counted from the log) does plan[hook][n]; the last entry repeats.

Behaviours: "true", "false", "raise", "exit" (os._exit(3)), "kill" (SIGKILL itself),
"none" (return None), "notjson" (put a set in params, return True),
"note" (Action.note() a line, save self.settings.max_attempts in params, return True),
"checkpoint-exit" (set params["checkpointed"], checkpoint, then os._exit),
"sleep:SECONDS" (then return True), "until-deadline" (loop in 10 ms chunks until the
deadline, then return False), "until-stop" (the same, but also stops when
`should_stop()` turns True).

Every normal call also sets params[f"{hook}_calls"] = n + 1, so tests can see which
params were saved.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from bgtaskex import Action
from tests.support import journal

HOOKS = {"init_params": "init", "change_params_on_error": "change", "execute": "execute"}


def log_call(log: str, name: str, hook: str) -> None:
    """Log one hook call: {"name", "hook", "pid"} (the format of every hook log here)."""
    journal.append(log, {"name": name, "hook": hook, "pid": os.getpid(), "ppid": os.getppid()})


def calls(log: str) -> list[tuple[str, str]]:
    """(name, hook) of every logged call, in order."""
    return [(e["name"], e["hook"]) for e in journal.read(log)]


class Scripted(Action):
    def _do(self, hook: str, deadline: float | None = None) -> Any:
        name = self.params.get("name", "A")
        log = self.params["log"]
        n = sum(1 for c in calls(log) if c == (name, hook))
        log_call(log, name, hook)
        steps = self.params.get("plan", {}).get(hook) or ["true"]
        step = steps[min(n, len(steps) - 1)]
        if step == "exit":
            os._exit(3)
        if step == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if step == "raise":
            raise RuntimeError(f"{name}.{hook} scripted failure #{n + 1}")
        self.params[f"{hook}_calls"] = n + 1
        if hook == "change":  # why the last execute died, as the action is told
            self.params["last_failure"] = self.last_failure
        if step == "checkpoint-exit":
            self.params["checkpointed"] = n + 1
            self.checkpoint()
            os._exit(3)
        if step == "none":
            return None
        if step == "note":  # a line in the history, and what the run's settings say
            self.note(f"{name}.{hook} noted")
            self.params["max_attempts_setting"] = self.settings.max_attempts
            return True
        if step == "notjson":
            self.params["bad"] = {1, 2}
            return True
        if step.startswith("sleep:"):
            time.sleep(float(step.split(":", 1)[1]))
            return True
        if step == "until-stop":  # cooperative: until should_stop() or the deadline
            assert deadline is not None
            while not self.should_stop() and time.time() + 0.01 < deadline:
                time.sleep(0.01)
            return False
        if step == "until-deadline":
            assert deadline is not None
            while time.time() + 0.01 < deadline:
                time.sleep(0.01)
            return False
        return step == "true"

    def init_params(self) -> bool:
        return bool(self._do("init"))

    def change_params_on_error(self) -> bool:
        return bool(self._do("change"))

    def execute(self, deadline: float) -> bool:
        return self._do("execute", deadline)  # type: ignore[no-any-return]


class ScriptedNoInit(Scripted):
    """The same, without an init_params of its own: the runner writes no `starting`."""

    init_params = Action.init_params  # type: ignore[assignment]


class Patient(Scripted):
    """The same, surviving more deaths than the run's `max_attempts`."""

    max_attempts = 8


class Noop(Action):
    def execute(self, deadline: float) -> bool:
        return True


class NotAnAction:
    def execute(self, deadline: float) -> bool:
        return True


class Tally(Action):
    """Appends its params["n"] to the file params["log"] at each execute, then is done:
    a chain of them tells which actions ran, and how many times."""

    def execute(self, deadline: float) -> bool:
        with open(self.params["log"], "a", encoding="utf-8") as handle:
            handle.write(f"{self.params['n']}\n")
        return True


class Overrun(Action):
    """Sleeps params["seconds"] in execute, whatever the deadline, then is done."""

    def execute(self, deadline: float) -> bool:
        time.sleep(float(self.params["seconds"]))
        return True


class Grows(Action):
    """Puts params["bytes"] characters into its params, then is done."""

    def execute(self, deadline: float) -> bool:
        self.params["blob"] = "x" * int(self.params["bytes"])
        return True


class Exits(Action):
    """Calls sys.exit(0) in execute: a bug of the hook, not the end of the run."""

    def execute(self, deadline: float) -> bool:
        import sys

        sys.exit(0)
