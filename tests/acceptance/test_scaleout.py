"""Scale-out on PostgreSQL (`[concurrency] lock = "none"`): several real `bgtaskex daemon`
processes claim tasks from one schema under leases; the frozen worker's take-over (6.) runs
on MariaDB too.

1. Four daemons of two workers drain 2,050 tasks enqueued while they run: every action
   done once, no two executes of one action overlap, the work spread over the daemons.
2. kill -9 of the daemon inside an execute: another daemon rescues the task once the lease
   has run out (change_params_on_error once; the history shows the recovery).
3. A live worker holds one task for more than ten leases (its heartbeat extends them)
   beside a second daemon that keeps claiming other work: never taken over.
4. SIGSTOP of the worker inside an execute, past its lease, SIGCONT once another daemon
   has claimed the task: it exits at once (code 4, one critical line), before its hook
   can do more than the step in flight; nothing it did late is written.
5. pg_terminate_backend of one daemon's connections mid-drain: nothing lost, every action
   done once, any repeat only after a recorded death.

6. SIGSTOP of a worker while one of its transactions holds the task's row lock: the
   server ends its session once idle in that transaction longer than the lease, so
   another daemon takes the task over (SKIP LOCKED would pass over the row forever).
7. `bgtaskex cancel` of a task a worker is executing waits for its checkpoint.

Every action is a JournalAction (tests/support/journal.py), whose fsync'ed
append-only journal says which process entered, worked in and left each execute. The
torture suite's exclusion check (J2 of invariants.py) assumes one execute at a time in
the whole database, which workers side by side break by design, so the journal is
checked per action here (`execute_problems`, `repeat_problems`), and every other
invariant of invariants.py still applies.

Each daemon has its own config file; its URL names its connections (application_name)
so that a test can find them in pg_stat_activity. Waits poll conditions with a deadline
and fail at once, with the logs, if a daemon that should be running has exited.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from bgtaskex.client import Client, connect
from bgtaskex.config import Settings
from tests.acceptance.conftest import Bgx
from tests.reliability import invariants as inv
from tests.support import daemon as support_daemon
from tests.support import journal as ja

pytestmark = [pytest.mark.timeout(120)]

MODULE = "tests.support.journal"


# -- daemons ------------------------------------------------------------------------------


class Daemon(support_daemon.Daemon):
    """One `bgtaskex --config CFG daemon` subprocess, its stdout and stderr in files."""

    def __init__(
        self, name: str, config: Path, env: dict[str, str], app: str, host: str | None = None
    ) -> None:
        super().__init__(config, env, err_path=config.with_suffix(".err"), name=name, host=host)
        self.app = app  # the application_name of its connections

    def runs(self) -> list[dict[str, int]]:
        """The summary of each run it logged."""
        return self.run_counts()

    def total(self, key: str) -> int:
        return sum(run[key] for run in self.runs())

    def stop(self, timeout: float = 25, *, tracebacks: bool = False) -> None:
        super().stop(timeout, tracebacks=tracebacks)


class Cluster:
    """Daemons on one PostgreSQL schema, a journal, and in-process reads of the tables."""

    def __init__(self, url: str, env: dict[str, str], directory: Path) -> None:
        import sqlalchemy

        self.url = url
        self.env = env
        self.dir = directory
        self.journal = directory / "journal.jsonl"
        self.daemons: list[Daemon] = []
        self.tag = secrets.token_hex(3)
        self.client: Client = connect(settings=Settings(database_url=url, imports=(MODULE,)))
        self.engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
        self.mariadb = self.engine.dialect.name in ("mysql", "mariadb")

    # the daemons

    def start(
        self,
        name: str,
        *,
        lease: str,
        workers: int = 2,
        every: str = "1s",
        budget: str = "30s",
        host: str | None = None,
    ) -> Daemon:
        app = f"bgx-{self.tag}-{name}"
        config = self.dir / f"daemon-{name}.toml"
        config.write_text(
            "\n".join(
                [
                    f"database_url = {json.dumps(self.daemon_url(app))}",
                    f'imports = ["{MODULE}"]',
                    'log_level = "INFO"',
                    f'max_execution_time = "{budget}"',
                    "[concurrency]",
                    'lock = "none"',
                    f"workers = {workers}",
                    f'lease = "{lease}"',
                    "[[processes]]",
                    'name = "work"',
                    f'every = "{every}"',
                    "",
                ]
            ),
            encoding="utf-8",
        )
        daemon = Daemon(name, config, self.env, app, host)
        self.daemons.append(daemon)
        return daemon

    def daemon_url(self, app: str) -> str:
        """The URL of a daemon whose connections show `app` in pg_stat_activity (on
        MariaDB, sessions are told apart by database only: see `backend_states`)."""
        return self.url if self.mariadb else f"{self.url}&application_name={app}"

    def eventually(
        self,
        condition: Callable[[], bool],
        what: str,
        *,
        timeout: float = 30,
        alive: Sequence[Daemon] = (),
    ) -> bool:
        """Poll `condition` until true (True) or for `timeout` s (False); fail as soon as
        a daemon of `alive` has exited, with their logs."""
        give_up = time.monotonic() + timeout
        while not condition():
            dead = [d for d in alive if d.proc.poll() is not None]
            if dead:
                logs = "\n".join(d.describe() for d in alive)
                pytest.fail(
                    f"daemon {dead[0].name} exited with {dead[0].proc.returncode} "
                    f"before {what}\n{logs}"
                )
            if time.monotonic() > give_up:
                return False
            time.sleep(0.02)
        return True

    def wait(
        self,
        condition: Callable[[], bool],
        what: str,
        *,
        timeout: float = 30,
        alive: Sequence[Daemon] = (),
    ) -> None:
        """`eventually`, failing after `timeout` s with the logs of `alive`."""
        if not self.eventually(condition, what, timeout=timeout, alive=alive):
            logs = "\n".join(d.describe() for d in alive)
            pytest.fail(f"timed out after {timeout}s waiting for {what}\n{logs}")

    def started(self, *daemons: Daemon) -> None:
        for daemon in daemons:
            self.wait(
                lambda d=daemon: "daemon started" in d.log(),  # type: ignore[misc]
                f"daemon {daemon.name} to start",
                alive=[daemon],
            )

    def by_pid(self, pid: int) -> Daemon:
        (daemon,) = [d for d in self.daemons if d.pid == pid]
        return daemon

    def backend_states(self, daemon: Daemon) -> list[str]:
        """The state of each connection of `daemon` in pg_stat_activity (MariaDB: the
        command of each other session on the database, whichever daemon's)."""
        import sqlalchemy

        with self.engine.connect() as conn:
            if self.mariadb:
                query = (
                    "SELECT CONCAT(command, ' ', time, 's') FROM information_schema.processlist "
                    "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
                )
                return list(conn.execute(sqlalchemy.text(query)).scalars())
            query = "SELECT coalesce(state, '') FROM pg_stat_activity WHERE application_name = :a"
            return list(conn.execute(sqlalchemy.text(query), {"a": daemon.app}).scalars())

    def row_locked(self, task_id: int) -> bool:
        """Whether another session holds a lock on the task's row (what the claim's
        SKIP LOCKED passes over)."""
        import sqlalchemy

        with self.engine.connect() as conn:
            query = "SELECT id FROM bgtaskex_tasks WHERE id = :id FOR UPDATE SKIP LOCKED"
            return conn.execute(sqlalchemy.text(query), {"id": task_id}).first() is None

    def terminate(self, daemon: Daemon) -> int:
        """pg_terminate_backend of every connection of `daemon`; how many there were."""
        import sqlalchemy

        with self.engine.connect() as conn:
            ended = conn.execute(
                sqlalchemy.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :a AND pid <> pg_backend_pid()"
                ),
                {"a": daemon.app},
            ).scalars()
            return sum(1 for ok in ended if ok)

    # the tasks

    def enqueue(self, label: str, *, units: int, unit_ms: float, actions: int = 1) -> int:
        """A task of `actions` JournalActions, labelled `label` (then `label.2`, ...)."""
        refs = [
            (ja.REF, ja.params(self.journal, label if r == 1 else f"{label}.{r}",
                               units=units, unit_ms=unit_ms))
            for r in range(1, actions + 1)
        ]  # fmt: skip
        return self.client.enqueue(label, refs)

    def row(self, task_id: int) -> dict[str, Any]:
        """The task's row: status, claimed_by, claim_token, lease_until, ..."""
        import sqlalchemy

        with self.engine.connect() as conn:
            found = conn.execute(
                sqlalchemy.text("SELECT * FROM bgtaskex_tasks WHERE id = :id"), {"id": task_id}
            ).one()
            return dict(found._mapping)

    def rows(self) -> list[dict[str, Any]]:
        import sqlalchemy

        with self.engine.connect() as conn:
            query = sqlalchemy.text("SELECT * FROM bgtaskex_tasks ORDER BY id")
            return [dict(r._mapping) for r in conn.execute(query)]

    def waiting(self) -> int:
        """Tasks not ended yet."""
        import sqlalchemy

        with self.engine.connect() as conn:
            query = "SELECT count(*) FROM bgtaskex_tasks WHERE run_order IS NOT NULL"
            return int(conn.execute(sqlalchemy.text(query)).scalar_one())

    def status(self, task_id: int) -> str:
        return str(self.row(task_id)["status"])

    def lines(self, label: str | None = None) -> list[dict[str, Any]]:
        """The journal's lines; `pid` names the daemon whose run child wrote the line
        (`run_pid`: the child itself)."""
        entries, bad = inv.read_journal(self.journal)
        assert not bad, f"journal lines that do not parse: {bad[:3]}"
        daemons = {d.pid for d in self.daemons}
        for e in entries:
            e["run_pid"] = e["pid"]
            if e.get("ppid") in daemons:
                e["pid"] = e["ppid"]
        return entries if label is None else [e for e in entries if e["label"] == label]

    def holds(self, daemon: Daemon, claimed_by: str | None) -> bool:
        """Whether `claimed_by` names a run child of `daemon` (one that wrote a line)."""
        children = {e["run_pid"] for e in self.lines() if e["pid"] == daemon.pid}
        return any(f":{pid}:" in (claimed_by or "") for pid in children)

    def first_line(
        self, event: str, label: str, *, alive: Sequence[Daemon], n: int = 0
    ) -> dict[str, Any]:
        """Wait for the first journal line `event` of `label` (a "unit" line: of unit `n`
        or later), and return it."""
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [e for e in self.lines(label) if e["event"] == event and e.get("n", 0) >= n]
            return bool(found)

        self.wait(seen, f"a {event!r} line of {label}", alive=alive)
        return found[0]

    def close(self) -> None:
        for daemon in self.daemons:
            if daemon.proc.poll() is None:
                daemon.proc.send_signal(signal.SIGKILL)  # also ends a stopped process
            daemon.proc.wait(timeout=10)
        self.client.close()
        self.engine.dispose()


