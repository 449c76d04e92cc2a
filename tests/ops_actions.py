"""Actions for the operations tests: progress reports, checkpoints, waiting on a file.

Both log each hook call to params["log"] (when given) in the JSON-lines format of
`tests.scripted` ({"name", "hook", "pid"}), written before the hook does anything, so a
test can tell which process called what and that nothing was called again.

`Looper` params:
    total:    steps to do in all (null: never done, loop until the deadline)
    step:     seconds each step takes (default 0.02)
    per_call: steps per execute call at most; then execute returns False (paused)
    i:        steps done so far (saved at every checkpoint)

Each step sets params["i"], reports `progress(i, total, "step i")` and checkpoints.
execute returns True once i reaches total, False when the deadline is near.

`WaitFile` params:
    file:   path to wait for; execute polls for it (checkpointing with a progress
            report every ~50 ms) and returns True once it exists, False at the deadline.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bgtaskex import Action
from tests.scripted import log_call


def _log(params: dict[str, Any], hook: str) -> None:
    log = params.get("log")
    if log:
        log_call(log, params.get("name", "A"), hook)


class Looper(Action):
    def init_params(self) -> bool:
        _log(self.params, "init")
        self.params.setdefault("i", 0)
        return True

    def change_params_on_error(self) -> bool:
        _log(self.params, "change")
        return True

    def execute(self, deadline: float) -> bool:
        _log(self.params, "execute")
        total = self.params.get("total")
        step = float(self.params.get("step", 0.02))
        per_call = self.params.get("per_call")
        done_now = 0
        while True:
            i = int(self.params.get("i", 0))
            if total is not None and i >= total:
                return True
            if per_call is not None and done_now >= per_call:
                return False
            if time.time() + step + 0.05 >= deadline:
                return False
            time.sleep(step)
            i += 1
            done_now += 1
            self.params["i"] = i
            self.progress(i, total, f"step {i}")
            self.checkpoint()


class WaitFile(Action):
    def execute(self, deadline: float) -> bool:
        _log(self.params, "execute")
        path = self.params["file"]
        polls = 0
        while time.time() + 0.06 < deadline:
            if os.path.exists(path):
                return True
            polls += 1
            if polls % 5 == 0:
                self.progress(polls, None, "waiting")
                self.checkpoint()
            time.sleep(0.01)
        return False


class CancelsItself(Action):
    """Asks for its own task to be cancelled from another connection (as `bgtaskex
    cancel` would while the run executes it), then returns True without a checkpoint:
    the run learns of the cancel only when it writes the task's end.

    params: url, lock_file (of the run's database and lock), task_name."""

    def execute(self, deadline: float) -> bool:
        from bgtaskex.client import connect
        from bgtaskex.config import Settings

        settings = Settings(database_url=self.params["url"], lock_file=self.params["lock_file"])
        with connect(settings=settings) as client:
            for task in client.list_tasks(status=["active"]):
                if task.name == self.params["task_name"]:
                    assert client.cancel(task.id) is False  # the run is executing it
        return True


class Snoozer(Action):
    """execute snoozes for params["seconds"] (default 3600), every time."""

    def execute(self, deadline: float) -> bool:
        return self.snooze(float(self.params.get("seconds", 3600)))


class PausesItsQueue(Action):
    """Pauses its own task's queue from another connection (as `bgtaskex pause` would
    while the run is in a hook), inside init_params (params["hook"] "init") or inside
    change_params_on_error (hook "change"; the first execute raises, to get there), and
    goes on in that hook past the run's pause-check interval. What the hook saved:
    params["paused_in"].

    params: url (the run's database), queue (the task's), hook, log."""

    def _pause(self, hook: str) -> bool:
        from bgtaskex.client import connect
        from bgtaskex.config import Settings
        from bgtaskex.run.pauses import CHECK_EVERY

        _log(self.params, hook)
        with connect(settings=Settings(database_url=self.params["url"])) as client:
            client.pause(self.params["queue"], "maintenance")
        time.sleep(CHECK_EVERY + 0.1)
        self.params["paused_in"] = hook
        return True

    def init_params(self) -> bool:
        return self.params["hook"] != "init" or self._pause("init")

    def change_params_on_error(self) -> bool:
        return self._pause("change")

    def execute(self, deadline: float) -> bool:
        _log(self.params, "execute")
        if self.params["hook"] == "change" and "paused_in" not in self.params:
            raise RuntimeError("the first execute dies")
        return True
