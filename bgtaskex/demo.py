"""`bgtaskex demo`: queue an example task and run it over several short runs."""

from __future__ import annotations

from collections.abc import Callable

from .client import Client
from .models import DEMO_PROCESS, Task
from .plan import RunPlan
from .render import percent


def _progress(task: Task) -> str:
    action = task.current_action
    if action is None:
        return ""
    return f"{action.ref.split(':')[1]} {percent(action)}"


def run_demo(
    client: Client, *, budget: float, max_runs: int, echo: Callable[[str], None] = print
) -> Task:
    task_id = client.enqueue(
        "demo",
        [
            ("bgtaskex.examples:CountPrimes", {"limit": 300_000_000, "chunk": 1_000_000}),
            "bgtaskex.examples:NothingToDo",
            ("bgtaskex.examples:HashChain", {"rounds": 4_000_000}),
        ],
        type="interactive",
        queue="demo",
    )
    echo(f"queued task {task_id} (3 actions); running it in runs of {budget:g}s each")
    task = client.get(task_id)
    for number in range(1, max_runs + 1):
        plan = RunPlan.of(client.settings, None, budget=budget, wait=budget * 5)
        summary = client.run_once(plan=plan._replace(process=DEMO_PROCESS))
        task = client.get(task_id)
        state = ", ".join(f"{a.rank}:{a.status}" for a in task.actions)
        echo(
            f"run {number} ({summary.run_id}, {summary.elapsed:.2f}s): task {task.status:<9} "
            f"actions [{state}] {_progress(task)}"
        )
        if task.status in ("finished", "failed"):
            break
    found = task.actions[0].params.get("found")
    echo(
        f"task {task_id} {task.status}: {found} primes below 300,000,000; "
        f"see it with: bgtaskex show {task_id}"
    )
    return task
