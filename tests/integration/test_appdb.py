"""The application-database helpers of tests/support/appdb.py, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, delete, insert, inspect, make_url, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from tests.support.appdb import (
    REFERENCE,
    STATUSES,
    add_refusing_trigger,
    app_engine,
    create_app_schema,
    fill,
    ids_where,
    orphans,
    snapshot,
    ticket_comments,
    ticket_links,
    tickets,
)

N = 2_000
CHILDLESS = (
    "id NOT IN (SELECT ticket_id FROM ticket_comments) "
    "AND id NOT IN (SELECT ticket_id FROM ticket_links)"
)


@pytest.fixture
def app(app_url: str) -> str:
    create_app_schema(app_url)
    fill(app_url, N, seed=1)
    return app_url


def delete_tickets(url: str, ids: Iterable[int]) -> int:
    """DELETE FROM tickets WHERE id IN (ids), one statement in its own transaction."""
    engine = app_engine(url)
    try:
        with engine.begin() as conn:
            return conn.execute(delete(tickets).where(tickets.c.id.in_(list(ids)))).rowcount
    finally:
        engine.dispose()


def test_schema_and_fill(app: str, tmp_path: Path) -> None:
    snap = snapshot(app)
    assert snap["tickets"] == set(range(1, N + 1))
    assert len(snap["ticket_comments"]) > N // 4
    assert len(snap["ticket_links"]) > N // 8
    assert orphans(app) == 0
    window = {"lo": REFERENCE - timedelta(days=365), "hi": REFERENCE}
    assert ids_where(app, "created_at >= :lo AND created_at < :hi", window) == snap["tickets"]
    by_status = {s: ids_where(app, "status = :s", {"s": s}) for s in STATUSES}
    assert all(by_status.values())
    assert set().union(*by_status.values()) == snap["tickets"]

    # The same seed gives the same rows on every backend: compare with SQLite.
    ref = f"sqlite:///{tmp_path / 'reference.db'}"
    create_app_schema(ref)
    fill(ref, N, seed=1)
    assert snapshot(ref) == snap
    cutoff = {"cutoff": REFERENCE - timedelta(days=200)}
    old = ids_where(app, "created_at < :cutoff", cutoff)
    assert old == ids_where(ref, "created_at < :cutoff", cutoff)
    assert 0.3 * N < len(old) < 0.6 * N
    assert by_status == {s: ids_where(ref, "status = :s", {"s": s}) for s in STATUSES}


def test_fill_again_continues_the_ids(app: str) -> None:
    fill(app, 10, seed=2, children=False, ordered=True)
    assert snapshot(app)["tickets"] == set(range(1, N + 11))
    engine = app_engine(app)
    try:
        with engine.begin() as conn:  # the id sequences were moved past the explicit ids
            row = {"created_at": REFERENCE, "status": "open", "title": None}
            new_id = conn.execute(insert(tickets).values(row).returning(tickets.c.id)).scalar()
    finally:
        engine.dispose()
    assert new_id == N + 11


def test_datetime_parameters_compare_exactly(app: str) -> None:
    engine = app_engine(app)
    try:
        with engine.connect() as conn:
            at = conn.execute(select(tickets.c.created_at).where(tickets.c.id == 7)).scalar_one()
    finally:
        engine.dispose()
    assert isinstance(at, datetime)
    assert 7 in ids_where(app, "created_at <= :t", {"t": at})
    assert 7 not in ids_where(app, "created_at < :t", {"t": at})
    assert ids_where(app, "created_at = :t", {"t": at}) >= {7}


def test_trigger_refuses_exactly_the_given_ids(app: str) -> None:
    free = sorted(ids_where(app, CHILDLESS))
    assert len(free) > 10
    refused, allowed = free[:3], free[3:]
    add_refusing_trigger(app, refused)

    assert delete_tickets(app, [allowed[0]]) == 1
    for ticket_id in refused:
        with pytest.raises(DBAPIError, match="protected"):
            delete_tickets(app, [ticket_id])
    # A statement that touches one refused ticket fails as a whole: nothing is deleted.
    with pytest.raises(DBAPIError, match="protected"):
        delete_tickets(app, [allowed[1], refused[1]])
    assert allowed[1] in snapshot(app)["tickets"]
    # Every other childless ticket goes in one statement; only the refused ones stay.
    assert delete_tickets(app, allowed[1:]) == len(allowed) - 1
    assert sorted(ids_where(app, CHILDLESS)) == refused


def test_a_second_trigger_replaces_the_first(app: str) -> None:
    first, second = sorted(ids_where(app, CHILDLESS))[:2]
    add_refusing_trigger(app, [first])
    add_refusing_trigger(app, [second])
    assert delete_tickets(app, [first]) == 1
    with pytest.raises(DBAPIError, match="protected"):
        delete_tickets(app, [second])


def test_foreign_keys_are_enforced(app: str) -> None:
    ticket_id = min(ids_where(app, "id IN (SELECT ticket_id FROM ticket_comments)"))
    with pytest.raises(IntegrityError):
        delete_tickets(app, [ticket_id])
    engine = app_engine(app)
    try:
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(insert(ticket_links).values(id=10**6, ticket_id=10**6, url="x"))
        with engine.begin() as conn:
            for child in (ticket_comments, ticket_links):
                conn.execute(delete(child).where(child.c.ticket_id == ticket_id))
    finally:
        engine.dispose()
    assert delete_tickets(app, [ticket_id]) == 1
    assert ticket_id not in snapshot(app)["tickets"]
    assert orphans(app) == 0


_seen: dict[str, list[str]] = {}


@pytest.mark.parametrize("round_", [1, 2])
def test_each_test_gets_an_empty_database_of_its_own(app_url: str, round_: int) -> None:
    backend = make_url(app_url).get_backend_name()
    engine = app_engine(app_url)
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()
    earlier = _seen.setdefault(backend, [])
    assert app_url not in earlier
    if earlier and backend != "sqlite":  # the previous test's database was dropped
        gone = create_engine(earlier[-1])
        try:
            with pytest.raises(DBAPIError), gone.connect():
                pass
        finally:
            gone.dispose()
    earlier.append(app_url)
    create_app_schema(app_url)  # left behind for the next round to not see
    fill(app_url, 100, seed=round_)
