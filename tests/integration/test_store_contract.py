"""The storage contract (`bgtaskex.store.contract.RunStorage`): each guarantee its
docstrings state, checked on SQLite, PostgreSQL and MariaDB (the `store` fixture)."""

from __future__ import annotations

import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text, update

from bgtaskex import tables as t
from bgtaskex.exceptions import ClaimLost, ConfigError, TaskInterrupted
from bgtaskex.models import (
    ActionChange,
    ActionStatus,
    Change,
    NewAction,
    RunStart,
    RunSummary,
    Task,
    TaskStatus,
    TaskType,
)
from bgtaskex.owner import holder_name, running
from bgtaskex.plan import Routing
from bgtaskex.store import Store
from bgtaskex.store.contract import RunStorage
from bgtaskex.store.runs import COUNTS

NOOP = "tests.scripted:Noop"


def enqueue(
    store: Store,
    name: str = "t",
    type_: TaskType = TaskType.CRON,
    n: int = 1,
    queue: str = "default",
) -> int:
    return store.enqueue(name, type_, queue, [NewAction(NOOP, {"i": i}) for i in range(n)])


def set_status(store: Store, task_id: int, status: TaskStatus, rank: int | None = None) -> None:
    store.apply(Change(task_id, "setup", status=status, current_rank=rank))


