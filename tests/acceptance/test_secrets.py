"""A password given as `?password=` in a database URL never leaves the process: not in
`check`, `db upgrade`, any error line or log line (text or JSON), nor in the stored
history of a retention walk whose database is unreachable (`show`, `show --json`)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import sqlalchemy

from tests.acceptance.conftest import Bgx, describe, run_many

SECRET = "s3cr3t"

#: Databases nothing listens on, and a server that refuses the password.
REFUSED = {
    "postgresql down": "postgresql+psycopg://app@127.0.0.1:1/app",
    "mariadb down": "mysql+pymysql://app@127.0.0.1:1/app",
    "mariadb denied": "mysql+pymysql://root@127.0.0.1:3306/test",
}

pytestmark = pytest.mark.timeout(180)


def with_password(url: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}password={SECRET}"


def _clean(result: subprocess.CompletedProcess[str], hook_error: bool = False) -> None:
    """No secret; no traceback, but that of an action's error, which a run logs."""
    assert SECRET not in result.stdout + result.stderr, describe(result)
    assert hook_error or "Traceback" not in result.stderr, describe(result)


def _one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The run's one `bgtaskex: error:` line; any other line on stderr is a log line."""
    assert result.returncode == code, describe(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("bgtaskex: error:")]
    assert len(errors) == 1, describe(result)
    return errors[0]


@pytest.mark.parametrize("where", list(REFUSED))
def test_an_unreachable_database_never_shows_its_password(bgx: Bgx, where: str) -> None:
    """Every command that opens the database fails with one line (exit 4) that shows
    the URL with password=***, and so do its DEBUG logs, text or JSON; `check` warns
    (exit 1) the same way."""
    url = with_password(REFUSED[where])
    debug = ("--database-url", url, "--log-level", "DEBUG")
    found = run_many(
        bgx.env,
        {
            "check": ([*debug, "check"], None),
            "upgrade": ([*debug, "db", "upgrade"], None),
            "upgrade-json": ([*debug, "--log-format", "json", "db", "upgrade"], None),
            "run-once": ([*debug, "run-once"], None),
            "list-json": ([*debug, "--log-format", "json", "list", "--json"], None),
        },
    )
    for key, result in found.items():
        _clean(result)
        if key == "check":
            assert result.returncode == 1, describe(result)
            assert result.stdout.startswith("BGTASKEX WARNING - "), describe(result)
            assert "password=***" in result.stdout, describe(result)
        else:
            assert "password=***" in _one_error_line(result, 4), describe(result)
        if "json" in key:  # every log line still parses: masking kept the JSON valid
            for line in result.stderr.splitlines():
                if not line.startswith("bgtaskex: error:"):
                    json.loads(line)


@pytest.mark.postgres
def test_a_reachable_database_never_shows_its_query_password(bgx: Bgx, pg_schema_url: str) -> None:
    """PostgreSQL (trust) takes the URL and ignores its password: `db upgrade` names the
    database with password=***, `check` is OK, and the logs of a run hold no secret."""
    url = with_password(pg_schema_url)
    upgrade = bgx("--database-url", url, "--log-level", "DEBUG", "db", "upgrade")
    _clean(upgrade)
    assert upgrade.returncode == 0 and "password=***" in upgrade.stdout, describe(upgrade)
    bgx.ok("--database-url", url, "enqueue", "t", "bgtaskex.examples:NothingToDo")
    found = run_many(
        bgx.env,
        {
            "check": (["--database-url", url, "--log-level", "DEBUG", "check"], None),
            "run": (["--database-url", url, "--log-level", "DEBUG", "run-once"], None),
        },
    )
    for result in found.values():
        _clean(result)
        assert result.returncode == 0, describe(result)
    assert found["check"].stdout.startswith("BGTASKEX OK - "), describe(found["check"])


def test_a_walk_on_an_unreachable_database_keeps_the_password_out_of_history(
    bgx: Bgx, db_url: str, tmp_path: Path
) -> None:
    """A retention rule whose database is down, with ?password= in its URL: the walk's
    failure is in the task's history (bgtaskex's own database, each backend) without the
    password, and neither the run's logs nor `show` / `show --json` show it."""
    config = tmp_path / "bgtaskex.toml"
    config.write_text(
        f"database_url = {json.dumps(db_url)}\n\n[[retention_rules]]\n"
        f'name = "down"\ndatabase = {json.dumps(with_password(REFUSED["postgresql down"]))}\n'
        'table = "tickets"\ndate_column = "created_at"\nolder_than = "30d"\n',
        encoding="utf-8",
    )
    cli = ("--config", str(config))
    walk = '{"rule": "down"}'
    for fmt in ("text", "json"):  # a walk per run, its failure logged each way
        added = bgx.ok(*cli, "enqueue", fmt, f"bgtaskex.builtin.retention:PurgeRows={walk}", "-q")
        task_id = int(added.stdout)
        run = bgx(*cli, "--log-level", "DEBUG", "--log-format", fmt, "run-once")
        _clean(run, hook_error=True)
        assert run.returncode == 0 and "password=***" in run.stderr, describe(run)
    found = run_many(
        bgx.env,
        {
            "show": ([*cli, "show", str(task_id), "--verbose"], None),
            "json": ([*cli, "show", str(task_id), "--json"], None),
            "rules": ([*cli, "rules", "list", "--json"], None),
        },
    )
    for result in found.values():
        _clean(result)
        assert result.returncode == 0, describe(result)
    events = json.loads(found["json"].stdout)["events"]
    failures = [e for e in events if e["error"] and "unavailable" not in e["error"]]
    assert [e for e in events if e["error"]], f"the walk's failure is in the history: {events}"
    assert all("password=***" in e["error"] for e in events if e["error"]), failures
    # What is stored, not only what `show` prints.
    engine = sqlalchemy.create_engine(db_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(
                sqlalchemy.text("SELECT message, error FROM bgtaskex_events")
            ).all()
    finally:
        engine.dispose()
    assert stored and not any(SECRET in (m or "") + (e or "") for m, e in stored)
