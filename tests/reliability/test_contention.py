"""SQLite contention: a runner, enqueuers and readers on one embedded database at once.

For a bounded time (quick 5 s, BGTASKEX_TORTURE=long 60 s), on a database file that does
not exist yet (so the first of them create it, side by side), these run in separate
processes:

* one runner loop: `bgtaskex run-once` again and again (a 2 s budget each);
* enqueuers: two loops of `bgtaskex enqueue -q`, and two Python processes that enqueue
  with `bgtaskex.connect()`, each from two threads, in bursts of 4 back-to-back enqueues
  a second (so that the backlog stays within what a run drains on a slow disk);
* readers: a loop of `bgtaskex list` / `bgtaskex show ID` / `bgtaskex stats`, and a Python
  process reading with `list_tasks()` and `get()` as fast as it can.

Checked: no process ever prints "database is locked", a traceback or an internal error;
every exit code is 0; every enqueue that reported an id is in the database under its name
(no lost update, no id given twice, no task nobody enqueued); and after the load, clean
runs finish every task, each of its actions' hooks called exactly once.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from bgtaskex.client import connect
from bgtaskex.config import Settings
from bgtaskex.models import TaskStatus
from tests.acceptance.conftest import command
from tests.reliability import LONG, scaled
from tests.reliability.faults import SEED, proc_problems, task_problems, wait_for
from tests.scripted import calls

pytestmark = pytest.mark.timeout(900 if LONG else 180)

SCRIPTED = "tests.scripted:Scripted"
NO_INIT = "tests.scripted:ScriptedNoInit"
IMPORT = ("--import", "tests.scripted")

PY_ENQUEUER = textwrap.dedent(
    """
    import json, os, sys, threading, time
    import bgtaskex

    url, log, go, seconds, tag = sys.argv[1:6]
    lock = threading.Lock()
    clients = [bgtaskex.connect(url) for _ in (1, 2)]  # creates the schema, side by side
    open(go + "." + tag, "w").close()  # ready
    while not os.path.exists(go):
        time.sleep(0.01)
    until = time.time() + float(seconds)

    def enqueue(worker):
        client = clients[worker - 1]
        n = 0
        while time.time() < until:
            n += 1
            name = f"{tag}{worker}-{n}"
            actions = [("tests.scripted:ScriptedNoInit", {"name": name + ".1", "log": log})]
            task_id = client.enqueue(name, actions, type="interactive" if n % 3 else "cron")
            with lock:
                print(json.dumps([name, task_id]), flush=True)
            # pacing, so the runner can drain it: bursts of 4, then a pause
            if n % 4 == 0:
                time.sleep(1.0)
        client.close()

    threads = [threading.Thread(target=enqueue, args=(w,)) for w in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    """
)

PY_READER = textwrap.dedent(
    """
    import os, sys, time
    import bgtaskex

    url, go, seconds, tag = sys.argv[1:5]
    client = bgtaskex.connect(url)
    open(go + "." + tag, "w").close()  # ready
    while not os.path.exists(go):
        time.sleep(0.01)
    until = time.time() + float(seconds)
    reads = 0
    while time.time() < until:
        tasks = client.list_tasks(limit=20)
        for task in tasks[:3]:
            client.get(task.id)
            client.events(task.id)
        client.count_tasks()
        reads += 1
    print(reads)
    """
)


class Load:
    """Loops of CLI calls in threads (each call a process) and Python processes, all
    recording what they did."""

    def __init__(self, env: dict[str, str], until: float) -> None:
        self.env = env
        self.until = until
        self.problems: list[str] = []
        self.counts: Counter[str] = Counter()
        self.enqueued: list[tuple[str, int]] = []  # (name, id) reported by an enqueuer
        self.slowest: dict[str, float] = {}
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.children: list[tuple[str, subprocess.Popen[str]]] = []

    def cli(self, what: str, *args: object) -> subprocess.CompletedProcess[str]:
        began = time.monotonic()
        result = subprocess.run(
            command(*args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )
        took = time.monotonic() - began
        found = proc_problems(what, result.returncode, result.stdout, result.stderr)
        with self.lock:
            self.counts[what] += 1
            self.slowest[what] = max(self.slowest.get(what, 0.0), took)
            self.problems += found
        return result

    def loop(self, step: Callable[[int], None]) -> None:
        def body() -> None:
            n = 0
            while time.time() < self.until:
                n += 1
                step(n)

        thread = threading.Thread(target=body, daemon=True)
        thread.start()
        self.threads.append(thread)

    def python(self, what: str, script: str, *args: object) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-c", script, *map(str, args)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        self.children.append((what, proc))

    def exited(self) -> bool:
        return any(proc.poll() is not None for _, proc in self.children)

    def wait(self) -> dict[str, str]:
        """Wait for every loop and process; the Python processes' stdout, by name."""
        outputs = {}
        for what, proc in self.children:
            try:
                out, err = proc.communicate(timeout=self.until - time.time() + 120)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                self.problems.append(f"{what}: still running two minutes after the load")
            self.problems += proc_problems(what, proc.returncode, out, err)
            outputs[what] = out
        for thread in self.threads:
            thread.join(timeout=self.until - time.time() + 150)
            if thread.is_alive():
                self.problems.append("a CLI loop did not end")
        return outputs


def test_runner_enqueuers_and_readers_on_one_sqlite_file(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    seconds = scaled(5, 60)
    rng = random.Random(f"{SEED}-contention")
    db = tmp_path / "bgtaskex.db"
    url = f"sqlite:///{db}"
    log = str(tmp_path / "calls.jsonl")
    base = ("--database-url", url, *IMPORT)
    print(
        f"\n[contention] {seconds}s on a fresh SQLite file: 1 run-once loop, 2 CLI enqueue "
        "loops + 2 Python enqueuers (2 threads each), 1 CLI list/show/stats loop + 1 Python "
        "reader; invariant: exit 0, never 'database is locked' nor a traceback, every "
        "reported enqueue in the database, then clean runs finish every task, each hook once"
    )
    go = tmp_path / "go"
    load = Load(cli_env, time.time() + 3600)
    load.python("python enqueuer 1", PY_ENQUEUER, url, log, go, seconds, "p")
    load.python("python enqueuer 2", PY_ENQUEUER, url, log, go, seconds, "q")
    load.python("python reader", PY_READER, url, go, seconds, "r")
    ready = [Path(f"{go}.{tag}") for tag in "pqr"]  # each connected (the schema is there)
    wait_for(lambda: all(p.exists() for p in ready) or load.exited(), "the Python processes")
    go.touch()
    load.until = until = time.time() + seconds

    def run_once(_n: int) -> None:
        load.cli("run-once", *base, "run-once", "--max-execution-time", "2")

    def enqueue_cli(worker: str) -> Callable[[int], None]:
        def step(n: int) -> None:
            name = f"cli{worker}-{n}"
            refs = [f"{SCRIPTED}={json.dumps({'name': f'{name}.1', 'log': log})}"]
            if n % 2:
                refs.append(f"{NO_INIT}={json.dumps({'name': f'{name}.2', 'log': log})}")
            result = load.cli("enqueue", *base, "enqueue", name, *refs, "-q")
            if result.returncode == 0:
                with load.lock:
                    load.enqueued.append((name, int(result.stdout)))

        return step

    def read_cli(n: int) -> None:
        with load.lock:
            known = [task_id for _, task_id in load.enqueued]
        if n % 2 == 0 and known:
            load.cli("show", *base, "show", rng.choice(known))
        elif n % 4 == 3:
            load.cli("stats", *base, "stats")
        else:
            load.cli("list", *base, "list", *(("--status", "active") if n % 3 else ()))

    load.loop(run_once)
    load.loop(enqueue_cli("a"))
    load.loop(enqueue_cli("b"))
    load.loop(read_cli)
    outputs = load.wait()
    took = time.time() - (until - seconds)

    reported = list(load.enqueued)
    for what, out in outputs.items():
        if what.startswith("python enqueuer"):
            reported += [tuple(json.loads(line)) for line in out.splitlines()]
    reads = outputs.get("python reader", "").strip()
    problems = list(load.problems)
    ids = [task_id for _, task_id in reported]
    if len(set(ids)) != len(ids):
        problems.append(f"an id reported twice: {Counter(ids).most_common(3)}")

    settings = Settings(database_url=url, imports=("tests.scripted",))
    with connect(settings=settings) as client:
        for name, task_id in reported:
            task = client.get(task_id)
            if task.name != name:
                problems.append(f"enqueue of {name} reported id {task_id}, which is {task.name}")
        total = client.count_tasks()
        if total != len(reported):
            problems.append(f"{total} tasks in the database, {len(reported)} enqueues reported")
        clean = 0
        while client.store.has_due_tasks():
            clean += 1
            assert clean <= 20, "tasks still due after 20 clean runs"
            client.run_once(max_execution_time=60)
        hooks = Counter(calls(log))
        for _, task_id in reported:
            task = client.get(task_id)
            problems += task_problems(task)
            if task.status is not TaskStatus.FINISHED:
                problems.append(f"task {task.id} ({task.name}) is {task.status}")
            for action in task.actions:
                name = action.params["name"]
                want = {"execute": 1, "init": 1 if action.ref == SCRIPTED else 0}
                got = {hook: hooks[(name, hook)] for hook in ("execute", "init", "change")}
                if got != {**want, "change": 0}:
                    problems.append(f"action {name}: hook calls {got}, expected {want}")
    print(
        f"[contention] load {took:.1f}s: CLI calls {dict(load.counts)}, slowest "
        f"{ {k: round(v, 2) for k, v in load.slowest.items()} }s; {len(reported)} tasks "
        f"enqueued ({len(load.enqueued)} by the CLI), {reads} Python reads; then "
        f"{clean} clean run(s) finished them; problems: {len(problems)}"
    )
    assert not problems, "\n".join(problems[:30])