def claimed_after_lease(store: Store, worker: str, run_id: str) -> Task:
    """Claim again until the (short) lease held on the only due task has run out: the
    database's clock decides when."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        task = store.claim(worker, run_id, 60)
        if task is not None:
            return task
        time.sleep(0.05)
    raise AssertionError("the lease never ran out")


def test_store_satisfies_the_protocol(store: Store) -> None:
    storage: RunStorage = store  # mypy checks this assignment: Store is a RunStorage
    assert storage.dialect == store.dialect


# -- next_task ------------------------------------------------------------------------


def test_next_task_follows_run_order_and_exclude(store: Store) -> None:
    assert store.next_task() is None
    cron = enqueue(store, "cron", n=2)
    recovering = enqueue(store, "recovering")
    inter = enqueue(store, "interactive", TaskType.INTERACTIVE)
    done = enqueue(store, "done")
    set_status(store, recovering, TaskStatus.RECOVERING, 1)
    set_status(store, done, TaskStatus.FINISHED)

    order = []
    seen: set[int] = set()
    while (task := store.next_task(exclude=seen)) is not None:
        order.append(task.id)
        seen.add(task.id)
    assert order == [inter, recovering, cron]
    first = store.next_task()
    assert first is not None and first.id == inter
    with_actions = store.next_task(exclude=[inter, recovering])
    assert with_actions is not None
    assert [a.rank for a in with_actions.actions] == [1, 2]
    assert store.has_due_tasks()
    for tid in (cron, recovering, inter):
        set_status(store, tid, TaskStatus.FAILED)
    assert store.next_task() is None
    assert not store.has_due_tasks()


def test_next_task_serves_only_the_routed_queues(store: Store) -> None:
    a = enqueue(store, "a", queue="a")
    b = enqueue(store, "b", queue="b")
    c = enqueue(store, "c", queue="c")

    def found(routing: Routing | None) -> list[int]:
        ids: list[int] = []
        while (task := store.next_task(exclude=ids, routing=routing)) is not None:
            ids.append(task.id)
        return ids

    assert found(None) == found(Routing()) == [a, b, c]
    assert found(Routing(("b", "c"))) == [b, c]
    assert found(Routing(None, ("a",))) == [b, c]
    assert found(Routing(("a", "b"), ("b",))) == [a]
    assert found(Routing((), ())) == []


def test_next_task_skips_a_run_s_own_tasks_a_given_task_and_live_leases(store: Store) -> None:
    first, second, third = (enqueue(store, f"t{i}") for i in range(3))
    store.apply(Change(first, "run-a", status=TaskStatus.PAUSED))
    assert store.next_task(skip_run="run-a").id == second  # type: ignore[union-attr]
    assert store.next_task(skip_run="run-b").id == first  # type: ignore[union-attr]
    assert store.next_task(skip_task=first).id == second  # type: ignore[union-attr]
    held = store.claim("w", "run-c", 60)
    assert held is not None and held.id == first
    assert store.next_task().id == second  # type: ignore[union-attr]
    assert store.next_task(exclude=[second]).id == third  # type: ignore[union-attr]


# -- claim, heartbeat, release ---------------------------------------------------------


def test_claim_takes_the_first_free_task_and_bumps_its_token(store: Store) -> None:
    cron = enqueue(store, "cron", queue="q")
    inter = enqueue(store, "interactive", TaskType.INTERACTIVE)
    assert store.claim("w", "run-a", 60, routing=Routing(("elsewhere",))) is None
    first = store.claim("w1", "run-a", 60)
    assert first is not None and first.id == inter
    assert (first.claimed_by, first.claim_token, first.last_run_id) == ("w1", 1, "run-a")
    assert first.lease_until is not None
    assert [a.rank for a in first.actions] == [1]
    assert store.claim("w2", "run-b", 60, exclude=[cron]) is None, "a live lease holds it"
    second = store.claim("w2", "run-b", 60, routing=Routing(("q",)))
    assert second is not None and second.id == cron
    assert store.claim("w3", "run-c", 60) is None


def test_a_run_never_claims_a_task_twice(store: Store) -> None:
    task_id = enqueue(store)
    claimed = store.claim("w", "run-a", 60)
    assert claimed is not None
    store.release(task_id, claimed.claim_token)
    assert store.claim("w", "run-a", 60) is None
    again = store.claim("w", "run-b", 60)
    assert again is not None and (again.id, again.claim_token) == (task_id, 2)


def test_claim_skips_a_live_lease_and_takes_over_an_expired_one(store: Store) -> None:
    task_id = enqueue(store)
    old = store.claim("old", "run-old", 0.3)
    assert old is not None and old.claim_token == 1
    assert store.claim("new", "run-new", 60) is None
    new = claimed_after_lease(store, "new", "run-new")
    assert (new.id, new.claimed_by, new.claim_token) == (task_id, "new", 2)


def test_heartbeat_extends_a_claim_and_is_false_after_a_takeover(store: Store) -> None:
    task_id = enqueue(store)
    old = store.claim("old", "run-old", 0.3)
    assert old is not None
    assert store.heartbeat(task_id, old.claim_token, 0.3)
    new = claimed_after_lease(store, "new", "run-new")
    assert not store.heartbeat(task_id, old.claim_token, 60)
    after = store.get_task(task_id)
    assert (after.claimed_by, after.claim_token) == ("new", new.claim_token)
    assert store.heartbeat(task_id, new.claim_token, 60)


def test_release_frees_the_task_and_a_stale_release_does_nothing(store: Store) -> None:
    task_id = enqueue(store)
    old = store.claim("old", "run-old", 60)
    assert old is not None
    store.release(task_id, old.claim_token)
    assert store.get_task(task_id).lease_until is None
    assert not store.heartbeat(task_id, old.claim_token, 60), "a released claim stays ended"
    new = store.claim("new", "run-new", 60)
    assert new is not None and new.claim_token == old.claim_token + 1
    store.release(task_id, old.claim_token)  # stale: the new claim stays
    held = store.get_task(task_id)
    assert held.lease_until is not None and held.claimed_by == "new"


# -- apply -----------------------------------------------------------------------------


def test_apply_is_fenced_by_the_claim_token(store: Store) -> None:
    task_id = enqueue(store)
    old = store.claim("old", "run-old", 60)
    assert old is not None
    store.apply(Change(task_id, "run-old", status=TaskStatus.RUNNING, current_rank=1, token=1))
    with store._engine.begin() as conn:  # what another worker's takeover does to the row
        conn.execute(
            text("UPDATE bgtaskex_tasks SET claim_token = claim_token + 1 WHERE id = :id"),
            {"id": task_id},
        )
    with pytest.raises(ClaimLost):
        store.apply(
            Change(task_id, "run-old", status=TaskStatus.PAUSED, token=1),
            Change(task_id, "run-old", actions=(ActionChange(1, status=ActionStatus.DONE),)),
        )
    task = store.get_task(task_id)
    assert (task.status, task.actions[0].status) == (TaskStatus.RUNNING, ActionStatus.PENDING)
    store.apply(Change(task_id, "run-old", status=TaskStatus.PAUSED, token=2, release=True))
    after = store.get_task(task_id)
    assert (after.status, after.lease_until) == (TaskStatus.PAUSED, None)


def test_apply_claim_as_takes_the_claim_unless_another_lease_lives(store: Store) -> None:
    task_id = enqueue(store)
    found = store.next_task()
    assert found is not None and found.claim_token == 0
    claim = Change(task_id, "run-a", status=TaskStatus.STARTING, token=0, claim_as="w", lease=60)
    store.apply(claim)
    held = store.get_task(task_id)
    assert (held.claimed_by, held.claim_token) == ("w", 1)
    store.release(task_id, 1)
    other = store.claim("other", "run-b", 60)
    assert other is not None and other.claim_token == 2
    with pytest.raises(ClaimLost):
        store.apply(
            Change(task_id, "run-c", status=TaskStatus.STARTING, token=2, claim_as="w", lease=60)
        )


def test_apply_raises_task_interrupted_once_a_cancel_is_requested(store: Store) -> None:
    task_id = enqueue(store)
    claimed = store.claim(f"{holder_name()}/live.0", "live", 60)
    assert claimed is not None
    set_running = Change(task_id, "live", status=TaskStatus.RUNNING, current_rank=1, token=1)
    store.apply(set_running)
    with running("live"):  # the claim's holder is alive: the cancel is only requested
        assert store.admin.cancel(task_id, executing=lambda: False) is False
    with pytest.raises(TaskInterrupted):
        store.apply(Change(task_id, "live", status=TaskStatus.PAUSED, token=1))
    assert store.get_task(task_id).status == TaskStatus.RUNNING
    with pytest.raises(TaskInterrupted):
        store.apply(Change(task_id, "other", status=TaskStatus.FINISHED))


def test_apply_raises_task_interrupted_on_an_ended_task(store: Store) -> None:
    task_id = enqueue(store)
    set_status(store, task_id, TaskStatus.FINISHED)
    with pytest.raises(TaskInterrupted):
        set_status(store, task_id, TaskStatus.RUNNING, 1)
    assert store.get_task(task_id).status == TaskStatus.FINISHED


# -- end_cancelled ---------------------------------------------------------------------


def test_end_cancelled_ends_the_task_and_saves_the_params(store: Store) -> None:
    task_id = enqueue(store, n=2)
    store.apply(
        Change(
            task_id,
            "run-a",
            status=TaskStatus.RUNNING,
            current_rank=1,
            actions=(ActionChange(1, status=ActionStatus.ACTIVE),),
        )
    )
    store.end_cancelled(task_id, "run-a", 1, {"saved": True})
    task = store.get_task(task_id)
    assert task.status == TaskStatus.CANCELLED and task.ended_at is not None
    assert [a.status for a in task.actions] == [ActionStatus.CANCELLED] * 2
    assert task.actions[0].params == {"saved": True}
    last = store.events(task_id)[-1]
    assert (last.run_id, last.old_status, last.new_status) == ("run-a", "running", "cancelled")
    assert not store.has_due_tasks()
    events = len(store.events(task_id))
    store.end_cancelled(task_id, "run-b", None, None)  # ended already: nothing happens
    assert len(store.events(task_id)) == events
    finished = enqueue(store)
    set_status(store, finished, TaskStatus.FINISHED)
    store.end_cancelled(finished, "run-b", None, None)
    assert store.get_task(finished).status == TaskStatus.FINISHED


# -- reap_dead_claims ------------------------------------------------------------------


def test_reap_dead_claims_releases_only_the_dead_holders(store: Store) -> None:
    dead, live, elsewhere = enqueue(store, "dead"), enqueue(store, "live"), enqueue(store, "x")
    me = holder_name()
    with running("live-run"):
        for task_id, worker in (
            (dead, f"{me}/dead-run.0"),
            (live, f"{me}/live-run.0"),
            (elsewhere, f"other-host:1:{me.partition(':')[2].partition(':')[2]}/r.0"),
        ):
            change = Change(task_id, "r", token=0, claim_as=worker, lease=60)
            store.apply(change)
        assert store.reap_dead_claims() == [dead]
        assert store.get_task(dead).lease_until is None
        assert store.get_task(live).lease_until is not None
        assert store.get_task(elsewhere).lease_until is not None
        assert store.reap_dead_claims() == []


# -- purge_expired ---------------------------------------------------------------------


def test_purge_expired_deletes_only_ended_tasks_past_their_keep(store: Store) -> None:
    finished, failed, waiting = enqueue(store), enqueue(store), enqueue(store)
    set_status(store, finished, TaskStatus.FINISHED)
    set_status(store, failed, TaskStatus.FAILED)
    later = time.time() + 60
    keep = {"finished": 3600.0, "failed": 3600.0, "created": 0.0}
    assert store.purge_expired(keep, deadline=later) == 0  # ended just now; not ended
    assert store.purge_expired({"finished": 0.0}, deadline=later) == 1
    assert store.purge_expired({"failed": 0.0}, deadline=time.time() - 1) == 0  # past it
    assert {t.id for t in store.list_tasks()} == {failed, waiting}
    assert store.purge_expired({"failed": 0.0, "created": 0.0}, deadline=later) == 1
    assert [t.id for t in store.list_tasks()] == [waiting]
    assert store.events(waiting)


def _run_start(run_id: str, started_at: datetime | None = None) -> RunStart:
    return RunStart(
        run_id=run_id,
        process="nightly",
        holder=f"{holder_name()}/{run_id}",
        host="h",
        pid=4242,
        lock="file",
        started_at=started_at or datetime.now(UTC),
        budget=30.0,
    )


def _age_run(store: Store, record: int, seconds: float) -> None:
    """Move a run record's start and end `seconds` into the past."""
    with store._engine.begin() as conn:
        then = datetime.now(UTC) - timedelta(seconds=seconds)
        conn.execute(
            update(t.runs).where(t.runs.c.id == record).values(started_at=then, ended_at=then)
        )


