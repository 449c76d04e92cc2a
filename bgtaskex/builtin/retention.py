"""Retention rules at work: the `PurgeRows` action, and the functions behind
`bgtaskex rules` and the `retention` process.

A walk (one task per rule) fixes at its start the cut-off date and the range of keys to
visit, then deletes chunk after chunk, each chunk one transaction on the application's
database (child rows first), and saves its cursor after each commit: a crash loses at
most the chunk in flight, and nothing is deleted twice since deleted rows are gone.

A chunk that fails (a trigger, a constraint, a lock timeout) is rolled back and its
error propagates: the engine's recovery calls `change_params_on_error`, which halves the
chunk; at one row the failing row is skipped and recorded; then the chunk grows back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from ..action import Action
from ..models import ACTIVE_STATUSES, Task, TaskFilter
from ..rules import (
    MAX_CHUNK_SIZE,
    PURGE_ACTION,
    RETENTION_PROCESS,
    RETENTION_QUEUE,
    ChildTable,
    RetentionRule,
)
from ..walltime import local_zone

if TYPE_CHECKING:
    from ..client import Client
    from .purge import Preview, Target

log = logging.getLogger("bgtaskex.retention")

HOOK_GROUP = "bgtaskex.purge_hooks"
MAX_SKIPPED_KEPT = 1000  # skipped rows listed in params; the count goes on beyond

Hook = Callable[[str, list[int]], object]


def load_hooks(rule: RetentionRule) -> list[tuple[str, Hook]]:
    """The rule's `hooks`, then every hook of the `bgtaskex.purge_hooks` entry points."""
    from importlib.metadata import entry_points

    from ..registry import load_callable

    hooks: list[tuple[str, Hook]] = [
        (ref, load_callable(ref, f"retention rule {rule.name!r}: hook")) for ref in rule.hooks
    ]
    for entry in entry_points(group=HOOK_GROUP):
        hooks.append((entry.value, entry.load()))
    return hooks


def call_hooks(hooks: Sequence[tuple[str, Hook]], table: str, keys: list[int]) -> None:
    """Tell every hook which keys of `table` went away; a hook that raises is logged and
    the others are still called (the rows are deleted: that cannot be undone)."""
    for ref, hook in hooks:
        try:
            hook(table, list(keys))
        except Exception:
            log.exception("purge hook %s raised on %d keys of %s", ref, len(keys), table)


