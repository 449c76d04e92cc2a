"""The `bgtaskex` command as a user runs it: enqueue, list, show, run-once, db upgrade,
demo, configuration, and bad input (one line on stderr, a documented exit code)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bgtaskex.store.probe import HEAD_REVISION
from tests.acceptance.conftest import (
    Bgx,
    describe,
    hooks,
    run_many,
    scripted,
    summary,
)
from tests.conftest import isolated_env

TASK_FIELDS = {
    "id",
    "name",
    "type",
    "queue",
    "status",
    "current_rank",
    "created_at",
    "updated_at",
    "ended_at",
    "actions",
}
ACTION_FIELDS = {"rank", "ref", "status", "attempts", "params", "started_at", "ended_at"}
IMPORT = ("--import", "tests.scripted")


def _timestamp(value: Any) -> datetime:
    assert isinstance(value, str), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _check_shape(task: dict[str, Any]) -> None:
    assert set(task) >= TASK_FIELDS, sorted(task)
    assert isinstance(task["id"], int)
    _timestamp(task["created_at"])
    _timestamp(task["updated_at"])
    for action in task["actions"]:
        assert set(action) >= ACTION_FIELDS, sorted(action)
        assert isinstance(action["params"], dict)
        assert isinstance(action["attempts"], int)


def _one_error_line(result: Any) -> str:
    """No traceback, exactly one line on stderr, nothing on stdout."""
    assert "Traceback" not in result.stderr, describe(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, describe(result)
    assert lines[0].startswith("bgtaskex: error: "), describe(result)
    assert result.stdout == "", describe(result)
    return lines[0]


# -- enqueue / list / show / run-once ---------------------------------------------------


def test_enqueue_list_show_run(bgx: Bgx, db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    url = ("--database-url", db_url)
    added = bgx.ok(
        *url,
        *IMPORT,
        "enqueue",
        "nightly",
        "tests.scripted:Noop",
        scripted(log, {}, name="B"),
        "--type",
        "interactive",
        "--queue",
        "q",
    )
    assert len(added.stdout.splitlines()) == 1, describe(added)
    assert "nightly" in added.stdout

    tasks = bgx.json(*url, "list", "--json")
    assert isinstance(tasks, list) and len(tasks) == 1
    task = tasks[0]
    _check_shape(task)
    assert f"task {task['id']}" in added.stdout
    assert (task["name"], task["type"], task["queue"], task["status"]) == (
        "nightly",
        "interactive",
        "q",
        "created",
    )
    assert task["current_rank"] is None and task["ended_at"] is None
    assert [(a["rank"], a["ref"], a["status"], a["attempts"]) for a in task["actions"]] == [
        (1, "tests.scripted:Noop", "pending", 0),
        (2, "tests.scripted:Scripted", "pending", 0),
    ]
    assert task["actions"][0]["params"] == {}
    assert task["actions"][1]["params"] == {"name": "B", "log": str(log), "plan": {}}

    shown = bgx.show(db_url, task["id"])
    _check_shape(shown)
    assert {k: v for k, v in shown.items() if k not in ("events", "event_count")} == task
    assert shown["event_count"] == len(shown["events"])
    assert isinstance(shown["events"], list) and shown["events"]
    assert shown["events"][0]["new_status"] == "created"  # oldest first: the enqueue

    human_list = bgx.ok(*url, "list").stdout
    assert "nightly" in human_list and "created" in human_list
    human_show = bgx.ok(*url, "show", task["id"]).stdout
    assert "nightly" in human_show and "created" in human_show
    assert "tests.scripted:Noop" in human_show

    ran = bgx.ok(*url, *IMPORT, "run-once")
    counts = summary(ran)
    assert (counts["finished"], counts["failed"], counts["actions"]) == (1, 0, 2)
    assert hooks(log) == ["init", "execute"]

    done = bgx.show(db_url, task["id"])
    assert done["status"] == "finished"
    assert done["ended_at"] is not None
    assert [a["status"] for a in done["actions"]] == ["done", "done"]
    assert done["actions"][1]["params"]["execute_calls"] == 1
    assert "finished" in bgx.ok(*url, "list").stdout
    # Nothing left to do: the next run says so (the SQLite fast path) or does nothing.
    idle = bgx.ok(*url, *IMPORT, "run-once")
    if not idle.stdout.startswith("nothing due"):
        assert summary(idle)["actions"] == 0
    assert hooks(log) == ["init", "execute"]


def test_enqueue_from_file_and_stdin(bgx: Bgx, sqlite_url: str, tmp_path: Path) -> None:
    url = ("--database-url", sqlite_url)
    spec = {
        "name": "from-file",
        "type": "interactive",
        "queue": "files",
        "actions": [
            {"ref": "tests.scripted:Noop", "params": {"x": 1}},
            {"ref": "tests.scripted:Noop"},
        ],
    }
    path = tmp_path / "task.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    printed = bgx.json(*url, *IMPORT, "enqueue", "--file", path, "--json")
    _check_shape(printed)
    assert (printed["name"], printed["type"], printed["queue"], printed["status"]) == (
        "from-file",
        "interactive",
        "files",
        "created",
    )
    assert [a["params"] for a in printed["actions"]] == [{"x": 1}, {}]

    piped = {"name": "from-stdin", "actions": [{"ref": "tests.scripted:Noop"}]}
    quiet = bgx.ok(*url, *IMPORT, "enqueue", "--file", "-", "--quiet", input=json.dumps(piped))
    assert quiet.stdout.strip().isdigit() and quiet.stdout == quiet.stdout.strip() + "\n"
    second = int(quiet.stdout)
    assert second != printed["id"]

    tasks = {t["id"]: t for t in bgx.json(*url, *IMPORT, "list", "--json")}
    assert set(tasks) == {printed["id"], second}
    assert tasks[printed["id"]] == printed
    assert (tasks[second]["name"], tasks[second]["type"], tasks[second]["queue"]) == (
        "from-stdin",
        "cron",
        "default",
    )


def test_list_on_empty_database(bgx: Bgx, sqlite_url: str) -> None:
    human = bgx.ok("--database-url", sqlite_url, "list")
    assert human.stdout.strip() == "no tasks yet"
    assert bgx.json("--database-url", sqlite_url, "list", "--json") == []


# -- bad input ------------------------------------------------------------------------
# Every case is one independent CLI call on its own database; they run side by side once
# per module (see `outcomes`), and each case is its own test.

NOT_JSON = '{"name": "x", "actions": [}'
PG_WITH_PASSWORD = "postgresql+psycopg://user:s3cret@127.0.0.1:1/db"

BAD_INPUT = [
    # (id, args after --database-url, stdin, exit code, text the error line must contain)
    ("module-not-declared", ["enqueue", "t", "nosuch_mod:X"], None, 2, "nosuch_mod"),
    (
        "module-unknown",
        ["--import", "nosuch_mod", "enqueue", "t", "nosuch_mod:X"],
        None,
        2,
        "nosuch_mod",
    ),
    ("ref-not-imported", ["enqueue", "t", "tests.scripted:Noop"], None, 2, "tests.scripted"),
    (
        "not-an-action",
        [*IMPORT, "enqueue", "t", "tests.scripted:NotAnAction"],
        None,
        2,
        "NotAnAction",
    ),
    ("no-such-class", [*IMPORT, "enqueue", "t", "tests.scripted:Nope"], None, 2, "Nope"),
    ("malformed-ref", [*IMPORT, "enqueue", "t", "not a ref"], None, 2, "not a ref"),
    (
        "malformed-ref-colons",
        [*IMPORT, "enqueue", "t", "tests.scripted::Noop"],
        None,
        2,
        "tests.scripted::Noop",
    ),
    ("params-not-json", [*IMPORT, "enqueue", "t", "tests.scripted:Noop={bad"], None, 2, "JSON"),
    (
        "params-not-object",
        [*IMPORT, "enqueue", "t", "tests.scripted:Noop=[1, 2]"],
        None,
        2,
        "tests.scripted:Noop",
    ),
    ("file-not-json", [*IMPORT, "enqueue", "--file", "@bad_file"], None, 2, "JSON"),
    ("stdin-not-json", [*IMPORT, "enqueue", "--file", "-"], NOT_JSON, 2, "JSON"),
    ("file-missing", [*IMPORT, "enqueue", "--file", "@missing"], None, 2, "missing.json"),
    (
        "file-unknown-key",
        [*IMPORT, "enqueue", "--file", "-"],
        '{"name": "x", "actions": [], "colour": "red"}',
        2,
        "colour",
    ),
    ("enqueue-no-ref", ["enqueue", "t"], None, 2, "REF"),
    ("show-unknown-id", ["show", "999"], None, 3, "999"),
    ("show-not-an-id", ["show", "abc"], None, 2, "abc"),
    ("list-bad-status", ["list", "--status", "bogus"], None, 2, "bogus"),
    ("unknown-command", ["frobnicate"], None, 2, "frobnicate"),
    (
        "run-once-bad-budget",
        ["run-once", "--max-execution-time", "abc"],
        None,
        2,
        "max-execution-time",
    ),
    (
        "run-once-zero-budget",
        ["run-once", "--max-execution-time", "0"],
        None,
        2,
        "max-execution-time",
    ),
    ("bad-url", ["@url", "nosuchdb://x", "list"], None, 2, "nosuchdb"),
    # An unreachable PostgreSQL server, with a password in the URL that must never show.
    ("pg-down-list", ["@url", PG_WITH_PASSWORD, "list"], None, 4, "unavailable"),
    ("pg-down-run-once", ["@url", PG_WITH_PASSWORD, "run-once"], None, 4, "unavailable"),
    (
        "pg-down-enqueue",
        ["@url", PG_WITH_PASSWORD, "enqueue", "t", "tests.scripted:Noop"],
        None,
        4,
        "unavailable",
    ),
    (
        "pg-down-debug-upgrade",
        ["@url", PG_WITH_PASSWORD, "--log-level", "DEBUG", "db", "upgrade"],
        None,
        4,
        "unavailable",
    ),
    ("file-not-utf8", [*IMPORT, "enqueue", "--file", "@latin_file"], None, 2, "latin.json"),
]

#: Cases that fail because of a known bug in bgtaskex, as strict xfails (none open today).
BUGS: dict[str, str] = {}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("bad-input")
    bad_file = base / "bad.json"
    bad_file.write_text(NOT_JSON, encoding="utf-8")
    latin_file = base / "latin.json"
    latin_file.write_bytes(b'{"name": "caf\xe9", "actions": []}')
    places = {
        "@bad_file": str(bad_file),
        "@missing": str(base / "missing.json"),
        "@latin_file": str(latin_file),
    }
    # One database, its schema made first, for the cases that reach it: none of them
    # may write to it.
    env = isolated_env(base / "home")
    url = f"sqlite:///{base / 'shared.db'}"
    upgraded = Bgx(env)("--database-url", url, "db", "upgrade")
    assert upgraded.returncode == 0, describe(upgraded)
    calls = {}
    for case_id, args, stdin, _code, _needle in BAD_INPUT:
        args = [places.get(a, a) for a in args]
        if args[0] == "@url":
            args = ["--database-url", *args[1:]]
        else:
            args = ["--database-url", url, *args]
        calls[case_id] = (args, stdin)
    results = run_many(env, calls)
    listed = Bgx(env)("--database-url", url, "list", "--json")
    assert (listed.returncode, json.loads(listed.stdout)) == (0, []), describe(listed)
    return results


@pytest.mark.parametrize(
    ("case_id", "code", "needle"),
    [
        pytest.param(
            case[0],
            case[3],
            case[4],
            id=case[0],
            marks=[pytest.mark.xfail(reason=BUGS[case[0]], strict=True)] if case[0] in BUGS else [],
        )
        for case in BAD_INPUT
    ],
)
def test_bad_input_is_one_line_and_exit_code(
    outcomes: dict[str, Any], case_id: str, code: int, needle: str
) -> None:
    result = outcomes[case_id]
    assert result.returncode == code, describe(result)
    assert needle in _one_error_line(result)
    assert "s3cret" not in result.stdout + result.stderr


def test_show_huge_id_is_not_found(bgx: Bgx, db_url: str) -> None:
    bgx.ok("--database-url", db_url, "db", "upgrade")
    result = bgx("--database-url", db_url, "show", "99999999999999999999")
    assert result.returncode == 3, describe(result)
    _one_error_line(result)


def test_password_never_shown_with_reachable_postgres(bgx: Bgx, pg_schema_url: str) -> None:
    """A password in the URL stays out of every output, whether the server checks it
    (exit 4, authentication failed) or not (trust authentication: the commands work)."""
    from sqlalchemy.engine import make_url

    url = make_url(pg_schema_url).set(password="s3cret").render_as_string(hide_password=False)
    assert "s3cret" in url
    results = [
        bgx("--database-url", url, "--log-level", "DEBUG", "db", "upgrade"),
        bgx(
            "--database-url",
            url,
            "--log-level",
            "DEBUG",
            "enqueue",
            "t",
            "bgtaskex.examples:NothingToDo",
        ),
        bgx("--database-url", url, "--log-level", "DEBUG", "run-once"),
        bgx("--database-url", url, "list"),
    ]
    for result in results:
        assert result.returncode in (0, 4), describe(result)
        assert "s3cret" not in result.stdout + result.stderr, describe(result)
        assert "Traceback" not in result.stderr, describe(result)
    if results[0].returncode == 0:
        assert "***" in results[0].stdout  # the URL is shown, masked


@pytest.mark.parametrize("where", ["directory", "under-a-file"])
def test_unusable_lock_file(bgx: Bgx, sqlite_url: str, tmp_path: Path, where: str) -> None:
    bgx.ok("--database-url", sqlite_url, "enqueue", "t", "bgtaskex.examples:NothingToDo")
    (tmp_path / "plain").write_text("", encoding="utf-8")
    lock = tmp_path if where == "directory" else tmp_path / "plain" / "run.lock"
    result = bgx("--database-url", sqlite_url, "run-once", "--lock-file", lock)
    assert result.returncode == 2, describe(result)
    assert "lock" in _one_error_line(result)


# -- configuration --------------------------------------------------------------------


def _config(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('colour = "red"\n', "colour"),
        ("max_attempts = 0\n", "max_attempts"),
        ('max_execution_time = "soon"\n', "max_execution_time"),
        ('sqlite_synchronous = "MAYBE"\n', "sqlite_synchronous"),
        ("imports = 3\n", "imports"),
        ("this is not toml\n", "TOML"),
    ],
    ids=["unknown-key", "max-attempts-0", "bad-duration", "bad-choice", "bad-imports", "not-toml"],
)
def test_bad_config_file(bgx: Bgx, tmp_path: Path, text: str, needle: str) -> None:
    config = _config(tmp_path, "bad.toml", text)
    result = bgx("--config", config, "run-once")
    assert result.returncode == 2, describe(result)
    line = _one_error_line(result)
    assert needle in line and str(config) in line


def test_config_file_not_utf8(bgx: Bgx, tmp_path: Path) -> None:
    config = tmp_path / "latin.toml"
    config.write_bytes(b'database_url = "sqlite:///caf\xe9.db"\n')
    result = bgx("--config", config, "list")
    assert result.returncode == 2, describe(result)
    assert str(config) in _one_error_line(result)


def test_config_file_found_by_env_and_default_location(
    bgx: Bgx, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    config = _config(tmp_path, "env.toml", 'colour = "red"\n')
    result = bgx("list", env={"BGTASKEX_CONFIG": str(config)})
    assert result.returncode == 2, describe(result)
    assert "colour" in _one_error_line(result)

    default = Path(cli_env["XDG_CONFIG_HOME"]) / "bgtaskex" / "bgtaskex.toml"
    default.parent.mkdir(parents=True)
    default.write_text('flavour = "mint"\n', encoding="utf-8")
    result = bgx("list")
    assert result.returncode == 2, describe(result)
    assert "flavour" in _one_error_line(result)

    missing = bgx("--config", tmp_path / "nope.toml", "list")
    assert missing.returncode == 2, describe(missing)
    assert "nope.toml" in _one_error_line(missing)


def test_bad_env_value_names_the_variable(bgx: Bgx, sqlite_url: str) -> None:
    result = bgx(
        "--database-url", sqlite_url, "run-once", env={"BGTASKEX_MAX_EXECUTION_TIME": "abc"}
    )
    assert result.returncode == 2, describe(result)
    assert "BGTASKEX_MAX_EXECUTION_TIME" in _one_error_line(result)


def test_database_url_option_beats_env_beats_file(bgx: Bgx, tmp_path: Path) -> None:
    dbs = {layer: tmp_path / f"{layer}.db" for layer in ("file", "env", "option")}
    config = _config(tmp_path, "c.toml", f'database_url = "sqlite:///{dbs["file"]}"\n')
    env = {"BGTASKEX_DATABASE_URL": f"sqlite:///{dbs['env']}"}

    def created() -> set[str]:
        return {layer for layer, path in dbs.items() if path.exists()}

    out = bgx.ok(
        "--config", config, "--database-url", f"sqlite:///{dbs['option']}", "db", "upgrade", env=env
    ).stdout
    assert str(dbs["option"]) in out
    assert created() == {"option"}
    out = bgx.ok("--config", config, "db", "upgrade", env=env).stdout
    assert str(dbs["env"]) in out
    assert created() == {"option", "env"}
    out = bgx.ok("--config", config, "db", "upgrade").stdout
    assert str(dbs["file"]) in out
    assert created() == {"option", "env", "file"}


def test_max_execution_time_option_beats_env_beats_file(
    bgx: Bgx, sqlite_url: str, tmp_path: Path
) -> None:
    """A task whose execute works until the deadline: how long a run lasts shows which
    budget won. The losing layers say 10s; the winning one 0.5s."""
    log = tmp_path / "calls.jsonl"
    short = _config(
        tmp_path, "short.toml", 'imports = ["tests.scripted"]\nmax_execution_time = "0.5s"\n'
    )
    long = _config(
        tmp_path, "long.toml", 'imports = ["tests.scripted"]\nmax_execution_time = "10s"\n'
    )
    url = ("--database-url", sqlite_url)
    # `imports` from the config file lets the ref be enqueued without --import.
    bgx.ok("--config", short, *url, "enqueue", "t", scripted(log, {"execute": ["until-deadline"]}))

    cases = [
        ("file", [short], {}, []),
        ("env", [long], {"BGTASKEX_MAX_EXECUTION_TIME": "0.5"}, []),
        (
            "option",
            [long],
            {"BGTASKEX_MAX_EXECUTION_TIME": "10"},
            ["--max-execution-time", "500ms"],
        ),
    ]
    for layer, config, env, option in cases:
        ran = bgx.ok("--config", *config, *url, "run-once", *option, env=env)
        counts = summary(ran)
        assert counts["paused"] == 1, (layer, describe(ran))
        assert 0.4 <= counts["elapsed"] < 3.0, (layer, describe(ran))
    assert hooks(log) == ["init", "execute", "execute", "execute"]


# -- run-once fast path, db upgrade ---------------------------------------------------


def _idle_run(bgx: Bgx, *args: object) -> str:
    """`run-once` under -X importtime: returns stdout; asserts SQLAlchemy stayed out."""
    result = bgx(*args, "run-once", python_flags=("-X", "importtime"))
    assert result.returncode == 0, describe(result)
    assert "import time:" in result.stderr  # the flag took effect
    assert "sqlalchemy" not in result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    # Nor the run's machinery: the client, the models, the signal handlers of a run.
    for heavy in ("bgtaskex.client", "bgtaskex.models", "bgtaskex.run.signals", "signal"):
        assert heavy not in imported, heavy
    assert result.stdout.startswith("nothing due"), describe(result)
    assert len(result.stdout.splitlines()) == 1
    return result.stdout


def test_run_once_idle_fast_path(bgx: Bgx, tmp_path: Path, cli_env: dict[str, str]) -> None:
    db = tmp_path / "idle.db"
    url = ("--database-url", f"sqlite:///{db}")
    _idle_run(bgx, *url)
    assert not db.exists(), "an idle run must not create the database"
    _idle_run(bgx)  # the default embedded database in the private HOME
    assert not (Path(cli_env["XDG_DATA_HOME"]) / "bgtaskex" / "bgtaskex.db").exists()

    bgx.ok(*url, "db", "upgrade")
    _idle_run(bgx, *url)

    # With a task due, the full run happens (and does need SQLAlchemy)...
    bgx.ok(*url, "enqueue", "t", "bgtaskex.examples:NothingToDo")
    busy = bgx(*url, "run-once", python_flags=("-X", "importtime"))
    assert busy.returncode == 0, describe(busy)
    assert "sqlalchemy" in busy.stderr
    assert summary(busy)["finished"] == 1
    # ...and once the task has ended, the fast path is back.
    _idle_run(bgx, *url)


def test_db_upgrade_reports_revision(bgx: Bgx, db_url: str) -> None:
    first = bgx.ok("--database-url", db_url, "db", "upgrade").stdout
    assert f"schema at {HEAD_REVISION}" in first and "was empty" in first, first
    assert len(first.splitlines()) == 1
    second = bgx.ok("--database-url", db_url, "db", "upgrade").stdout
    assert f"schema at {HEAD_REVISION}" in second and "already current" in second, second


# -- demo -----------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_demo_on_default_database(bgx: Bgx, cli_env: dict[str, str]) -> None:
    result = bgx.ok("demo", "--budget", "0.3", timeout=240)
    lines = result.stdout.splitlines()
    runs = [line for line in lines if line.startswith("run ")]
    assert len(runs) >= 3, result.stdout
    assert "task paused" in runs[0]
    assert "task finished" in runs[-1]
    assert all("task finished" not in line for line in runs[:-1])
    assert "16252325 primes" in lines[-1]

    db = Path(cli_env["XDG_DATA_HOME"]) / "bgtaskex" / "bgtaskex.db"
    assert db.exists()
    task = bgx.json("show", "1", "--json")
    assert task["status"] == "finished"
    assert [a["status"] for a in task["actions"]] == ["done", "skipped", "done"]

    # #15 attack: the demo's runs are recorded as process `demo`, and `check` does
    # not count them as runs to expect more of (it warned for ever after the demo).
    recorded = bgx.json("runs", "--json")
    assert recorded and {r["process"] for r in recorded} == {"demo"}, recorded
    check = bgx("check", "--stale-after", "1ms")
    assert check.returncode == 0 and check.stdout.startswith("BGTASKEX OK"), describe(check)


# -- a window that closes while the run starts up ------------------------------------------

#: A declared module that holds the start-up (its import) until BGX_TEST_HOLD_UNTIL (a
#: time.time() stamp), and writes the time its import began to BGX_TEST_HOLD_LOG.
SLOW_IMPORT = """\
import os, time
with open(os.environ["BGX_TEST_HOLD_LOG"], "w", encoding="utf-8") as log:
    log.write(repr(time.time()))