def test_purge_expired_deletes_run_records_past_the_same_keep(store: Store) -> None:
    ok, failed, storage, died = (store.run_started(_run_start(f"r{i}")) for i in range(4))
    store.run_ended(ok, "ok", RunSummary("r0"))
    store.run_ended(failed, "failed", RunSummary("r1"), "boom")
    store.run_ended(storage, "storage", RunSummary("r2"), "gone")
    going = store.run_started(_run_start("r4"))  # a run going on now
    for record in (ok, failed, storage, died):
        _age_run(store, record, 7200)
    with store._engine.begin() as conn:  # a died run keeps no end
        conn.execute(update(t.runs).where(t.runs.c.id == died).values(ended_at=None))
    later = time.time() + 60

    def kept() -> set[int]:
        return {r.id for r in store.runs.recent(limit=100)}

    store.purge_expired({"finished": 3 * 3600.0, "failed": 3 * 3600.0}, deadline=later)
    assert kept() == {ok, failed, storage, died, going}
    store.purge_expired({"finished": 3600.0}, deadline=later)  # ok runs as finished tasks
    assert kept() == {failed, storage, died, going}
    store.purge_expired({"failed": 3600.0}, deadline=later)  # the others as failed ones
    assert kept() == {died, going}  # a "running" record stays a day at least
    _age_run(store, died, 2 * 86400)
    store.purge_expired({"failed": 0.0}, deadline=later)
    assert kept() == {going}  # never a run going on, whatever `keep` says