def _cluster(url: str, cli_env: dict[str, str], tmp_path: Path) -> Iterator[Cluster]:
    opened = Cluster(url, cli_env, tmp_path)
    try:
        yield opened
    finally:
        opened.close()  # before the fixture of `url` drops the schema or database


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres)])
def cluster(pg_schema_url: str, cli_env: dict[str, str], tmp_path: Path) -> Iterator[Cluster]:
    """Daemons on a PostgreSQL schema."""
    yield from _cluster(pg_schema_url, cli_env, tmp_path)


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def server_cluster(
    request: pytest.FixtureRequest, cli_env: dict[str, str], tmp_path: Path
) -> Iterator[Cluster]:
    """Daemons on a PostgreSQL schema or on a MariaDB database."""
    fixture = "pg_schema_url" if request.param == "postgres" else "mariadb_database_url"
    yield from _cluster(str(request.getfixturevalue(fixture)), cli_env, tmp_path)


# -- the journal, per action ----------------------------------------------------------------


def execute_problems(
    entries: Iterable[dict[str, Any]], stale: frozenset[int] | set[int] = frozenset()
) -> list[str]:
    """Exclusion per action, in journal order (appends are ordered by the kernel): an
    execute of an action is entered only once the previous one has exited, whichever
    process or thread ran it, and its unit/done/redo lines come from the process inside
    it; change (and init) lines come between executes.

    A process of `stale` (killed, or stopped past its lease) may leave an execute open:
    another worker may then take the action over. After that, the superseded process may
    still write the end of that execute (a "unit" it was in, its "exit"), never a "done",
    "redo" or a new "enter" of that action."""
    problems: list[str] = []
    inside: dict[str, int] = {}  # label -> pid of the execute in progress
    superseded: dict[str, set[int]] = defaultdict(set)
    for i, e in enumerate(entries):
        label, pid, event = e["label"], e["pid"], e["event"]
        where = f"journal line {i + 1}: {event} of {label} by pid {pid}"
        holder = inside.get(label)
        if pid in superseded[label]:
            if event not in ("unit", "exit"):
                problems.append(f"{where}: after another worker took the action over")
            continue
        if holder is not None and holder != pid and holder in stale:
            superseded[label].add(holder)  # it stopped or died inside; someone took over
            del inside[label]
            holder = None
        if event == "enter":
            if holder is not None:
                problems.append(f"{where}: inside the execute of pid {holder}")
            inside[label] = pid
        elif event == "exit":
            if holder != pid:
                problems.append(f"{where}: an exit without its enter")
            inside.pop(label, None)
        elif event in ("unit", "done", "redo"):
            if holder != pid:
                problems.append(f"{where}: outside an execute of that process")
        elif holder is not None:
            problems.append(f"{where}: inside the execute of pid {holder}")
    return problems