class PurgeRows(Action):
    """Delete the rows a retention rule selects, in chunks, resumably.

    Params: `rule` (its name in the config); optionally `chunk_size`. The rest is the
    walk's state, written by the action: the rule as it was at the start (`definition`,
    `cutoff`), the key range (`low`, `high`), the cursor (`after`), `deleted`, `skipped`.
    """

    description = "Delete old rows of a table in resumable chunks (a retention rule)"
    # Each halving of a failing chunk is one death of execute: many bad rows need many.
    max_attempts: ClassVar[int | None] = 1000
    #: No retry delay: halving the chunk after each death is its backoff.
    retry_delay: ClassVar[float | None] = 0.0

    # -- hooks of the engine -----------------------------------------------------------

    def init_params(self) -> bool:
        rule = self.settings.retention_rule(str(self.params.get("rule")))
        from .purge import bind, default_cutoff

        cutoff = default_cutoff(rule) if rule.older_than is not None else None
        target = bind(rule, self.settings.url, cutoff)
        try:
            preview = target.preview(sample=0)
        finally:
            target.engine.dispose()
        wanted = self.params.get("chunk_size")
        size = wanted if isinstance(wanted, int) and not isinstance(wanted, bool) else 0
        size = min(MAX_CHUNK_SIZE, size) if size > 0 else rule.chunk_size
        self.params.update(
            definition=_definition(rule),
            cutoff=cutoff.isoformat() if cutoff else None,
            key=preview.key,
            total=preview.count,
            low=preview.low,
            high=preview.high,
            after=None if preview.low is None else preview.low - 1,
            chunk_size=size,
            max_chunk_size=size,
            deleted=0,
            skipped=[],
            skipped_count=0,
        )
        if preview.count == 0:
            return False
        self.progress(0, preview.count, f"{rule.table}: {preview.count} rows to delete")
        return True

    def change_params_on_error(self) -> bool:
        from ..exceptions import ConfigError

        try:
            self.settings.retention_rule(str(self.params.get("rule")))
        except ConfigError as err:
            log.error("%s: giving up", err)
            return False  # the rule left the config: the walk fails
        failed = self.params.get("failed_chunk") or {}
        if failed.get("unavailable"):
            self.params.pop("failed_chunk")
            return True  # the database was out of reach, no row is to blame: retry as is
        size = int(failed.get("size") or self.params["chunk_size"])
        if size > 1:
            self.params["chunk_size"] = size // 2
            self.params.pop("failed_chunk", None)
        else:
            self.params["skip_next"] = True
        return True

    def execute(self, deadline: float) -> bool:
        from ..exceptions import DatabaseUnavailable

        try:
            target = self._target()
            try:
                with target.session(deadline - time.time()):
                    return self._walk(target, deadline)
            finally:
                target.engine.dispose()
        except DatabaseUnavailable as err:
            # Out of reach: no row is to blame (change_params_on_error retries as is).
            self.params["failed_chunk"] = {"unavailable": True, "error": str(err)}
            self.checkpoint()
            raise

    def _walk(self, target: Target, deadline: float) -> bool:
        hooks = load_hooks(target.rule)
        skip = self.params.pop("skip_next", False)
        inflight = self.params.get("inflight")
        if inflight is not None:
            left = self._settle(target, hooks)
            # A chunk of one row died: skip that row, unless it went after all (the
            # death came after the commit). No chunk in flight: no row to blame.
            if skip and left and inflight["count"] == 1:
                self._skip(inflight["last"])
        slowest = 0.0
        while self.params["after"] < self.params["high"]:
            now = time.time()
            if now + slowest >= deadline or self.should_stop():
                return False
            if not self._chunk(target, hooks):
                break
            slowest = max(slowest * 0.9, time.time() - now)
        self.params["after"] = self.params["high"]
        self._report(target.rule.table)
        return True

    # -- the walk ----------------------------------------------------------------------

    def _target(self) -> Target:
        from .purge import bind

        current = self.settings.retention_rule(str(self.params["rule"]))
        rule = _rule_of(current, self.params["definition"])
        cutoff = self.params.get("cutoff")
        return bind(rule, self.settings.url, datetime.fromisoformat(cutoff) if cutoff else None)

    def _chunk(self, target: Target, hooks: Sequence[tuple[str, Hook]]) -> bool:
        """Delete one chunk; False when no row is left in the range."""
        p = self.params
        size = int(p["chunk_size"])
        try:
            with target.reading() as conn:
                keys = target.candidates(conn, p["after"], p["high"], size, lock=False)
            if not keys:
                return False
            last = keys[-1]
            # Write ahead what the chunk may delete, so that a crash between its commit
            # and the next save still counts it and tells the hooks (see _settle).
            p["inflight"] = {"last": last, "count": len(keys), **({"keys": keys} if hooks else {})}
            self.checkpoint()
            with target.writing() as conn:
                gone = target.lock_range(conn, p["after"], last)
                if set(gone) <= set(keys):
                    target.delete_range(conn, p["after"], last)
                else:  # a row came to match meanwhile: leave it to the next walk
                    gone = sorted(set(gone) & set(keys))
                    target.delete(conn, gone)
        except Exception as err:
            from ..exceptions import DatabaseUnavailable
            from ..store.engine import first_line

            p["failed_chunk"] = {"after": p["after"], "size": size, "error": first_line(err)}
            if isinstance(err, DatabaseUnavailable) or getattr(
                err, "connection_invalidated", False
            ):
                p["failed_chunk"]["unavailable"] = True  # not the fault of a row
            self.checkpoint()
            raise
        call_hooks(hooks, target.rule.table, gone)
        p.pop("inflight")
        p.pop("failed_chunk", None)
        p["after"] = last
        p["deleted"] += len(gone)
        p["chunk_size"] = min(int(p["max_chunk_size"]), size * 2)
        self._report(target.rule.table)
        self.checkpoint()
        return True

    def _settle(self, target: Target, hooks: Sequence[tuple[str, Hook]]) -> int:
        """After a crash or an error between the write-ahead of a chunk and its end: if
        it committed, its rows are gone: count them and tell the hooks. Rows still there
        are met again by the walk, whose cursor did not move. Returns how many rows the
        chunk would still delete."""
        p = self.params
        inflight = p.pop("inflight")
        with target.reading() as conn:
            left = target.count(conn, p["after"], inflight["last"])
        if "keys" in inflight:
            keys = list(inflight["keys"])
            gone = sorted(set(keys) - target.existing(keys))
            if gone:
                call_hooks(hooks, target.rule.table, gone)
            p["deleted"] += len(gone)
        else:
            p["deleted"] += max(0, int(inflight["count"]) - left)
        self.checkpoint()
        return left

    def _skip(self, key: int) -> None:
        """The chunk of one row, `key`, failed: record that row and step over it."""
        p = self.params
        failed = p.pop("failed_chunk", None) or {}
        error = failed.get("error") or "the run died while deleting it"
        if len(p["skipped"]) < MAX_SKIPPED_KEPT:
            p["skipped"].append({"key": key, "error": error})
        p["skipped_count"] += 1
        p["after"] = key
        message = f"skipped row {p['definition']['table']}.{p['key']}={key}: {error}"
        log.warning("retention rule %s: %s", p["rule"], message)
        self.note(message)
        self.checkpoint()

    def _report(self, table: str) -> None:
        p = self.params
        done = p["deleted"] + p["skipped_count"]
        skipped = f", {p['skipped_count']} skipped" if p["skipped_count"] else ""
        self.progress(done, max(p["total"], done), f"{table}: {p['deleted']} deleted{skipped}")


