from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bgtaskex.exceptions import UsageError
from bgtaskex.models import STATUS_ORDER, TaskStatus, TaskType, run_order
from bgtaskex.store.engine import make_engine
from bgtaskex.urls import mask_secrets, sqlite_path


@pytest.mark.parametrize(
    "text",
    [
        "postgresql+psycopg://user:s3cret@db.example:5432/app",
        "could not connect: mysql://root:s3cret@10.0.0.1/x failed",
        "host=db user=u password=s3cret dbname=x",
    ],
)
def test_mask_secrets(text: str) -> None:
    masked = mask_secrets(text)
    assert "s3cret" not in masked
    assert "***" in masked


def test_mask_keeps_urls_without_password() -> None:
    assert mask_secrets("sqlite:////var/lib/x.db") == "sqlite:////var/lib/x.db"
    assert mask_secrets("postgresql://user@host/db") == "postgresql://user@host/db"
    kept = "Access denied for user 'root'@'localhost' (using password: YES)"
    assert mask_secrets(kept) == kept


# -- the fuzz test over URL shapes -----------------------------------------------------
#
# A password is a random text between two markers that nothing else in a case can hold
# (the rest is lower-case): a password masked only in part leaves a marker behind.

START, END = "PWSTART", "PWEND"
word = st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
# Anything printable: @ : / ? # & % = ' " \ and non-ASCII included, but no blank.
raw = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc", "Z"]), max_size=12)
anything = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
schemes = st.sampled_from(
    ["postgresql", "postgresql+psycopg", "mysql+pymysql", "mariadb", "mssql+pyodbc", "sqlite"]
)
keys = st.sampled_from(["password", "passwd", "PASSWORD", "pwd", "db_password"])
others = st.sampled_from(["sslmode", "charset", "application_name", "connect_timeout"])


@st.composite
def secret_texts(draw: st.DrawFn) -> tuple[str, str, list[str]]:
    """(text holding a password, the password, parts that must stay readable)."""
    user, host, db, value = draw(word), draw(word), draw(word), draw(word)
    scheme, port = draw(schemes), draw(st.sampled_from(["", ":5432"]))
    shape = draw(st.sampled_from(["userinfo", "encoded", "query", "dsn", "quoted", "repr"]))
    if shape in ("userinfo", "encoded"):
        pw = START + draw(raw if shape == "userinfo" else anything) + END
        shown = pw if shape == "userinfo" else quote(pw, safe="")
        other = f"{draw(others)}={value}"
        text = f"{scheme}://{user}:{shown}@{host}{port}/{db}?{other}"
        readable = [f"{scheme}://{user}:***@{host}{port}/{db}?{other}"]
    elif shape == "query":
        # Raw, a query value may hold anything but "&" and blanks (SQLAlchemy splits there).
        body = draw(st.one_of(raw.map(lambda t: t.replace("&", "")), anything.map(quote)))
        pw = START + body + END
        before, after = f"{draw(others)}={value}", f"{draw(others)}={value}x"
        key = draw(keys)
        at_end = draw(st.booleans())
        query = [before, f"{key}={pw}"] if at_end else [before, f"{key}={pw}", after]
        text = f"{scheme}://{user}@{host}{port}/{db}?" + "&".join(query)
        readable = [f"{scheme}://{user}@{host}{port}/{db}?{before}&{key}=***"]
        readable += [] if at_end else [f"&{after}"]
    elif shape == "dsn":  # libpq's keyword form, as psycopg quotes it in errors
        body = draw(anything)
        pw = START + body + END
        quoted = "'" + pw.replace("\\", "\\\\").replace("'", "\\'") + "'"
        shown = draw(st.sampled_from([quoted, pw])) if not any(c.isspace() for c in pw) else quoted
        text = f"host={host} user={user} password={shown} dbname={db}"
        readable = [f"host={host} user={user} password=", f" dbname={db}"]
    else:
        pw = START + draw(anything) + END
        holder = {"host": host, "password": pw, "user": user}
        text = repr(holder) if shape == "repr" else json.dumps(holder)
        readable = [host, user]
    wrap = draw(st.sampled_from(["{}", "connection failed: {} (retrying)", "'{}'", "[{}]"]))
    return wrap.format(text), pw, readable


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(secret_texts())
def test_no_url_shape_shows_its_password(case: tuple[str, str, list[str]]) -> None:
    """Fuzz: whatever the URL's form and the password's characters, no part of the
    password survives masking, the rest of the URL does, and masking twice changes
    nothing more."""
    text, password, readable = case
    masked = mask_secrets(text)
    assert START not in masked and END not in masked, (text, masked)
    assert password not in masked and quote(password, safe="") not in masked
    assert "***" in masked
    for part in readable:
        assert part in masked, (part, masked)
    assert mask_secrets(masked) == masked


@pytest.mark.parametrize(
    ("url", "better"),
    [
        ("mysql://app:pw@db.example/app", "mysql+pymysql://app:***@db.example/app"),
        ("mariadb://app@db.example/app?password=pw", "mariadb+pymysql://app@db.example/app"),
        ("postgresql+pg8000://app@db/app", "postgresql+psycopg://app@db/app"),
    ],
)
def test_a_missing_default_driver_points_to_the_one_installed(url: str, better: str) -> None:
    """`mysql://` means MySQLdb, which bgtaskex[mysql] does not install: the hint names the
    URL of the driver it does install (PyMySQL, here installed), not the extra again."""
    with pytest.raises(UsageError) as raised:
        make_engine(url, None, 1.0)
    message = str(raised.value)
    assert f"use '{better}" in message, message
    assert "pip install" not in message and "pw" not in message.replace("pymysql", "")


def test_sqlite_path() -> None:
    assert sqlite_path("sqlite:////var/lib/b.db") == Path("/var/lib/b.db")
    assert sqlite_path("sqlite:///rel.db") == Path("rel.db")
    assert sqlite_path("sqlite://") is None
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("postgresql://h/db") is None


def test_run_order_is_type_then_status() -> None:
    order = [
        (TaskType.INTERACTIVE, TaskStatus.STARTING),
        (TaskType.INTERACTIVE, TaskStatus.RECOVERING),
        (TaskType.INTERACTIVE, TaskStatus.RUNNING),
        (TaskType.INTERACTIVE, TaskStatus.PAUSED),
        (TaskType.INTERACTIVE, TaskStatus.CREATED),
        (TaskType.CRON, TaskStatus.STARTING),
        (TaskType.CRON, TaskStatus.CREATED),
    ]
    keys = [run_order(t, s) for t, s in order]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert run_order(TaskType.CRON, TaskStatus.FINISHED) is None
    assert run_order(TaskType.INTERACTIVE, TaskStatus.FAILED) is None
    assert set(STATUS_ORDER) == {s for s in TaskStatus if not s.terminal}