def repeat_problems(
    entries: Iterable[dict[str, Any]],
    stale: frozenset[int] | set[int] = frozenset(),
    outages: Iterable[str] = (),
) -> list[str]:
    """At most one "done" per action; a unit done again, or a "redo", only after a
    "change" line of that action (the runner found the execute dead and recovered it),
    or by/after a process of `stale`, or for an action of `outages` (labels whose
    execute a storage outage ended: the next run executes it again with no death,
    docs/semantics.md#retry-backoff)."""
    problems: list[str] = []
    done: Counter[str] = Counter()
    units: dict[str, dict[int, int]] = defaultdict(dict)  # label -> unit -> pid
    recovered: set[str] = set(outages)
    for i, e in enumerate(entries):
        label, pid, event = e["label"], e["pid"], e["event"]
        where = f"journal line {i + 1}: {event} of {label} by pid {pid}"
        if event == "change":
            recovered.add(label)
        elif event == "done":
            done[label] += 1
            if done[label] > 1:
                problems.append(f"{where}: a second 'done'")
        elif event == "redo" and label not in recovered:
            problems.append(f"{where}: execute ran again with no death recorded")
        elif event == "unit":
            n = e["n"]
            first = units[label].get(n)
            if first is not None and label not in recovered and not {first, pid} & set(stale):
                problems.append(f"{where}: unit {n} again (first by pid {first}), no death")
            units[label][n] = pid
    return problems