# -- run_started and run_ended ---------------------------------------------------------


def test_run_started_commits_a_running_record_and_run_ended_its_end(store: Store) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    with store.bound():
        record = store.run_started(_run_start("abcd1234"))
        other = Store(store.url)
        try:
            (seen,) = other.runs.recent()  # committed at once, seen from another session
        finally:
            other.close()
    assert (seen.id, seen.run_id, seen.outcome, seen.ended_at) == (
        record,
        "abcd1234",
        "running",
        None,
    )
    assert (seen.process, seen.host, seen.pid, seen.lock, seen.budget) == (
        "nightly",
        "h",
        4242,
        "file",
        30.0,
    )
    assert seen.started_at >= before
    done = RunSummary(
        "abcd1234", finished=3, paused=1, failed=2, errors=1, cancelled=1, lost=1,
        actions=9, left_waiting=4, purged=5, max_overrun=1.5,
    )  # fmt: skip
    store.run_ended(record, "storage", done, "StorageError: gone")
    (ended,) = store.runs.recent()
    assert ended.outcome == "storage" and ended.error == "StorageError: gone"
    assert ended.ended_at is not None and ended.ended_at >= seen.started_at
    counts = [getattr(ended, name) for name in COUNTS]
    assert counts == [3, 1, 2, 1, 1, 1, 9, 4, 5] and ended.max_overrun == 1.5


# -- bound and cluster_lock ------------------------------------------------------------


def test_bound_runs_every_transaction_on_one_connection_and_still_commits(
    store: Store,
) -> None:
    with store.bound():
        conn = store._local.conn
        with store.bound():  # nested: the same connection
            assert store._local.conn is conn
            task_id = enqueue(store)
        assert store.get_task(task_id).status == TaskStatus.CREATED
    assert store._local.conn is None
    other = Store(store.url)
    try:
        assert other.get_task(task_id).id == task_id  # committed
    finally:
        other.close()


def test_cluster_lock_is_one_at_a_time(store: Store) -> None:
    if store.dialect == "sqlite":
        with pytest.raises(ConfigError), store.cluster_lock():
            pass
        return
    from bgtaskex.exceptions import LockBusy

    other = Store(store.url)
    try:
        with ExitStack() as stack:
            still_held = stack.enter_context(store.cluster_lock())
            assert still_held()
            assert store.admin.cluster_lock_held()
            with pytest.raises(LockBusy), other.cluster_lock(wait=0.3):
                pass
        assert not store.admin.cluster_lock_held()
        with other.cluster_lock() as held_by_other:
            assert held_by_other()
    finally:
        other.close()
