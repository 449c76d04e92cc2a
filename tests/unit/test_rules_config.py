"""Retention rules in the config: what is accepted, what is refused with which line, and
the `retention` process they bring."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bgtaskex.config import load_settings
from bgtaskex.exceptions import ConfigError
from bgtaskex.rules import DEFAULT_RETENTION_PROCESS, PLANNER, RETENTION_QUEUE, ChildTable


def settings_of(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "bgtaskex.toml"
    path.write_text(text)
    return load_settings(path, environ={})


FULL = """
[[retention_rules]]
name = "old_tickets"
database = "postgresql+psycopg://app:s3cret@db/app"
table = "tickets"
date_column = "created_at"
older_than = "90d"
where = "status = :status"
params = { status = "closed" }
also_delete = [
  { table = "ticket_comments", column = "ticket_id" },
  { table = "ticket_links", column = "ticket_id" },
]
chunk_size = 500
hooks = ["myapp.hooks:forget"]

[[retention_rules]]
name = "logs"
table = "audit.log_entries"
where = "level = 'debug'"
enabled = false
"""


def test_a_full_rule_is_read_as_written(tmp_path: Path) -> None:
    settings = settings_of(tmp_path, FULL)
    rule = settings.retention_rule("old_tickets")
    assert rule.database == "postgresql+psycopg://app:s3cret@db/app"
    assert (rule.table, rule.date_column, rule.older_than) == ("tickets", "created_at", 90 * 86400)
    assert rule.where == "status = :status" and rule.params == (("status", "closed"),)
    assert rule.also_delete == (
        ChildTable("ticket_comments", "ticket_id"),
        ChildTable("ticket_links", "ticket_id"),
    )
    assert (rule.chunk_size, rule.enabled, rule.hooks) == (500, True, ("myapp.hooks:forget",))
    assert rule.task_name == "retention:old_tickets"
    assert "s3cret" not in rule.describe()
    logs = settings.retention_rule("logs")
    assert (logs.database, logs.chunk_size, logs.enabled, logs.table) == (
        None,
        1000,
        False,
        "audit.log_entries",
    )


def test_an_unknown_rule_name_is_a_config_error(tmp_path: Path) -> None:
    settings = settings_of(tmp_path, FULL)
    with pytest.raises(ConfigError, match=r"no retention rule named 'nope' \(configured: old_"):
        settings.retention_rule("nope")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('table = "t"', "give 'date_column' \\+ 'older_than' or 'where'"),
        ('table = "t"\ndate_column = "d"', "give 'date_column' and 'older_than' together"),
        ('table = "t"\nolder_than = "9d"', "give 'date_column' and 'older_than' together"),
        ('table = "t"\ndate_column = "d"\nolder_than = "soon"', "older_than: expected a dur"),
        ('where = "x = 1"', "'table' must be a table or column name"),
        ('table = "t; drop table x"\nwhere = "1=1"', "'table' must be a table or column name"),
        ('table = "t"\nwhere = "1=1; drop table t"', "'where' must be one condition, without ';'"),
        ("table = 't'\nwhere = \"a = 'x'; b = 1\"", "'where' must be one condition, without ';'"),
        ('table = "t"\nwhere = "a = 1 -- no"', "'where' must be one condition, without comments"),
        ('table = "t"\nwhere = "a = 1 /* no */"', "'where' must be one condition, without comm"),
        ('table = "t"\nwhere = "a = 1 # no"', "'where' must be one condition, without comments"),
        ('table = "t"\nwhere = "a = 1) OR (1 = 1"', "'where' must be one condition, with balanced"),
        ('table = "t"\nwhere = "(a = 1 OR b = 2"', "'where' must be one condition, with balanced"),
        ('table = "t"\nwhere = "a IN (1, 2]"', "'where' must be one condition, with balanced"),
        ("table = 't'\nwhere = \"a = 'x\"", "'where' must be one condition, with its quotes"),
        (  # MySQL reads \' as a quote: there, the comment is outside the string
            "table = 't'\nwhere = '''a = 'x\\' OR b = ' -- ' '''",
            "'where' must be one condition, without comments",
        ),
        (  # PostgreSQL and SQLite read 'x\' as a whole string: the comment is outside
            "table = 't'\nwhere = '''a = 'x\\' -- ' OR b = 'y' '''",
            "'where' must be one condition, without comments",
        ),
        ('table = "t"\nwhere = "a = $$x$$"', r"'where' must be one condition, without '\$'"),
        ('table = "t"\nwhere = ""', "'where' must be an SQL condition"),
        ('table = "t"\nwhere = "a = 1"\nchunk_size = 0', "'chunk_size' must be a whole number"),
        ('table = "t"\nwhere = "a = 1"\nchunk_size = 1e3', "'chunk_size' must be a whole number"),
        ('table = "t"\nwhere = "a = 1"\nenabled = "yes"', "'enabled' must be true or false"),
        ('table = "t"\nwhere = "a = 1"\nhooks = ["nomodule"]', "'hooks' must be a list"),
        ('table = "t"\nwhere = "a = 1"\nalso_delete = ["c"]', "'also_delete' must be a list"),
        ('table = "t"\ndate_column = "d"\nolder_than = "1d"\nparams = {a = 1}', "'params' are"),
        ('table = "t"\nwhere = "a = :a"\nparams = {a = [1]}', "params.a must be a string"),
        ('table = "t"\nwhere = "a = 1"\ncolor = "red"', "unknown key 'color'"),
        (
            'table = "t"\nwhere = "a > :bgtaskex_after"\nparams = {bgtaskex_after = 1}',
            "params.bgtaskex_after: names starting with 'bgtaskex_' are reserved",
        ),
    ],
)
def test_a_bad_rule_is_refused_naming_it(tmp_path: Path, body: str, problem: str) -> None:
    with pytest.raises(
        ConfigError,
        match=r"retention_rules \(from config file .*\): "
        r"retention rule 'r1': " + problem,
    ):
        settings_of(tmp_path, f'[[retention_rules]]\nname = "r1"\n{body}\n')


@pytest.mark.parametrize(
    "where",
    [
        "status = 'closed' OR status = 'spam'",
        "title LIKE '%-- (not a comment; nor this) /* #'",
        "title = 'it''s' AND \"od)d\" = 1 AND `we(ird` = 2",
        "a$b = 1 AND tags[1] = 'x' AND (a = 1 OR (b = 2))",
        "title = 'back\\slash'",
    ],
)
def test_a_where_that_stays_one_term_is_accepted(tmp_path: Path, where: str) -> None:
    rule = f"[[retention_rules]]\nname = 'r1'\ntable = 't'\nwhere = '''{where}'''\n"
    assert settings_of(tmp_path, rule).retention_rule("r1").where == where


@pytest.mark.parametrize("second", ["a", "A"])
def test_two_rules_with_one_name_in_any_case_are_refused(tmp_path: Path, second: str) -> None:
    text = '[[retention_rules]]\nname = "a"\ntable = "t"\nwhere = "1=1"\n'
    text += text.replace('"a"', f'"{second}"')
    with pytest.raises(ConfigError, match="two retention rules are named 'a' \\(in any case\\)"):
        settings_of(tmp_path, text)


def test_rules_bring_the_retention_process_and_the_default_leaves_its_queue(
    tmp_path: Path,
) -> None:
    settings = settings_of(tmp_path, FULL)
    default, retention = settings.scheduled
    assert retention == DEFAULT_RETENTION_PROCESS
    assert retention.queues == (RETENTION_QUEUE,) and retention.callable == PLANNER
    assert retention.max_execution_time == 30
    window = retention.window
    assert window is not None
    assert window.contains(datetime(2026, 11, 29, 1, 0))  # a Sunday
    assert not window.contains(datetime(2026, 11, 29, 23, 31))
    assert not window.contains(datetime(2026, 11, 30, 12, 0))  # a Monday
    assert default.queues is None and default.exclude_queues == (RETENTION_QUEUE,)
    assert settings.claimed_queues == (RETENTION_QUEUE,)


def test_no_rules_no_retention_process(tmp_path: Path) -> None:
    settings = settings_of(tmp_path, "")
    assert [p.name for p in settings.scheduled] == ["default"]
    assert settings.claimed_queues == ()


def test_a_configured_retention_process_gets_the_planner_and_queue(tmp_path: Path) -> None:
    text = FULL + '\n[[processes]]\nname = "retention"\ncron = "*/5 * * * *"\n'
    default, process = settings_of(tmp_path, text).scheduled
    assert default.name == "default" and default.exclude_queues == (RETENTION_QUEUE,)
    assert process.cron == "*/5 * * * *" and process.window is None
    assert process.callable == PLANNER and process.queues == (RETENTION_QUEUE,)


def test_window_start_is_when_the_current_window_opened() -> None:
    window = DEFAULT_RETENTION_PROCESS.window
    assert window is not None
    assert window.window_start(datetime(2026, 11, 29, 12, 0)) == datetime(2026, 11, 29, 1, 0)
    assert window.window_start(datetime(2026, 11, 30, 12, 0)) is None