def invariant_problems(cluster: Cluster, *, killed: Iterable[int] = ()) -> list[str]:
    """invariants.py on the database and journal, the work being over, without the checks
    that assume one execute at a time in the whole database (J2; J6 for a process that
    lived on): `execute_problems` and `repeat_problems` check those per action."""
    report = inv.inspect(cluster.url, cluster.journal, killed_pids=set(killed), final=True)
    left_out = Counter(v.split()[0] for v in report.violations if v.startswith(("J2 ", "J6 ")))
    print(f"\n  invariants.py: {report.summary()} (left out: {dict(left_out) or 'none'})")
    return [v for v in report.violations if not v.startswith(("J2 ", "J6 "))]


def fenced(daemon: Daemon) -> None:
    """The run child of `daemon` ended itself with exit code 4 (the fence), and the
    daemon lives on."""
    daemon.wait_for(
        lambda: "the run's process exited with code 4" in daemon.log(),
        "its run's process to exit 4 (the fence)",
        timeout=10,
    )


def pids_of(lines: Iterable[dict[str, Any]], event: str) -> list[int]:
    return [e["pid"] for e in lines if e["event"] == event]


def stop_outside_the_row(cluster: Cluster, daemon: Daemon, task_id: int) -> None:
    """SIGSTOP `daemon` at an instant when none of its connections holds a lock on the
    task's row, runs a statement or sits in a transaction: stopped holding the row lock
    (in a checkpoint, a heartbeat), it would keep every other worker off the task (SKIP LOCKED; see
    test_worker_stopped_inside_a_transaction_...), which is not what a stop past the
    lease is about here."""
    for _attempt in range(500):
        daemon.signal_all(signal.SIGSTOP)
        states = cluster.backend_states(daemon)
        busy = any(s.startswith(("active", "idle in transaction")) for s in states)
        if not busy and not cluster.row_locked(task_id):
            return
        daemon.signal_all(signal.SIGCONT)
    pytest.fail(f"daemon {daemon.name} never caught off the task's row\n{daemon.describe()}")


# -- 1. many daemons, many tasks ----------------------------------------------------------