time.sleep(max(0.0, float(os.environ["BGX_TEST_HOLD_UNTIL"]) - time.time()))
"""


def _fixed_zone_file(path: Path, offset: int) -> Path:
    """A TZif file of one fixed UTC offset in seconds (any whole number of seconds), for
    the TZ variable: tzlocal and zoneinfo read it as the local zone."""
    import struct

    abbr = b"SKW\0"
    head = b"TZif2" + b"\0" * 15 + struct.pack(">6l", 0, 0, 0, 0, 1, len(abbr))
    body = struct.pack(">lBB", offset, 0, 0) + abbr
    sign = "-" if offset >= 0 else "+"  # POSIX: east of UTC is negative
    hours, rest = divmod(abs(offset), 3600)
    footer = f"\n<SKW>{sign}{hours}:{rest // 60:02d}:{rest % 60:02d}\n".encode()
    path.write_bytes(head + body + head + body + footer)
    return path


def test_run_once_process_whose_window_closes_during_start_up(bgx: Bgx, tmp_path: Path) -> None:
    """The window is read again once the run can start (af32d5f): a weekly window that
    closes while the declared modules are imported leaves the run outside it ("outside
    its window", the process's callable not called, the due task untouched), not a run
    past the window's end. The local zone is a fixed offset whose next whole minute (a
    window ends on one) comes about 4 s after the start."""
    import time
    from datetime import UTC, timedelta, timezone

    real = datetime.now(UTC)
    hours = 12 - real.hour  # local noon-ish: the window never crosses midnight
    seconds = (59 - 4 - real.second) % 60
    offset = hours * 3600 + seconds
    local = real.astimezone(timezone(timedelta(seconds=offset)))
    closes = (local + timedelta(minutes=1)).replace(second=0, microsecond=0)
    assert 2 < (closes - local).total_seconds() < 8, (local, closes)
    zone = _fixed_zone_file(tmp_path / "skewed.tzif", offset)
    (tmp_path / "slowstart.py").write_text(SLOW_IMPORT, encoding="utf-8")
    planner_log, hold_log = tmp_path / "planner.jsonl", tmp_path / "hold.log"
    url = f"sqlite:///{tmp_path / 'window.db'}"
    config = tmp_path / "window.toml"
    config.write_text(
        f'database_url = "{url}"\n'
        f'lock_file = "{tmp_path / "run.lock"}"\n'
        'imports = ["slowstart", "tests.scripted"]\n'
        "[[processes]]\n"
        'name = "closing"\n'
        'queues = ["closing"]\n'
        'every = "1s"\n'
        'callable = "tests.planner:plan"\n'
        f'window = {{days = [{local.isoweekday()}], start = "00:00", '
        f'end = "{closes:%H:%M}"}}\n',
        encoding="utf-8",
    )
    bgx.ok("--config", config, "db", "upgrade")
    task = bgx.json(
        "--config", config, "enqueue", "t", "tests.scripted:Noop", "--queue", "closing", "--json"
    )
    env = {
        "TZ": f":{zone}",
        "PYTHONPATH": f"{tmp_path}:{bgx.env['PYTHONPATH']}",
        "BGX_TEST_HOLD_UNTIL": repr(closes.timestamp() + 0.5),
        "BGX_TEST_HOLD_LOG": str(hold_log),
        "BGX_TEST_PLANNER_LOG": str(planner_log),
    }
    result = bgx("--config", config, "run-once", "--process", "closing", env=env)
    began = float(hold_log.read_text(encoding="utf-8"))
    assert began < closes.timestamp(), "start-up too slow: the plan came after the close"
    assert time.time() > closes.timestamp()
    assert result.returncode == 0, describe(result)
    assert "outside its window" in result.stdout, describe(result)
    assert not planner_log.exists(), planner_log.read_text(encoding="utf-8")
    shown = bgx.json("--config", config, "show", str(task["id"]), "--json")
    assert shown["status"] == "created", shown


SLIPPED = """
from bgtaskex import Action


