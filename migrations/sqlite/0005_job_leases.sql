-- One-off jobs are claimed as a lease (see migrations/postgres/0005): status
-- 'releasing', a lease token and the end of the lease. SQLite cannot alter a
-- CHECK constraint, so the table is rebuilt.
CREATE TABLE jobs_leased (
    id            TEXT PRIMARY KEY,
    task          TEXT NOT NULL,
    args          TEXT NOT NULL DEFAULT '[]',
    kwargs        TEXT NOT NULL DEFAULT '{}',
    queue         TEXT NOT NULL DEFAULT 'celery',
    due_at        TEXT NOT NULL,
    expires_at    TEXT,
    priority      INTEGER NOT NULL DEFAULT 0,
    headers       TEXT NOT NULL DEFAULT '{}',
    status        TEXT NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'releasing', 'released', 'cancelled', 'failed')),
    created_at    TEXT NOT NULL,
    released_at   TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    retry_at      TEXT,
    last_error    TEXT,
    scheduled_by  TEXT NOT NULL DEFAULT '',
    lease         TEXT,
    lease_until   TEXT
);
INSERT INTO jobs_leased (id, task, args, kwargs, queue, due_at, expires_at, priority, headers, status,
                         created_at, released_at, attempts, retry_at, last_error, scheduled_by)
SELECT id, task, args, kwargs, queue, due_at, expires_at, priority, headers, status,
       created_at, released_at, attempts, retry_at, last_error, scheduled_by
FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_leased RENAME TO jobs;

CREATE INDEX jobs_pending_due ON jobs (due_at) WHERE status = 'pending';
CREATE INDEX jobs_task_due ON jobs (task, due_at);
CREATE INDEX jobs_releasing ON jobs (lease_until) WHERE status = 'releasing';
CREATE INDEX jobs_pending_fifo ON jobs (due_at) WHERE status = 'pending' AND substr(queue, -5) = '.fifo';
CREATE INDEX jobs_pending_delayed ON jobs (due_at) WHERE status = 'pending' AND substr(queue, -5) <> '.fifo';