@pytest.mark.xdist_group("torture")
def test_four_daemons_drain_two_thousand_tasks_each_once(cluster: Cluster) -> None:
    single, multi = 2000, 50
    daemons = [cluster.start(f"d{i}", lease="3s", workers=2) for i in range(4)]
    cluster.started(*daemons)
    began = time.monotonic()
    ids = [cluster.enqueue(f"s{i}", units=1, unit_ms=1) for i in range(single)]
    ids += [cluster.enqueue(f"m{i}", units=5, unit_ms=5, actions=2) for i in range(multi)]
    enqueued = time.monotonic() - began
    cluster.wait(lambda: cluster.waiting() == 0, "every task to end", timeout=90, alive=daemons)
    drained = time.monotonic() - began
    for daemon in daemons:
        daemon.stop()

    rows = cluster.rows()
    statuses = Counter(r["status"] for r in rows)
    assert len(rows) == len(ids) and statuses == {"finished": len(ids)}, statuses
    tokens = Counter(r["claim_token"] for r in rows)
    assert tokens == {1: len(ids)}, f"claims per task: {tokens}"  # each claimed once
    assert all(r["lease_until"] is None for r in rows), "a claim not released"

    lines = cluster.lines()
    labels = [f"s{i}" for i in range(single)]
    labels += [label for i in range(multi) for label in (f"m{i}", f"m{i}.2")]
    done = Counter(e["label"] for e in lines if e["event"] == "done")
    assert done == dict.fromkeys(labels, 1), "actions not done exactly once: " + str(
        {k: v for k, v in done.items() if v != 1} or set(labels) - set(done)
    )
    assert execute_problems(lines) == []
    assert repeat_problems(lines) == []
    assert not [e for e in lines if e["event"] in ("change", "redo")]
    assert invariant_problems(cluster) == []

    per_pid = Counter(e["pid"] for e in lines if e["event"] == "done")
    per_daemon = {f"{d.name} (pid {d.pid})": per_pid.get(d.pid, 0) for d in daemons}
    finished = {d.name: d.total("finished") for d in daemons}
    print(
        f"\n[scale-out] {len(ids)} tasks ({len(labels)} actions), enqueued in {enqueued:.1f}s "
        f"while 4 daemons x 2 workers drained them in {drained:.1f}s; actions done per "
        f"daemon {per_daemon}; tasks finished per daemon (run lines) {finished}"
    )
    assert sum(1 for n in per_daemon.values() if n) > 1, per_daemon
    assert sum(finished.values()) == len(ids), finished  # no task finished twice
    assert sum(d.total("lost") for d in daemons) == 0
    assert sum(d.total("errors") for d in daemons) == 0


# -- 2. kill -9 inside an execute ----------------------------------------------------------


def test_kill_9_inside_execute_another_daemon_rescues_after_the_lease(
    cluster: Cluster, bgx: Bgx
) -> None:
    # Two hosts, as far as they can tell: neither can see whether the other's pid lives,
    # so the dead one's task waits for its lease (on one host it would not: see
    # tests/acceptance/test_lost_lock.py).
    daemons = [
        cluster.start("a", lease="2s", host="bgx-other-host"),
        cluster.start("b", lease="2s"),
    ]
    cluster.started(*daemons)
    task_id = cluster.enqueue("victim", units=12, unit_ms=250)
    # Unit 1 done: unit 0 was saved (the journal line of a unit precedes its checkpoint).
    second_unit = cluster.first_line("unit", "victim", alive=daemons, n=1)
    victim = cluster.by_pid(second_unit["pid"])
    (survivor,) = [d for d in daemons if d is not victim]
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.time()
    assert victim.proc.wait(timeout=10) == -signal.SIGKILL
    lease_end = cluster.row(task_id)["lease_until"].timestamp()  # nobody extends it now

    cluster.wait(
        lambda: cluster.status(task_id) == "finished", "the rescue", timeout=40, alive=[survivor]
    )
    survivor.stop()

    lines = cluster.lines("victim")
    assert pids_of(lines, "change") == [survivor.pid], lines
    assert pids_of(lines, "done") == [survivor.pid], lines
    enters = [e for e in lines if e["event"] == "enter"]
    assert [e["pid"] for e in enters] == [victim.pid, survivor.pid], enters
    assert enters[1]["cursor"] >= 1, "the rescue did not resume from the saved cursor"
    change = next(e for e in lines if e["event"] == "change")
    waited = change["t"] - killed_at
    # The server's clock and the journal's are this host's.
    assert change["t"] >= lease_end, (
        f"taken over {lease_end - change['t']:.3f}s before the lease ran out"
    )
    inv.check(cluster.url, cluster.journal, killed_pids={victim.pid}, final=True)

    task = cluster.client.get(task_id)
    (action,) = task.actions
    assert (action.status, action.attempts) == ("done", 1)
    assert action.params["recoveries"] == 1 and action.params["cursor"] == 12
    assert task.claim_token == 2, task.claim_token
    assert cluster.holds(survivor, task.claimed_by), task.claimed_by
    assert task.lease_until is None

    shown = bgx.show(cluster.url, task_id)
    events = shown["events"]
    chain = [(e["old_status"], e["new_status"]) for e in events if e["rank"] is None]
    assert chain == [
        (None, "created"),
        ("created", "running"),
        ("running", "recovering"),
        ("recovering", "running"),
        ("running", "finished"),
    ], chain
    died = [e for e in events if "execute died in an earlier run (death 1)" in e["message"]]
    assert len(died) == 1, events
    first_run = next(e["run_id"] for e in events if e["new_status"] == "running")
    assert died[0]["run_id"] != first_run  # recovered by another run: the survivor's
    print(
        f"\n[scale-out] kill -9 of daemon {victim.name} inside execute; daemon "
        f"{survivor.name} took over {waited:.2f}s later (lease 2s); history: {chain}"
    )


