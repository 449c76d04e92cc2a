"""Bad input fuzzing: random task files, params, config files and argument lists.

Each case calls the CLI in-process (`run_cli` of tests/support/cli.py: the exit code)
against an SQLite file of the test, in a private HOME with no `BGTASKEX_*` variable, and
checks the CLI's promise for bad input (README, *Exit codes*):

* never a traceback on stderr;
* an exit code of the README's table (0, 1, 2, 3, 4, 5, 6, 130), never 1 (a bug);
* a refused input gets exactly one line on stderr, ``bgtaskex: error: ...``, exit 2 or 3,
  and leaves the database (every table of the SQLite file) as it was;
* an accepted task file or params adds exactly one task.

Whether the database changed is told by `PRAGMA data_version` of a connection kept open
(it moves with every commit of another connection) and, per table, the row count, the
highest rowid and the last rows.

The number of examples scales with the size of the torture suite (``BGTASKEX_TORTURE``:
quick about 25 s, long ten times the examples). Each fuzz test prints one line: examples,
accepted, refused, exit codes. The bugs the fuzzing found (all fixed) are kept out of the
strategies and pinned by the tests at the end (test_surrogates, test_cron_bad_step,
test_cron_month_number_to_name, test_long_value_in_message, test_big_numbers,
test_deeply_nested_json, test_newline_in_message).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability import scaled
from tests.support.cli import CliResult, run_cli

pytestmark = pytest.mark.timeout(scaled(120, 1800))

#: The exit codes of the README's table.
EXIT_CODES = {0, 1, 2, 3, 4, 5, 6, 130}
ERROR = "bgtaskex: error: "

GOOD_REFS = ("bgtaskex.examples:NothingToDo", "bgtaskex.examples:CountPrimes")
BAD_REFS = (
    "bgtaskex.examples:Nope",
    "bgtaskex.examples",
    "bgtaskex.examples:",
    ":NothingToDo",
    "bgtaskex.examples:_count_primes",
    "bgtaskex.action:Action",
    "json:JSONDecoder",
    "no_such_module_xyz:Thing",
    "os.path:join",
    "bgtaskex.examples:NothingToDo:extra",
    "",
    " ",
)

FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


Result = CliResult


@dataclass
class Tally:
    """Counts for the summary line of a test."""

    name: str
    started: float = field(default_factory=time.monotonic)
    examples: int = 0
    accepted: int = 0
    refused: int = 0
    codes: Counter[int] = field(default_factory=Counter)

    def add(self, result: Result, accepted: bool) -> None:
        self.examples += 1
        self.codes[result.code] += 1
        if accepted:
            self.accepted += 1
        else:
            self.refused += 1

    def line(self) -> str:
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(self.codes.items()))
        return (
            f"{self.name}: {self.examples} examples, {self.accepted} accepted, "
            f"{self.refused} refused; by exit code {{{codes}}}; "
            f"{time.monotonic() - self.started:.1f}s"
        )


class Cli:
    """`bgtaskex --database-url URL ARGS` in-process, on an SQLite file of the test."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.db = directory / "fuzz.db"
        self.url = f"sqlite:///{self.db}"
        self._conn: sqlite3.Connection | None = None

    def __call__(self, *args: str, stdin: str = "", database: bool = True) -> Result:
        argv = (["--database-url", self.url] if database else []) + list(args)
        return run_cli(*argv, stdin=stdin)

    def snapshot(self) -> dict[str, Any]:
        """The state of the database file: `PRAGMA data_version` of a connection kept
        open (it changes with every commit of another connection, whatever the table),
        and per table its row count, highest rowid and last rows."""
        if self._conn is None:
            self._conn = sqlite3.connect(self.db)
        conn = self._conn
        state: dict[str, Any] = {"data_version": conn.execute("PRAGMA data_version").fetchone()}
        names = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        for name in names:
            count, top = conn.execute(f'SELECT count(*), max(rowid) FROM "{name}"').fetchone()
            last = conn.execute(f'SELECT * FROM "{name}" ORDER BY rowid DESC LIMIT 10')
            state[name] = (count, top, last.fetchall())
        return state

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    """An isolated environment (no BGTASKEX_* variable, a private HOME and XDG dirs, the
    working directory in tmp) and a database holding one task already."""
    for name in list(os.environ):
        if name.startswith("BGTASKEX_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("NO_COLOR", "1")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    runner = Cli(tmp_path)
    first = runner("enqueue", "seed", GOOD_REFS[0])
    assert first.code == 0, first.describe()
    try:
        yield runner
    finally:
        runner.close()


def assert_sane(result: Result) -> None:
    """What holds for every call: no traceback, a documented exit code, never 1."""
    assert "Traceback" not in result.err, result.describe()
    assert result.code in EXIT_CODES, result.describe()
    assert result.code != 1, "internal error (a bug)\n" + result.describe()


def assert_refused(result: Result, before: Any, after: Any, codes: set[int]) -> None:
    assert_sane(result)
    assert result.code in codes, result.describe()
    lines = result.err.rstrip("\n").split("\n") if result.err else []
    assert len(lines) == 1, "not one line on stderr\n" + result.describe()
    assert lines[0].startswith(ERROR), result.describe()
    assert before == after, "a refused input changed the database\n" + result.describe()


# -- strategies ------------------------------------------------------------------------

#: Text including line breaks, NUL and other control characters. Lone surrogates (what a
#: non-UTF-8 argv decodes to, or a JSON "\\ud800") are left to test_surrogates below.
any_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
plain_text = st.text(st.characters(codec="utf-8"), max_size=30)
#: Argument text without line breaks: test_newline_in_message covers those.
arg_text = st.text(st.characters(codec="utf-8", exclude_characters="\n\r"), max_size=30)

#: Text that params may hold: no NUL (`config.params_problem`; a NUL is junk below).
param_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    param_text,
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(param_text, inner, max_size=4),
    max_leaves=12,
)
#: Values json.dumps writes but that are not JSON (NaN, Infinity) or trip a check.
junk_value = st.one_of(
    json_value,
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.just("x" * 2_000),  # longer: test_long_value_in_message
    st.just({"deep": [[[[[[[[[[[[{"a": [1, {"b": None}]}]]]]]]]]]]]]}),
    st.just({"a\x00": "b\x00"}),  # JSON, but PostgreSQL cannot store a NUL in it
)

