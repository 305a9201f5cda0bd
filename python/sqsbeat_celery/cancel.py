"""Cancel a diverted task by its Celery id.

sqsbeat keeps each diverted task as a one-off job under its Celery task id
in ``<schema>.jobs``; cancelling flips a ``pending`` row to ``cancelled``,
as ``sqsbeat cancel ID`` does. A job that sqsbeat is releasing or has
released is on its way to its SQS queue and can no longer be cancelled.
"""

from __future__ import annotations

import importlib
import sys
import uuid

DEFAULT_SCHEMA = "sqsbeat"

_SQL = "UPDATE {table} SET status = 'cancelled' WHERE id = {p} AND status = 'pending'"


def cancel(conn_or_dsn, task_id, schema: str = DEFAULT_SCHEMA) -> bool:
    """Cancels the pending sqsbeat job of Celery task ``task_id``.

    ``conn_or_dsn`` is either

    * an open DB-API 2.0 connection to sqsbeat's PostgreSQL database
      (psycopg 3, psycopg2, pg8000, ...): the UPDATE runs in the caller's
      transaction and is **not committed here**, so it can commit or roll
      back together with the caller's own changes (unless the connection is
      in autocommit mode); or
    * a DSN string (``postgresql://user@host/db``): a connection is opened
      with whichever of psycopg (3) or psycopg2 is installed, the change is
      committed and the connection closed.

    ``schema`` is sqsbeat's ``[database] schema`` (default ``sqsbeat``).

    Returns True when a pending job was cancelled; False when there is no
    pending job with that id: it is being released or was released to SQS
    (the task will run), was cancelled or failed, or sqsbeat has not read it
    from the intake queue yet (it does so within seconds; try again then).
    """
    try:
        key = str(uuid.UUID(str(task_id)))
    except ValueError:
        raise ValueError(
            f"task id {task_id!r} is not a UUID; sqsbeat keeps only tasks with UUID ids "
            "(Celery's default)") from None
    table = f"{_quote_ident(schema)}.jobs"
    if isinstance(conn_or_dsn, str):
        conn = _connect(conn_or_dsn)
        try:
            done = _update(conn, table, key)
            conn.commit()
            return done
        finally:
            conn.close()
    return _update(conn_or_dsn, table, key)


def _update(conn, table, key):
    sql = _SQL.format(table=table, p=_placeholder(conn))
    cur = conn.cursor()
    try:
        cur.execute(sql, (key,) if _placeholder(conn) != ":id" else {"id": key})
        return cur.rowcount == 1
    finally:
        cur.close()


def _placeholder(conn):
    """The parameter marker of the connection's driver (DB-API ``paramstyle``)."""
    module = sys.modules.get(type(conn).__module__.split(".")[0])
    style = getattr(module, "paramstyle", "format")
    return {"qmark": "?", "numeric": ":1", "named": ":id"}.get(style, "%s")


def _quote_ident(name):
    if not isinstance(name, str) or not name:
        raise ValueError(f"schema must be a non-empty name, got {name!r}")
    return '"' + name.replace('"', '""') + '"'


def _connect(dsn):
    for name in ("psycopg", "psycopg2"):
        try:
            driver = importlib.import_module(name)
        except ImportError:
            continue
        return driver.connect(dsn)
    raise RuntimeError(
        "cancel() with a DSN needs psycopg (pip install 'sqsbeat-celery[postgres]') or psycopg2; "
        "or pass an open DB-API connection instead")
