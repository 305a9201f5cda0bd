"""Cancel a diverted task by its Celery id.

sqsbeat keeps each diverted task as a one-off job under its Celery task id
in ``<schema>.jobs``; cancelling flips a ``pending`` row to ``cancelled``,
as ``sqsbeat cancel ID`` does. A job that sqsbeat is releasing or has
released is on its way to its SQS queue and can no longer be cancelled.

The task may still be on the intake queue, not yet read by sqsbeat (it
reads within seconds, but a caller that cancels right after sending can be
sooner). Then there is no row to flip, and cancel inserts a ``cancelled``
row under the task id, with no envelope: sqsbeat stores the message into
it when it arrives, and a cancelled job stays cancelled whatever message
of that task id comes (INTAKE.md, section 4).
"""

from __future__ import annotations

import importlib
import sys
import uuid

DEFAULT_SCHEMA = "sqsbeat"

_CANCEL = "UPDATE {table} SET status = 'cancelled' WHERE id = {p} AND status = 'pending'"
#: The row a cancel leaves for a task sqsbeat has not read yet: ``task`` and
#: ``due_at`` are required columns, filled when the message arrives.
_HOLD = (
    "INSERT INTO {table} (id, task, due_at, status, last_error) "
    "VALUES ({p}, '(not read from the intake queue yet)', CURRENT_TIMESTAMP, 'cancelled', "
    "'cancelled by sqsbeat_celery.cancel() before sqsbeat read the task from the intake queue') "
    "ON CONFLICT (id) DO NOTHING")


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

    Returns True when sqsbeat will not release the task: its pending job
    is now cancelled or, when sqsbeat has not read the task from the intake
    queue yet, a cancelled row holds its id and the task is stored
    cancelled when it arrives. (An id sqsbeat never receives, such as a
    task sent with a short countdown, straight to its queue, leaves that
    row, naming no task, and stops nothing.)

    Returns False when a job with that id exists and is not pending: it is
    being released or was released to SQS (the task will run), or it was
    cancelled already, or failed.
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
    p = _placeholder(conn)
    params = (key,) if p != ":id" else {"id": key}
    cancel, hold = _CANCEL.format(table=table, p=p), _HOLD.format(table=table, p=p)
    cur = conn.cursor()
    try:
        cur.execute(cancel, params)
        if cur.rowcount == 1:
            return True
        cur.execute(hold, params)
        if cur.rowcount == 1:
            return True
        # A row appeared between the two statements: sqsbeat stored the task
        # meanwhile. This statement sees it (read committed), pending or not.
        cur.execute(cancel, params)
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
