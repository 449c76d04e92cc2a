"""What a run tells a live view (`run-once --progress`): each task's outcome and progress."""

from __future__ import annotations

import enum

from ..models import Progress, Task


class Outcome(enum.Enum):
    """How a run left a task."""

    FINISHED = "finished"
    FAILED = "failed"
    PAUSED = "paused"  # execute returned False
    DEFERRED = "deferred"  # between two actions when the deadline came
    ERROR = "error"  # a hook raised: left for the next run to recover
    CANCELLED = "cancelled"
    LOST = "lost"  # another run holds the claim (took it over, or was first): left to it
    LEFT = "left"  # its action's module cannot be imported: left as it was


class RunObserver:
    """Hooks for a live view of a run (`run-once --progress`); the default does nothing."""

    def planner(self, running: bool) -> None:
        """Told True as the process's planner is called, False once it returned or
        raised (the daemon's run child: a child that dies meanwhile died in its planner,
        before the run took any task)."""

    def task_started(self, task: Task) -> None:
        pass

    def progress(self, task: Task, rank: int, progress: Progress) -> None:
        pass

    def task_ended(self, task: Task, outcome: Outcome) -> None:
        pass