good_params = st.dictionaries(param_text, json_value, max_size=4)
ref_text = st.one_of(st.sampled_from(GOOD_REFS), st.sampled_from(BAD_REFS), plain_text)
action_spec = st.one_of(
    st.sampled_from(GOOD_REFS),
    ref_text,
    st.fixed_dictionaries({"ref": ref_text}, optional={"params": junk_value}),
    st.dictionaries(st.sampled_from(["ref", "params", "rank", "x"]), junk_value, max_size=3),
    st.lists(junk_value, max_size=3),
    junk_value,
)
#: What a task's or a queue's name may hold: no control character (a newline would break
#: the one-line outputs).
name_char = st.characters(codec="utf-8", exclude_categories=["Cc"])
valid_doc = st.fixed_dictionaries(
    {
        "name": st.text(name_char, min_size=1, max_size=200).filter(lambda s: s.strip()),
        "actions": st.lists(
            st.one_of(
                st.sampled_from(GOOD_REFS),
                st.fixed_dictionaries({"ref": st.sampled_from(GOOD_REFS)}),
                st.fixed_dictionaries({"ref": st.sampled_from(GOOD_REFS), "params": good_params}),
            ),
            min_size=1,
            max_size=4,
        ),
    },
    optional={
        "type": st.sampled_from(["cron", "interactive"]),
        "queue": st.text(name_char, min_size=1, max_size=100).filter(lambda s: s.strip()),
    },
)
random_doc = st.dictionaries(
    st.sampled_from(["name", "type", "queue", "actions", "params", "ref", "Name", ""]),
    st.one_of(junk_value, st.lists(action_spec, max_size=4)),
    max_size=5,
)


