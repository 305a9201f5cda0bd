"""cancel(): a pending job of a diverted task becomes cancelled, nothing else changes.

Against a real PostgreSQL database with sqsbeat's own jobs table (its
migrations, in schema sqsbeat).
"""

import sqlite3
import uuid

import psycopg
import pytest

import sqsbeat_celery


def add_job(dsn, status="pending", schema="sqsbeat"):
    job = str(uuid.uuid4())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {schema}.jobs (id, task, due_at, status) "
                     "VALUES (%s, 'tests.add', now() + interval '2 days', %s)", (job, status))
    return job


def status(dsn, job, schema="sqsbeat"):
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT status FROM {schema}.jobs WHERE id = %s", (job,)).fetchone()
    return row and row[0]


def row(dsn, job):
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT status, envelope, retries, last_error FROM sqsbeat.jobs WHERE id = %s",
            (str(job),)).fetchone()


def test_cancel_by_dsn_flips_a_pending_job_once(pg_dsn):
    job, other = add_job(pg_dsn), add_job(pg_dsn)
    assert sqsbeat_celery.cancel(pg_dsn, job) is True
    assert status(pg_dsn, job) == "cancelled"
    assert status(pg_dsn, other) == "pending"
    assert sqsbeat_celery.cancel(pg_dsn, job) is False


@pytest.mark.parametrize("state", ["releasing", "released", "failed"])
def test_a_job_that_is_not_pending_stays_as_it_is(pg_dsn, state):
    job = add_job(pg_dsn, state)
    assert sqsbeat_celery.cancel(pg_dsn, job) is False
    assert status(pg_dsn, job) == state


def test_a_task_sqsbeat_has_not_read_yet_is_held_cancelled_under_its_id(pg_dsn):
    """Cancelled right after apply_async, before the intake stored it: a
    cancelled row with no envelope, which the intake stores the message
    into, still cancelled (tests/it/intake.rs runs that side)."""
    job = uuid.uuid4()
    assert sqsbeat_celery.cancel(pg_dsn, job) is True
    status_, envelope, retries, why = row(pg_dsn, job)
    assert (status_, envelope, retries) == ("cancelled", None, 0)
    assert "before sqsbeat read the task" in why
    assert sqsbeat_celery.cancel(pg_dsn, job) is False, "cancelled already"


def test_a_held_id_rolls_back_with_the_callers_transaction(pg_dsn):
    job = uuid.uuid4()
    with psycopg.connect(pg_dsn) as conn:
        assert sqsbeat_celery.cancel(conn, job) is True
        conn.rollback()
    assert row(pg_dsn, job) is None


def test_with_a_connection_the_caller_commits_or_rolls_back(pg_dsn):
    job = add_job(pg_dsn)
    with psycopg.connect(pg_dsn) as conn:
        assert sqsbeat_celery.cancel(conn, job) is True
        conn.rollback()
    assert status(pg_dsn, job) == "pending"
    with psycopg.connect(pg_dsn) as conn:
        assert sqsbeat_celery.cancel(conn, job) is True
        conn.commit()
    assert status(pg_dsn, job) == "cancelled"


def test_another_schema(pg_dsn):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA \"beat two\"")
        conn.execute("CREATE TABLE \"beat two\".jobs (LIKE sqsbeat.jobs INCLUDING ALL)")
    job = add_job(pg_dsn, schema='"beat two"')
    sqsbeat_celery.cancel(pg_dsn, job)
    assert status(pg_dsn, job, schema='"beat two"') == "pending", "another schema's job untouched"
    assert sqsbeat_celery.cancel(pg_dsn, job, schema="beat two") is True
    assert status(pg_dsn, job, schema='"beat two"') == "cancelled"


def test_a_driver_with_another_placeholder_style():
    """Any DB-API driver works: sqlite3 uses '?' placeholders."""
    conn = sqlite3.connect(":memory:")
    conn.execute("ATTACH DATABASE ':memory:' AS sqsbeat")
    conn.execute("CREATE TABLE sqsbeat.jobs (id TEXT PRIMARY KEY, task TEXT NOT NULL, "
                 "due_at TEXT NOT NULL, status TEXT, last_error TEXT)")
    job = str(uuid.uuid4())
    conn.execute("INSERT INTO sqsbeat.jobs VALUES (?, 't', '2030-01-01', 'pending', NULL)", (job,))
    assert sqsbeat_celery.cancel(conn, job) is True
    assert conn.execute("SELECT status FROM sqsbeat.jobs").fetchone() == ("cancelled",)
    unseen = str(uuid.uuid4())
    assert sqsbeat_celery.cancel(conn, unseen) is True
    assert conn.execute("SELECT status FROM sqsbeat.jobs WHERE id = ?", (unseen,)).fetchone() == \
        ("cancelled",)


def test_a_task_id_that_is_not_a_uuid_is_refused():
    with pytest.raises(ValueError, match="not a UUID"):
        sqsbeat_celery.cancel("postgresql://unused", "order-42")
