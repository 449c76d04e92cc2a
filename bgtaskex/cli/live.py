"""`run-once --progress`: live progress bars of the tasks a run works on (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ..client import Outcome, RunObserver
from ..models import Progress as ActionProgress
from ..models import Task


class LiveProgress(RunObserver):
    """One bar per task while the run works on it; a line when it ends."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=False)
        self.bars = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.bars.start()
        self.ids: dict[int, Any] = {}

    def task_started(self, task: Task) -> None:
        self.ids[task.id] = self.bars.add_task(
            f"task {task.id} {task.name}", total=None, note=str(task.status)
        )

    def progress(self, task: Task, rank: int, progress: ActionProgress) -> None:
        bar = self.ids.get(task.id)
        if bar is None:
            return
        note = f"action {rank}/{len(task.actions)}"
        if progress.message:
            note += f" · {progress.message}"
        self.bars.update(bar, completed=progress.done, total=progress.total, note=note)

    def task_ended(self, task: Task, outcome: Outcome) -> None:
        bar = self.ids.pop(task.id, None)
        if bar is not None:
            self.bars.remove_task(bar)
        self.console.print(f"task {task.id} {task.name}: {outcome.value}")

    def close(self) -> None:
        self.bars.stop()