def _dump(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


task_file = st.one_of(
    st.tuples(st.just("valid"), valid_doc.map(_dump).map(str.encode)),
    st.tuples(st.just("random"), random_doc.map(_dump).map(str.encode)),
    st.tuples(st.just("random"), junk_value.map(_dump).map(str.encode)),
    st.tuples(st.just("random"), st.binary(max_size=200)),
    st.tuples(
        st.just("random"),
        valid_doc.map(_dump).map(lambda s: s.encode("utf-8") + b"\xff\xfe"),
    ),
    st.tuples(
        st.just("random"),
        st.sampled_from(
            [
                b"",
                b"{",
                b'{"name": "x", "actions": [NaN]}',
                b'{"name": "x", "actions": [{"ref": "bgtaskex.examples:NothingToDo",'
                b' "params": {"a": Infinity}}]}',
                b'{"name": "x", "name": "y", "actions": ["bgtaskex.examples:NothingToDo"]}',
                b"\xef\xbb\xbf{}",
                b"[" * 500 + b"]" * 500,
            ]
        ),
    ),
)


# -- 1. task files -----------------------------------------------------------------------


def test_enqueue_file_fuzz(cli: Cli) -> None:
    """Random task documents for `enqueue --file`: a refused one changes nothing, an
    accepted one adds exactly one task; a document built valid is accepted."""
    tally = Tally("enqueue --file")
    path = cli.dir / "task.json"

    @settings(FUZZ, max_examples=scaled(600, 6000))
    @given(task_file)
    def one(case: tuple[str, bytes]) -> None:
        kind, data = case
        path.write_bytes(data)
        before = cli.snapshot()
        result = cli("enqueue", "--file", str(path))
        after = cli.snapshot()
        assert_sane(result)
        if result.code == 0:
            assert after["bgtaskex_tasks"][0] == before["bgtaskex_tasks"][0] + 1, result.describe()
        else:
            assert kind != "valid", "a valid task file was refused\n" + result.describe()
            assert_refused(result, before, after, {2})
        tally.add(result, result.code == 0)

    one()
    print(tally.line())


# -- 2. params on the command line ---------------------------------------------------------

cli_params = st.one_of(
    good_params.map(json.dumps),
    junk_value.map(_dump),
    any_text,
    st.sampled_from(["", "{", "{}}", "NaN", '{"a": NaN}', '{"a": -Infinity}', "[1]", "null"]),
)


def test_enqueue_params_fuzz(cli: Cli) -> None:
    """`enqueue NAME REF=JSON` with random NAMEs and JSON: same invariant."""
    tally = Tally("enqueue REF=JSON")

    @settings(FUZZ, max_examples=scaled(600, 6000))
    @given(
        name=st.one_of(st.just("fuzz"), plain_text),
        ref=st.one_of(st.sampled_from(GOOD_REFS), st.sampled_from(BAD_REFS)),
        params=cli_params,
    )
    def one(name: str, ref: str, params: str) -> None:
        before = cli.snapshot()
        result = cli("enqueue", "--", name, f"{ref}={params}")  # a name may look like -h
        after = cli.snapshot()
        assert_sane(result)
        if result.code == 0:
            assert after["bgtaskex_tasks"][0] == before["bgtaskex_tasks"][0] + 1
        else:
            assert_refused(result, before, after, {2})
        tally.add(result, result.code == 0)

    one()
    print(tally.line())


# -- 3. config files ----------------------------------------------------------------------


def _toml_key(key: str) -> str:
    return _toml_string(key)


def _toml_string(text: str) -> str:
    escaped = json.dumps(text, ensure_ascii=False)
    return "".join(f"\\u{ord(c):04X}" if ord(c) == 0x7F else c for c in escaped)


def toml_value(value: Any) -> str:
    """A TOML rendering of a value (inline tables for mappings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Raw):
        return value.text
    raise TypeError(value)


@dataclass(frozen=True)
class Raw:
    """A TOML literal written as is (dates, times)."""

    text: str


def toml_document(doc: dict[str, Any]) -> str:
    lines = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in doc.items():
        tabular = key in ("processes", "retention_rules") and isinstance(value, list)
        if tabular and value and all(isinstance(v, dict) for v in value):
            tables += [(key, v) for v in value]
            continue
        lines.append(f"{_toml_key(key)} = {toml_value(value)}")
    for key, table in tables:
        lines.append(f"\n[[{key}]]")
        lines += [f"{_toml_key(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


toml_leaf = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    plain_text,
    st.sampled_from(
        [Raw("1979-05-27T07:32:00Z"), Raw("1979-05-27"), Raw("07:32:00"), Raw("1979-05-27T00:32")]
    ),
)
toml_any = st.recursive(
    toml_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(plain_text, inner, max_size=3),
    max_leaves=8,
)
durations = st.one_of(
    st.sampled_from(["30s", "2m", "0", "0s", "1h", "7d", "never", "1.5m", "-1", "5x", "", "1w"]),
    st.integers(min_value=-5, max_value=10**6),
    st.floats(),
)
names = st.one_of(
    st.sampled_from(["default", "nightly", "retention", "r1", "old_tickets", "a b", "", "x" * 70]),
    plain_text,
)
DIRECTORIES = [".", "app", "/nonexistent", "", "~", "a\x00b", "/etc/hostname"]
MODULES = ["bgtaskex.examples", "no_such_module_xyz", "os.path", "1bad", "", "a,b", "a..b"]
CALLABLES = [
    "bgtaskex.examples:NothingToDo",
    "no_such_module_xyz:f",
    "bad",
    "a:b:c",
    "",
    "bgtaskex.builtin.retention:plan",
]
top_values: dict[str, Any] = {
    "database_url": st.sampled_from(["sqlite:///ignored.db", "", "notaurl", " "]),
    "max_execution_time": durations,
    "max_attempts": st.one_of(st.integers(min_value=-3, max_value=10**20), toml_leaf),
    "imports": st.one_of(st.lists(st.sampled_from(MODULES), max_size=3), st.sampled_from(MODULES)),
    "pythonpath": st.one_of(st.lists(st.sampled_from(DIRECTORIES), max_size=3), toml_leaf),
    "lock_file": st.one_of(st.just("run.lock"), st.just(""), st.integers()),
    "sqlite_synchronous": st.one_of(st.sampled_from(["FULL", "normal", "off", "x"]), toml_leaf),
    "log_level": st.one_of(st.sampled_from(["WARNING", "error", "debug", "LOUD"]), toml_leaf),
    "keep_finished": durations,
    "keep_failed": durations,
    "stuck_after": durations,
    "stop_timeout": durations,
    "log_format": st.one_of(st.sampled_from(["text", "JSON", "xml"]), toml_leaf),
    "history": st.one_of(st.sampled_from(["all", "FAILURES", "errors"]), toml_leaf),
    "max_params_bytes": st.one_of(
        st.sampled_from(["1MiB", "512KiB", "0", "1.5MiB", "1 GB", "x"]),
        st.integers(min_value=-3, max_value=10**20),
        toml_leaf,
    ),
}
window = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "days": st.one_of(
                st.sampled_from(["mon-fri", "sun", "sat-mon", "xyz", "", "7-1"]),
                st.lists(st.one_of(st.integers(min_value=-1, max_value=9), names), max_size=3),
            ),
            "start": st.one_of(
                st.sampled_from(["01:00", "23:30", "24:00", "1:5", "ab"]), toml_leaf
            ),
            "end": st.one_of(st.sampled_from(["05:30", "00:00", "23:59", "25:61"]), toml_leaf),
            "enabled": st.one_of(st.booleans(), toml_leaf),
            "extra": toml_leaf,
        },
    ),
    toml_any,
)
process_table = st.fixed_dictionaries(
    {},
    optional={
        "name": names,
        "queues": st.one_of(st.lists(names, max_size=3), toml_leaf),
        "max_execution_time": durations,
        "every": durations,
        "cron": st.one_of(
            st.sampled_from(
                [
                    "*/5 * * * *",
                    "0 1 * * 0",
                    "0 0 31 2 *",
                    "60 * * * *",
                    "* * * * 7",
                    "* * * *",
                    "0 0 * * mon-fri",
                    "0 0 29 2 1",
                    "5-1 * * * *",
                ]
            ),
            toml_leaf,
        ),
        "window": window,
        "callable": st.one_of(st.sampled_from(CALLABLES), toml_leaf),
        "unknown": toml_leaf,
    },
)
rule_table = st.fixed_dictionaries(
    {},
    optional={
        "name": names,
        "database": st.sampled_from(
            ["sqlite:///app.db", "notaurl", "", "postgresql+psycopg://u:secret@127.0.0.1:1/x"]
        ),
        "table": st.one_of(st.sampled_from(["tickets", "a.b", "1x", "t;drop", ""]), toml_leaf),
        "date_column": st.one_of(st.sampled_from(["created_at", "", "x y"]), toml_leaf),
        "older_than": durations,
        "where": st.one_of(st.sampled_from(["status = :status", "", "1=1; --"]), toml_leaf),
        "params": st.one_of(st.dictionaries(names, toml_leaf, max_size=2), toml_leaf),
        "also_delete": st.one_of(
            st.lists(
                st.dictionaries(
                    st.sampled_from(["table", "column", "x"]),
                    st.one_of(st.sampled_from(["c", "t.id", ""]), toml_leaf),
                    max_size=3,
                ),
                max_size=2,
            ),
            toml_leaf,
        ),
        "chunk_size": st.one_of(st.integers(min_value=-1, max_value=20_000), toml_leaf),
        "hooks": st.one_of(st.lists(st.sampled_from(CALLABLES), max_size=2), toml_leaf),
        "enabled": st.one_of(st.booleans(), toml_leaf),
        "unknown": toml_leaf,
    },
)
config_doc = st.fixed_dictionaries(
    {},
    optional={
        **top_values,
        "processes": st.one_of(st.lists(process_table, max_size=3), toml_leaf),
        "retention_rules": st.one_of(st.lists(rule_table, max_size=3), toml_leaf),
        "bogus_key": toml_leaf,
    },
)


@st.composite
def cron_expression(draw: st.DrawFn) -> str:
    """Five crontab fields of numbers around the valid ranges, names, steps and lists."""
    fields = []
    for low, high, names_ in (
        (0, 59, ()),
        (0, 23, ()),
        (1, 31, ()),
        (1, 12, ("jan", "dec", "feb")),
        (0, 7, ("mon", "fri", "sun")),
    ):
        digits = st.integers(min_value=low - 1, max_value=high + 1).map(str)
        number = digits | st.sampled_from(names_) if names_ else digits
        # A month range from a number to a name ("1-jan"): test_cron_month_number_to_name.
        first = digits if names_ and low == 1 else number
        span = st.tuples(first, digits) | st.tuples(number, number).filter(
            lambda pair: not (pair[0].isdigit() and pair[1].isalpha())
        )
        # A step of 0, or more than the field's range: test_cron_bad_step.
        step = st.integers(1, high - low).map(str)
        item = st.one_of(
            st.just("*"),
            number,
            span.map("-".join),
            st.tuples(st.sampled_from(["*", f"{low}-{high}"]), step).map("/".join),
        )
        fields.append(",".join(draw(st.lists(item, min_size=1, max_size=2))))
    return " ".join(fields)


hhmm = st.tuples(st.integers(0, 25), st.integers(0, 61)).map(lambda t: f"{t[0]:02d}:{t[1]:02d}")
day_names = st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun", "1", "7"])
near_window = st.fixed_dictionaries(
    {"start": hhmm, "end": hhmm},
    optional={
        "days": st.one_of(
            st.tuples(day_names, day_names).map("-".join),
            st.lists(st.integers(0, 8), min_size=1, max_size=3),
            st.lists(day_names, min_size=1, max_size=3),
        ),
        "enabled": st.booleans(),
    },
)
near_process = st.fixed_dictionaries(
    {"name": st.sampled_from(["default", "nightly", "retention", "p-1", "p_2"])},
    optional={
        "queues": st.lists(
            st.sampled_from(["default", "nightly", "retention", "q"]), min_size=1, max_size=2
        ),
        "max_execution_time": st.sampled_from(["30s", "1m", 5, 0.5]),
        "window": near_window,
        "callable": st.sampled_from(["bgtaskex.examples:plan", "myapp.jobs:plan"]),
    },
).flatmap(
    lambda table: st.one_of(
        st.sampled_from(["60s", "1s", "1h", 30, "0.5m"]).map(lambda e: {**table, "every": e}),
        cron_expression().map(lambda c: {**table, "cron": c}),
    )
)
near_rule = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["old_tickets", "r1", "R1", "a.b-c"]),
        "table": st.sampled_from(["tickets", "app.tickets", "t1"]),
    },
    optional={
        "database": st.just("sqlite:///app.db"),
        "also_delete": st.just([{"table": "comments", "column": "ticket_id"}]),
        "chunk_size": st.integers(0, 10_001),
        "hooks": st.just(["myapp.search:forget"]),
        "enabled": st.booleans(),
    },
).flatmap(
    lambda table: st.one_of(
        st.sampled_from(["90d", "0", "1h", 3600]).map(
            lambda age: {**table, "date_column": "created_at", "older_than": age}
        ),
        st.just({**table, "where": "status = :status", "params": {"status": "closed"}}),
        st.just({**table, "where": "id > 3"}),
    )
)
#: Configs that are valid or nearly so: the checks of processes and rules, and the next
#: occurrence of random crontab expressions and windows (`processes`).
near_config = st.fixed_dictionaries(
    {},
    optional={
        "max_execution_time": st.sampled_from(["30s", "2m", 45]),
        "keep_finished": st.sampled_from(["30d", "0", "never"]),
        "processes": st.lists(
            near_process, min_size=1, max_size=3, unique_by=lambda p: str(p["name"])
        ),
        "retention_rules": st.lists(
            near_rule, min_size=1, max_size=2, unique_by=lambda r: str(r["name"]).lower()
        ),
    },
)
config_file = st.one_of(
    near_config.map(lambda d: (d, toml_document(d).encode("utf-8"))),
    config_doc.map(lambda d: (d, toml_document(d).encode("utf-8", "surrogatepass"))),
    config_doc.map(lambda d: (d, toml_document(d).encode("utf-8") + b"\n\xff = 1\n")),
    st.tuples(st.just({}), st.binary(max_size=100)),
    st.tuples(
        st.just({}),
        st.sampled_from([b"=", b"[[processes]]\nname = ", b"a = 1\na = 2\n", b"[x\n"]),
    ),
)
CONFIG_COMMANDS = (("list",), ("processes",), ("processes", "--json"), ("rules", "list"))


def test_config_fuzz(cli: Cli) -> None:
    """Random config files with `list`, `processes`, `rules list`: exit 0 or 2; on 2 one
    line naming the file or a key of it; the database unchanged."""
    tally = Tally("--config FILE")
    path = cli.dir / "fuzz.toml"

    @settings(FUZZ, max_examples=scaled(800, 8000))
    @given(config_file, st.sampled_from(CONFIG_COMMANDS))
    def one(case: tuple[dict[str, Any], bytes], command: tuple[str, ...]) -> None:
        doc, data = case
        path.write_bytes(data)
        before = cli.snapshot()
        result = cli("--config", str(path), *command)
        after = cli.snapshot()
        assert_sane(result)
        assert result.code in (0, 2), result.describe()
        assert before == after, result.describe()
        if result.code == 2:
            assert_refused(result, before, after, {2})
            message = result.err
            assert "config file" in message or any(key in message for key in doc), (
                "the error names neither the file nor a key\n" + result.describe()
            )
        tally.add(result, result.code == 0)

    one()
    print(tally.line())


# -- 4. random argument lists ---------------------------------------------------------------

COMMANDS = [
    "enqueue",
    "run-once",
    "db",
    "upgrade",
    "list",
    "show",
    "retry",
    "cancel",
    "purge",
    "stats",
    "check",
    "runs",
    "processes",
    "rules",
    "preview",
    "run",
    "queues",
    "pause",
    "resume",
]
OPTIONS = [
    "--help",
    "-h",
    "--version",
    "--json",
    "--quiet",
    "-q",
    "--file",
    "--type",
    "--queue",
    "--status",
    "--name",
    "--since",
    "--until",
    "--limit",
    "--verbose",
    "-v",
    "--from-start",
    "--all-failed",
    "--older-than",
    "--dry-run",
    "--yes",
    "-y",
    "--prometheus",
    "--stuck-after",
    "--max-execution-time",
    "--lock-file",
    "--progress",
    "--no-progress",
    "--process",
    "--sample",
    "--all",
    "--import",
    "--log-format",
    "--config",
    "--reason",
    "--",
]
VALUES = [
    "bgtaskex.examples:NothingToDo",
    'bgtaskex.examples:NothingToDo={"a": 1}',
    "bgtaskex.examples:Nope",
    "bgtaskex.examples",
    "cron",
    "interactive",
    "default",
    "failed",
    "active",
    "finished",
    "7d",
    "2h",
    "0",
    "-1",
    "1x",
    "2026-11-28",
    "2026-11-28T14:30Z",
    "2026-13-45",
    "nightly*",
    "json",
    "text",
    "retention",
    "old_tickets",
    "1",
    "2",
    "x" * 300,
    "-",
]
SKIPPED = {"daemon", "demo", "--wait"}  # they run for long or wait


@st.composite
def argument_lists(draw: st.DrawFn, files: list[str]) -> list[str]:
    token = st.one_of(
        st.sampled_from(COMMANDS),
        st.sampled_from(OPTIONS),
        st.sampled_from(VALUES),
        st.sampled_from(files),
        st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1).map(str),
        arg_text,
    )
    head = draw(st.one_of(st.sampled_from(COMMANDS), token))
    return [head, *draw(st.lists(token, max_size=6))]


#: Each command path with its options (None: a flag) and the kind of its arguments.
SHAPES: dict[tuple[str, ...], tuple[dict[str, str | None], str | None]] = {
    ("enqueue",): (
        {"--file": "file", "--type": "word", "--queue": "word", "--json": None, "-q": None},
        "ref",
    ),
    ("run-once",): (
        {
            "--max-execution-time": "duration",
            "--lock-file": "file",
            "--json": None,
            "-q": None,
            "--no-progress": None,
            "--process": "word",
        },
        None,
    ),
    ("list",): (
        {
            "--status": "word",
            "--type": "word",
            "--queue": "word",
            "--name": "word",
            "--since": "when",
            "--until": "when",
            "--limit": "number",
            "--json": None,
        },
        None,
    ),
    ("show",): (
        {"--json": None, "--verbose": None, "--actions": "number", "--events": "number"},
        "number",
    ),
    ("retry",): (
        {"--from-start": None, "--all-failed": None, "--queue": "word", "--since": "when"},
        "number",
    ),
    ("cancel",): ({}, "number"),
    ("purge",): (
        {
            "--older-than": "duration",
            "--all": None,
            "--dry-run": None,
            "--yes": None,
            "--status": "word",
        },
        None,
    ),
    ("stats",): ({"--json": None, "--prometheus": None}, None),
    ("check",): (
        {
            "--stuck-after": "duration",
            "--stale-after": "duration",
            "--failed-within": "duration",
            "--json": None,
        },
        None,
    ),
    ("runs",): (
        {"--limit": "number", "--process": "word", "--failed": None, "--json": None},
        None,
    ),
    ("processes",): ({"--json": None}, None),
    ("queues",): ({"--json": None}, None),
    ("pause",): ({"--reason": "word"}, "word"),
    ("resume",): ({}, "word"),
    ("db", "upgrade"): ({}, None),
    ("rules", "list"): ({"--json": None}, None),
    ("rules", "preview"): ({"--sample": "number", "--json": None}, "word"),
    ("rules", "run"): ({"--all": None, "--queue": "word", "-q": None}, "word"),
}


@st.composite
def shaped_arguments(draw: st.DrawFn, files: list[str]) -> list[str]:
    """A command with its own options and arguments, the values random."""
    values = {
        "file": st.sampled_from(files) | arg_text,
        "word": st.sampled_from(VALUES) | arg_text,
        "duration": st.sampled_from(["30s", "2m", "0", "1x", "-1", "1e3", "7d", " 5 s"]) | arg_text,
        "when": st.sampled_from(["2h", "2026-11-28", "2026-11-28T14:30+02:00", "Z", "0d"])
        | arg_text,
        "number": st.integers(-(2**63) + 1, 2**63 - 1).map(str) | st.sampled_from(["1", "2", "0"]),
        "ref": st.sampled_from(GOOD_REFS[:1] + BAD_REFS + ("bgtaskex.examples:NothingToDo={}",)),
    }
    path = draw(st.sampled_from(sorted(SHAPES)))
    options, argument = SHAPES[path]
    args: list[str] = []
    if draw(st.booleans()):
        args += ["--config", draw(st.sampled_from(files))]
    if draw(st.integers(0, 4)) == 0:
        args += ["--import", draw(st.sampled_from(["bgtaskex.examples", "nope_xyz", "1x"]))]
    args += list(path)
    for _ in range(draw(st.integers(0, 3))):
        option = draw(st.sampled_from(sorted(options))) if options else None
        if option is not None:
            kind = options[option]
            args += [option] if kind is None else [option, draw(values[kind])]
    if argument is not None:
        args += draw(st.lists(values[argument], max_size=3))
    return args


def _json_warning(out: str) -> bool:
    """`check --json`'s answer with a problem: one object, status "warning"."""
    try:
        report = json.loads(out)
    except ValueError:
        return False
    return isinstance(report, dict) and report.get("status") == "warning"


def test_random_arguments(cli: Cli) -> None:
    """Random argument lists: never a traceback, never exit 1 (but `check`'s warning), an
    exit code of the table; an error is lines of `bgtaskex: error: ...`."""
    tally = Tally("random argv")
    good_config = cli.dir / "good.toml"
    good_config.write_text(
        '[[processes]]\nname = "nightly"\nqueues = ["nightly"]\ncron = "*/5 * * * *"\n'
        'window = { days = ["sun"], start = "01:00", end = "23:30" }\n'
        '\n[[retention_rules]]\nname = "old_tickets"\ndatabase = "sqlite:///app.db"\n'
        'table = "tickets"\ndate_column = "created_at"\nolder_than = "90d"\n',
        encoding="utf-8",
    )
    task = cli.dir / "task.json"
    task.write_text(json.dumps({"name": "t", "actions": [GOOD_REFS[0]]}), encoding="utf-8")
    files = [str(good_config), str(task), str(cli.dir / "missing.toml"), str(cli.dir)]

    @settings(FUZZ, max_examples=scaled(1000, 10000))
    @given(st.one_of(argument_lists(files), shaped_arguments(files)))
    def one(args: list[str]) -> None:
        if SKIPPED & set(args):
            return
        before = cli.snapshot()
        result = cli(*args)
        if result.code == 2:  # bad input: refused before anything is written
            assert cli.snapshot() == before, "exit 2 but the database changed\n" + result.describe()
        assert "Traceback" not in result.err, result.describe()
        assert result.code in EXIT_CODES, result.describe()
        if "check" in args and result.code == 1:
            warned = result.out.startswith("BGTASKEX WARNING - ")
            assert warned or _json_warning(result.out), result.describe()
        elif result.code not in (0,):
            assert_sane(result)
            lines = result.err.rstrip("\n").split("\n") if result.err else []
            if not lines:  # a group without its subcommand prints its help
                assert result.code == 2 and "Usage:" in result.out, result.describe()
            for line in lines:
                assert line.startswith(ERROR) or line == "bgtaskex: interrupted", result.describe()
        tally.add(result, result.code == 0)

    one()
    print(tally.line())


# -- bugs found by the fuzzing ----------------------------------------------------------------

#: A non-UTF-8 byte in argv reaches Python as a lone surrogate (surrogateescape), and so
#: does a JSON "\ud800" escape; SQLite cannot store it.
SURROGATE_CASES = {
    "argv name": ("enqueue", "\udcff", GOOD_REFS[0]),
    "argv queue": ("enqueue", "x", GOOD_REFS[0], "--queue", "\udcff"),
    "file name": ("enqueue", "--file", "{dir}/task.json", '{"name": "\\ud800"}'),
    "file queue": ("enqueue", "--file", "{dir}/task.json", '{"name": "x", "queue": "\\udcff"}'),
}


@pytest.mark.parametrize("case", sorted(SURROGATE_CASES))
def test_surrogates(cli: Cli, case: str) -> None:
    args = list(SURROGATE_CASES[case])
    if args[1] == "--file":
        doc = json.loads(args.pop())
        doc["actions"] = [GOOD_REFS[0]]
        path = cli.dir / "task.json"
        # json.dumps writes the surrogate as the ASCII escape "\ud800", valid JSON text.
        path.write_text(json.dumps(doc), encoding="utf-8")
        args[2] = str(path)
    before = cli.snapshot()
    result = cli(*args)
    after = cli.snapshot()
    assert_refused(result, before, after, {2})


@pytest.mark.parametrize("command", ["list", "processes"])
@pytest.mark.parametrize(
    "cron", ["*/0 * * * *", "* * 1-31/0 * *", "* * * */0 *", "*/-1 * * * *", "1-5/x * * * *"]
)
def test_cron_bad_step(cli: Cli, cron: str, command: str) -> None:
    path = cli.dir / "cron.toml"
    path.write_text(f'[[processes]]\nname = "p"\ncron = "{cron}"\n', encoding="utf-8")
    before = cli.snapshot()
    result = cli("--config", str(path), command)
    after = cli.snapshot()
    assert_refused(result, before, after, {2})
    assert "cron" in result.err, result.describe()


@pytest.mark.parametrize("command", ["list", "processes"])
@pytest.mark.parametrize("cron", ["* * * 1-jan *", "* * * 1-feb/1 *"])
def test_cron_month_number_to_name(cli: Cli, cron: str, command: str) -> None:
    """A month range from a number to a name (once an internal error in `processes`)
    is read as numbers: every command takes it."""
    path = cli.dir / "cron.toml"
    path.write_text(f'[[processes]]\nname = "p"\ncron = "{cron}"\n', encoding="utf-8")
    result = cli("--config", str(path), command)
    assert_sane(result)
    assert result.code == 0 and result.err == "", result.describe()


def test_long_value_in_message(cli: Cli) -> None:
    before = cli.snapshot()
    started = time.monotonic()
    result = cli("enqueue", "x", GOOD_REFS[0], "--queue", "x" * 30_000)
    elapsed = time.monotonic() - started
    after = cli.snapshot()
    assert_refused(result, before, after, {2})
    assert elapsed < 1.0, f"refusing a long --queue took {elapsed:.1f}s"


#: Whole numbers past SQLite's 64-bit INTEGER (test_big_numbers); the fuzz stays below.
BIG = str(2**63)


@pytest.mark.parametrize(
    "args", [("cancel", BIG), ("retry", BIG), ("list", "--limit", BIG)], ids=" ".join
)
def test_big_numbers(cli: Cli, args: tuple[str, ...]) -> None:
    before = cli.snapshot()
    result = cli(*args)
    after = cli.snapshot()
    assert_refused(result, before, after, {2, 3})


#: JSON nested deeper than Python's recursion limit: json.loads raises RecursionError,
#: which the CLI does not catch (only JSONDecodeError).
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("where", ["file", "file params", "argv params"])
def test_deeply_nested_json(cli: Cli, where: str) -> None:
    path = cli.dir / "task.json"
    if where == "file":
        path.write_text(DEEP, encoding="utf-8")
    else:
        path.write_text(
            json.dumps(
                {"name": "x", "actions": [{"ref": GOOD_REFS[0], "params": {"a": 0}}]}
            ).replace("0}}]}", DEEP + "}}]}"),
            encoding="utf-8",
        )
    args = (
        ("enqueue", "x", f'{GOOD_REFS[0]}={{"a": {DEEP}}}')
        if where == "argv params"
        else ("enqueue", "--file", str(path))
    )
    before = cli.snapshot()
    result = cli(*args)
    after = cli.snapshot()
    assert_refused(result, before, after, {2})


NEWLINE_CASES = {
    "extra argument": ("run-once", "a\nb"),
    "config file": ("--config", "a\nb", "list"),
    "task file": ("enqueue", "--file", "a\nb"),
}


@pytest.mark.parametrize("case", sorted(NEWLINE_CASES))
def test_newline_in_message(cli: Cli, case: str) -> None:
    before = cli.snapshot()
    result = cli(*NEWLINE_CASES[case])
    after = cli.snapshot()
    assert_refused(result, before, after, {2})