def _definition(rule: RetentionRule) -> dict[str, Any]:
    """What the walk deletes, fixed at its start (no database URL: it may hold a secret)."""
    return {
        "table": rule.table,
        "date_column": rule.date_column,
        "older_than": rule.older_than,
        "where": rule.where,
        "params": dict(rule.params),
        "also_delete": [{"table": c.table, "column": c.column} for c in rule.also_delete],
    }


def _rule_of(current: RetentionRule, definition: dict[str, Any]) -> RetentionRule:
    """The rule as it was when the walk began, with today's database and hooks."""
    return replace(
        current,
        table=definition["table"],
        date_column=definition["date_column"],
        older_than=definition["older_than"],
        where=definition["where"],
        params=tuple(sorted(definition["params"].items())),
        also_delete=tuple(ChildTable(c["table"], c["column"]) for c in definition["also_delete"]),
    )


# -- what `bgtaskex rules` and the retention process do ------------------------------


@dataclass(frozen=True, slots=True)
class RuleStatus:
    """A rule and its latest task."""

    rule: RetentionRule
    last: Task | None

    @property
    def active(self) -> bool:
        return self.last is not None and self.last.status in ACTIVE_STATUSES


def rule_status(client: Client, rule: RetentionRule) -> RuleStatus:
    tasks = client.list_tasks(TaskFilter(name_glob=rule.task_name), limit=1)
    return RuleStatus(rule, tasks[0] if tasks else None)


def rule_statuses(client: Client) -> list[RuleStatus]:
    return [rule_status(client, rule) for rule in client.settings.retention_rules]


def preview(client: Client, name: str, sample: int = 10) -> Preview:
    """What rule `name` would delete as of now (checks it against its database)."""
    from .purge import bind

    rule = client.settings.retention_rule(name)
    target = bind(rule, client.settings.url)
    try:
        return target.preview(sample)
    finally:
        target.engine.dispose()


def check_rule(client: Client, name: str) -> None:
    """Check rule `name` against its database (RuleError, DatabaseUnavailable)."""
    from .purge import bind

    bind(client.settings.retention_rule(name), client.settings.url).engine.dispose()


def queue_rule(
    client: Client, name: str, *, queue: str = RETENTION_QUEUE, check: bool = True
) -> tuple[int, bool]:
    """Queue a walk of rule `name`: (task id, True), or (id of the walk already queued or
    running, False). `check` first reflects the database, so a bad rule is refused now."""
    rule = client.settings.retention_rule(name)
    status = rule_status(client, rule)
    if status.active and status.last is not None:
        return status.last.id, False
    if check:
        check_rule(client, name)
    task_id = client.enqueue(rule.task_name, [(PURGE_ACTION, {"rule": rule.name})], queue=queue)
    return task_id, True


def queue_due_rules(client: Client) -> list[int]:
    """The `retention` process's callable: queue each enabled rule once per opening of
    the process's window (once a day without a window), unless its walk is still going."""
    now = datetime.now(UTC)
    process = client.settings.process(RETENTION_PROCESS)
    queue = (process.queues or (RETENTION_QUEUE,))[0]
    since = now - timedelta(days=1)
    if process.window is not None:
        local = now.astimezone(local_zone())  # DST rules, not a fixed offset
        end = process.window.window_end(local)
        if end is not None:
            since = process.window.window_start(local) or since
    queued = []
    for rule in client.settings.retention_rules:
        if not rule.enabled:
            continue
        status = rule_status(client, rule)
        if status.active or (status.last is not None and status.last.created_at >= since):
            continue
        try:
            task_id, _ = queue_rule(client, rule.name, queue=queue, check=False)
        except Exception:
            log.exception("retention rule %s: cannot queue it", rule.name)
            continue
        log.info("retention rule %s: queued task %s", rule.name, task_id)
        queued.append(task_id)
    return queued