def test_kill_9_on_the_same_host_is_rescued_before_the_lease(cluster: Cluster) -> None:
    """On one host a run can tell that the holder of a claim is dead (its pid, start
    time and boot): the survivor takes the task over at its next run, long before the
    lease (30 s) runs out."""
    daemons = [cluster.start(name, lease="30s") for name in ("a", "b")]
    cluster.started(*daemons)
    task_id = cluster.enqueue("victim", units=12, unit_ms=250)
    second_unit = cluster.first_line("unit", "victim", alive=daemons, n=1)
    victim = cluster.by_pid(second_unit["pid"])
    (survivor,) = [d for d in daemons if d is not victim]
    # The victim's lease, read while it holds it: once it is dead the survivor may end
    # the claim (lease_until NULL) before this test reads the row.
    lease_end = cluster.row(task_id)["lease_until"].timestamp()
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.proc.wait(timeout=10) == -signal.SIGKILL
    cluster.wait(
        lambda: cluster.status(task_id) == "finished", "the rescue", timeout=25, alive=[survivor]
    )
    survivor.stop()
    change = next(e for e in cluster.lines("victim") if e["event"] == "change")
    assert change["pid"] == survivor.pid
    assert change["t"] < lease_end - 10, "the survivor waited for the dead run's lease"
    inv.check(cluster.url, cluster.journal, killed_pids={victim.pid}, final=True)


# -- 3. a live worker keeps its claim -----------------------------------------------------


def test_live_worker_keeps_its_claim_through_ten_leases(cluster: Cluster) -> None:
    daemons = [cluster.start(name, lease="1s") for name in ("a", "b")]
    cluster.started(*daemons)
    task_id = cluster.enqueue("long", units=100, unit_ms=110)  # 11 s in checkpointed units
    enter = cluster.first_line("enter", "long", alive=daemons)
    owner = cluster.by_pid(enter["pid"])
    (other,) = [d for d in daemons if d is not owner]
    other_runs = len(other.runs())
    # Other work meanwhile: the other daemon (and the owner's second worker) claim it.
    shorts = [cluster.enqueue(f"short{i}", units=2, unit_ms=20) for i in range(20)]

    tokens: Counter[int] = Counter()

    def over() -> bool:
        row = cluster.row(task_id)
        tokens[row["claim_token"]] += 1
        return bool(row["status"] == "finished")

    cluster.wait(over, "the long task to finish", timeout=60, alive=daemons)
    cluster.wait(
        lambda: all(cluster.status(t) == "finished" for t in shorts),
        "the short tasks to finish",
        alive=daemons,
    )
    runs_meanwhile = len(other.runs()) - other_runs
    for daemon in daemons:
        daemon.stop()

    assert set(tokens) == {1}, f"claim tokens seen while it ran: {tokens}"
    lines = cluster.lines("long")
    assert {e["pid"] for e in lines} == {owner.pid}, Counter(e["pid"] for e in lines)
    assert pids_of(lines, "change") == []
    assert pids_of(lines, "enter") == [owner.pid] and pids_of(lines, "done") == [owner.pid]
    exit_line = next(e for e in lines if e["event"] == "exit")
    held = exit_line["mono"] - enter["mono"]
    assert held >= 10, f"the execute took {held:.1f}s, not ten leases of 1s"
    row = cluster.row(task_id)
    assert (row["claim_token"], row["lease_until"]) == (1, None), row
    assert cluster.holds(owner, row["claimed_by"]), row
    (action,) = cluster.client.get(task_id).actions
    assert action.attempts == 0
    for daemon in daemons:
        assert "lost the claim" not in daemon.log(), daemon.describe()
    short_pids = Counter(e["pid"] for e in cluster.lines() if e["event"] == "done")
    assert short_pids[other.pid] >= 1, short_pids  # the other daemon was claiming meanwhile
    assert runs_meanwhile >= 5, other.describe()
    print(
        f"\n[scale-out] one execute of {held:.1f}s under a 1s lease by daemon {owner.name}; "
        f"claim token polled {sum(tokens.values())} times: {dict(tokens)}; daemon "
        f"{other.name} ran {runs_meanwhile} times meanwhile; short tasks done per pid "
        f"{dict(short_pids)}"
    )


# -- 4. SIGSTOP past the lease ---------------------------------------------------------------