class BadDelay(Action):
    retry_delay = "30s"  # the config's syntax: the class attribute is seconds

    def execute(self, deadline):
        return True
"""


def test_enqueue_refuses_a_class_with_a_bad_retry_delay(
    bgx: Bgx, sqlite_url: str, tmp_path: Path
) -> None:
    """Attack #14 finding 13: such a class failed at every run, the task stuck for ever;
    the ref is refused at enqueue as invalid (exit 2), one line naming the attribute."""
    (tmp_path / "slipped.py").write_text(SLIPPED, encoding="utf-8")
    env = {"PYTHONPATH": f"{tmp_path}:{bgx.env['PYTHONPATH']}"}
    url = ("--database-url", sqlite_url, "--import", "slipped")
    result = bgx(*url, "enqueue", "t", "slipped:BadDelay", env=env)
    assert result.returncode == 2, describe(result)
    line = _one_error_line(result)
    assert "slipped:BadDelay" in line and "BadDelay.retry_delay = '30s'" in line, line
    assert bgx.json(*url, "list", "--json", env=env) == []


@pytest.mark.parametrize(
    ("not_before", "expected"),
    [
        (12345, 'task file: "not_before" takes a date like 2026-11-28T14:30'),
        ("2h", 'task file: "not_before" takes a date like 2026-11-28T14:30'),
        ("someday", 'task file: "not_before": expected a date like 2026-11-28T14:30'),
    ],
)
def test_a_task_file_with_a_bad_not_before_is_told_so(
    bgx: Bgx, sqlite_url: str, not_before: object, expected: str
) -> None:
    """Attack #14 finding 15: it was "--at: expected a duration ago (2h, 7d) or a date"
    (no --at was given; a due time is no duration ago) or "for a delay use --in 12345"."""
    spec = {"name": "t", "actions": [{"ref": "tests.scripted:Noop"}], "not_before": not_before}
    url = ("--database-url", sqlite_url, *IMPORT)
    result = bgx(*url, "enqueue", "--file", "-", input=json.dumps(spec))
    assert result.returncode == 2, describe(result)
    line = _one_error_line(result)
    assert expected in line and "--at" not in line and "ago" not in line, line
    assert repr(not_before) in line, line


def test_enqueue_prints_the_due_time_in_utc_as_show_does(bgx: Bgx, sqlite_url: str) -> None:
    """Attack #14 finding 15: enqueue printed it in local time ("due 2999-12-24 07:00:00
    CET"), show and list in UTC."""
    url = ("--database-url", sqlite_url, *IMPORT)
    env = {"TZ": "Europe/Paris"}
    added = bgx.ok(
        *url, "enqueue", "t", "tests.scripted:Noop", "--at", "2999-12-24T06:00Z", env=env
    )
    assert ", due 2999-12-24 06:00:00 UTC (in " in added.stdout, describe(added)
    shown = bgx.ok(*url, "show", "1", env=env)
    assert "\ndue 2999-12-24 06:00:00 UTC (in " in shown.stdout, describe(shown)


def test_show_prints_the_last_failure_without_trailing_blanks(
    bgx: Bgx, sqlite_url: str, tmp_path: Path
) -> None:
    """Attack #14 finding 15: the "last failure:" line was padded to the console width."""
    url = ("--database-url", sqlite_url, *IMPORT)
    bgx.ok(*url, "enqueue", "t", scripted(tmp_path / "calls.jsonl", {"execute": ["raise"]}))
    assert bgx(*url, "run-once").returncode == 0  # logs the error with its traceback
    shown = bgx.ok(*url, "show", "1").stdout
    lines = [line for line in shown.splitlines() if "last failure:" in line]
    assert lines == ["     last failure: RuntimeError: A.execute scripted failure #1"], shown
