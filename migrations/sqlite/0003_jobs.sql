-- One-off jobs (see migrations/postgres/0003_jobs.sql). Instants are
-- fixed-width RFC 3339 UTC text, so text order is time order.
CREATE TABLE jobs (
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
                  CHECK (status IN ('pending', 'released', 'cancelled', 'failed')),
    created_at    TEXT NOT NULL,
    released_at   TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    retry_at      TEXT,
    last_error    TEXT,
    scheduled_by  TEXT NOT NULL DEFAULT ''
);

CREATE INDEX jobs_pending_due ON jobs (due_at) WHERE status = 'pending';
CREATE INDEX jobs_task_due ON jobs (task, due_at);