def test_sigstop_past_the_lease_late_writes_refused(cluster: Cluster, bgx: Bgx) -> None:
    daemons = [cluster.start(name, lease="2s") for name in ("a", "b")]
    cluster.started(*daemons)
    units = 10
    task_id = cluster.enqueue("stopped", units=units, unit_ms=400)
    first_unit = cluster.first_line("unit", "stopped", alive=daemons)
    owner = cluster.by_pid(first_unit["pid"])
    (other,) = [d for d in daemons if d is not owner]

    stop_outside_the_row(cluster, owner, task_id)
    stopped_at = time.time()
    lease_end = cluster.row(task_id)["lease_until"].timestamp()  # nobody extends it now
    try:
        cluster.wait(
            lambda: cluster.row(task_id)["claim_token"] >= 2,
            "another daemon to claim the task",
            timeout=30,
            alive=[other],
        )
        taken_at = time.time()
    finally:
        owner.signal_all(signal.SIGCONT)
    resumed_at = time.time()

    # Woken past its lease, the stopped daemon's run exits at once (its run's child, exit
    # 4): its hook may not stop when asked, and another daemon has the task now. The
    # daemon goes on.
    fenced(owner)
    exited_at = time.time()
    cluster.wait(lambda: cluster.status(task_id) == "finished", "the new owner", alive=[other])
    other.stop()

    lines = cluster.lines("stopped")
    assert pids_of(lines, "done") == [other.pid], lines
    assert pids_of(lines, "change") == [other.pid], lines
    change = next(e for e in lines if e["event"] == "change")
    assert change["t"] >= lease_end, f"taken over {lease_end - change['t']:.3f}s early"
    late = [e for e in lines if e["pid"] == owner.pid and e["t"] >= resumed_at]
    assert [e["event"] for e in late] in ([], ["unit"]), late  # at most the unit in flight
    assert exited_at - resumed_at < 5
    assert execute_problems(cluster.lines(), stale={owner.pid}) == []
    assert repeat_problems(cluster.lines(), stale={owner.pid}) == []
    assert invariant_problems(cluster, killed={owner.pid}) == []

    task = cluster.client.get(task_id)
    (action,) = task.actions
    assert (task.status, action.status, action.attempts) == ("finished", "done", 1)
    assert action.params["cursor"] == units
    assert task.claim_token == 2 and cluster.holds(other, task.claimed_by)
    events = bgx.show(cluster.url, task_id)["events"]
    first_run = next(e["run_id"] for e in events if e["new_status"] == "running")
    rescue = next(i for i, e in enumerate(events) if "death 1" in e["message"])
    assert events[rescue]["run_id"] != first_run
    after = [e for e in events[rescue:] if e["run_id"] == first_run]
    assert after == [], f"the stopped worker wrote after the takeover: {after}"
    log_line = next(line for line in owner.log().splitlines() if "exiting now" in line)
    assert "CRITICAL" in log_line, log_line
    print(
        f"\n[scale-out] SIGSTOP of daemon {owner.name} inside execute; daemon {other.name} "
        f"claimed the task {taken_at - stopped_at:.2f}s later (lease 2s); after SIGCONT the "
        f"stopped one wrote {[e['event'] for e in late]} to the journal, exited 4 and logged: "
        f"{log_line.strip()}"
    )


# -- 5. pg_terminate_backend of one daemon's connections ----------------------------------


def test_pg_terminate_backend_of_one_daemon_loses_nothing(cluster: Cluster) -> None:
    daemons = [cluster.start(f"d{i}", lease="2s", workers=2) for i in range(3)]
    cluster.started(*daemons)
    target = daemons[0]
    ids = [cluster.enqueue(f"t{i}", units=4, unit_ms=15) for i in range(400)]

    def done_by(daemon: Daemon) -> int:
        return sum(1 for e in cluster.lines() if e["event"] == "done" and e["pid"] == daemon.pid)

    terminated: list[int] = []
    for round_ in range(2):
        floor = done_by(target) + 10
        cluster.wait(
            lambda f=floor: done_by(target) >= f,  # type: ignore[misc]
            f"daemon {target.name} to do 10 more tasks (round {round_ + 1})",
            alive=daemons,
        )
        terminated.append(cluster.terminate(target))
    done_before = done_by(target)
    cluster.wait(lambda: cluster.waiting() == 0, "every task to end", timeout=60, alive=daemons)
    for daemon in daemons:
        daemon.stop(tracebacks=daemon is target)

    assert sum(terminated) >= 1, terminated
    rows = cluster.rows()
    statuses = Counter(r["status"] for r in rows)
    assert statuses == {"finished": len(ids)}, statuses
    lines = cluster.lines()
    done = Counter(e["label"] for e in lines if e["event"] == "done")
    assert done == {f"t{i}": 1 for i in range(len(ids))}, {k: v for k, v in done.items() if v != 1}
    assert execute_problems(lines) == []
    outages = {
        task.name
        for task in cluster.client.list_tasks(limit=len(ids))
        if any("ended by a storage outage" in e.message for e in cluster.client.events(task.id))
    }
    assert repeat_problems(lines, outages=outages) == []
    assert invariant_problems(cluster) == []
    changes = Counter(e["label"] for e in lines if e["event"] == "change")
    attempts = {
        a.params["label"]: a.attempts
        for t in cluster.client.list_tasks(limit=len(ids))
        for a in t.actions
        if a.attempts
    }
    assert attempts == dict(changes), (attempts, changes)  # every recovery was counted
    redone = sum(1 for e in lines if e["event"] == "redo")
    complaints = [ln[-160:] for ln in target.log().splitlines() if " ERROR " in ln or "WARN" in ln]
    print(
        f"\n[scale-out] pg_terminate_backend of daemon {target.name}'s connections twice "
        f"({terminated} backends): {len(ids)} tasks finished; recovered after a death: "
        f"{dict(changes) or 'none'}; redo lines {redone}; tasks done by {target.name}: "
        f"{done_before} before the end of the second termination, {done_by(target)} in all; "
        f"its first warnings and errors: {complaints[:6]}"
    )


# -- a worker frozen inside a transaction -------------------------------------------------


def stop_holding_the_row(cluster: Cluster, daemon: Daemon, task_id: int) -> None:
    """SIGSTOP `daemon` at an instant when one of its connections is inside a
    transaction that locked the task's row (a checkpoint, a heartbeat, the claim)."""
    for attempt in range(500):
        daemon.signal_all(signal.SIGSTOP)
        if cluster.row_locked(task_id):
            return
        daemon.signal_all(signal.SIGCONT)
        # Let it run a little: stopped again at once, it would hardly move, and could stay
        # outside a transaction every time.
        time.sleep(0.001 * (attempt % 20))
    pytest.fail(f"daemon {daemon.name} never caught inside a transaction\n{daemon.describe()}")


def test_worker_stopped_inside_a_transaction_is_taken_over_after_the_lease(
    server_cluster: Cluster,
) -> None:
    cluster = server_cluster
    daemons = [cluster.start(name, lease="1s", workers=1) for name in ("a", "b")]
    cluster.started(*daemons)
    # A checkpoint after every (empty) unit: the worker is in a transaction most of the time.
    task_id = cluster.enqueue("frozen", units=100_000, unit_ms=0)
    first_unit = cluster.first_line("unit", "frozen", alive=daemons)
    owner = cluster.by_pid(first_unit["pid"])
    (other,) = [d for d in daemons if d is not owner]

    stop_holding_the_row(cluster, owner, task_id)
    try:
        taken = cluster.eventually(
            lambda: cluster.row(task_id)["claim_token"] >= 2,
            "another daemon to claim the task",
            timeout=6,  # the lease is 1 s, the other daemon looks every second
            alive=[other],
        )
        locked = cluster.row_locked(task_id)
        states = cluster.backend_states(owner)
    finally:
        owner.signal_all(signal.SIGCONT)
    assert taken, (
        f"6 s after SIGSTOP (lease 1 s) the task is still claimed by the stopped worker "
        f"(claim_token {cluster.row(task_id)['claim_token']}); its row locked by the stopped "
        f"process: {locked}; its sessions: {states}"
    )
    # Woken past its lease, the stale worker's run exits at once (another daemon has the
    # task); the daemon goes on.
    fenced(owner)
    assert "exiting now" in owner.log(), owner.describe()


# -- cancel while a worker executes the task ---------------------------------------------------


def test_cancel_of_a_claimed_task_waits_for_its_checkpoint(cluster: Cluster, bgx: Bgx) -> None:
    (daemon,) = daemons = [cluster.start("a", lease="2s")]
    cluster.started(daemon)
    task_id = cluster.enqueue("cancelled", units=3, unit_ms=3000)  # a checkpoint every 3 s
    cluster.first_line("enter", "cancelled", alive=daemons)
    result = bgx.ok("--database-url", cluster.url, "cancel", task_id)
    status = cluster.status(task_id)
    lines = cluster.lines("cancelled")
    assert pids_of(lines, "exit") == [], "too slow: the execute has already left its unit"
    cluster.wait(
        lambda: pids_of(cluster.lines("cancelled"), "exit") != [], "its checkpoint", alive=daemons
    )
    daemon.stop()
    outcome = [e["outcome"] for e in cluster.lines("cancelled") if e["event"] == "exit"]
    assert outcome == ["Cancelled"], outcome
    assert cluster.status(task_id) == "cancelled"
    assert status == "running", (
        f"`bgtaskex cancel` said {result.stdout.strip()!r} and ended the task ({status}) "
        "while a worker was inside its execute"
    )
