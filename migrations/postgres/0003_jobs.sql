-- One-off jobs: a Celery task due at one instant, possibly weeks away. A job
-- stays here until its release window opens (at most 15 minutes before it
-- is due), then goes to SQS with DelaySeconds for the remainder.
CREATE TABLE jobs (
    id            uuid PRIMARY KEY,                 -- the Celery task id
    task          text NOT NULL,
    args          jsonb NOT NULL DEFAULT '[]',
    kwargs        jsonb NOT NULL DEFAULT '{}',
    queue         text NOT NULL DEFAULT 'celery',
    due_at        timestamptz NOT NULL,
    expires_at    timestamptz,
    priority      integer NOT NULL DEFAULT 0,
    headers       jsonb NOT NULL DEFAULT '{}',
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'released', 'cancelled', 'failed')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    released_at   timestamptz,
    attempts      integer NOT NULL DEFAULT 0,
    retry_at      timestamptz,
    last_error    text,
    scheduled_by  text NOT NULL DEFAULT current_user,
    CHECK (jsonb_typeof(args) = 'array'),
    CHECK (jsonb_typeof(kwargs) = 'object'),
    CHECK (jsonb_typeof(headers) = 'object')
);

-- "What is due next" reads only pending rows, in due order: cheap at
-- millions of rows because released ones are not in the index.
CREATE INDEX jobs_pending_due ON jobs (due_at) WHERE status = 'pending';
CREATE INDEX jobs_task_due ON jobs (task, due_at);

-- A new or moved job wakes the releasers, which may be sleeping until a
-- later one.
CREATE FUNCTION jobs_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('sqsbeat_jobs', TG_TABLE_SCHEMA);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER jobs_changed
    AFTER INSERT OR UPDATE OF due_at, status ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_changed();

-- Scheduling from application code, inside the application's own
-- transaction: the job exists if and only if that transaction commits.
--   SELECT sqsbeat.schedule_job('app.tasks.send_report', now() + interval '14 days',
--                               kwargs => '{"account": 42}');
CREATE FUNCTION schedule_job(
    task       text,
    due_at     timestamptz,
    args       jsonb DEFAULT '[]',
    kwargs     jsonb DEFAULT '{}',
    queue      text DEFAULT 'celery',
    expires_at timestamptz DEFAULT NULL,
    priority   integer DEFAULT 0,
    headers    jsonb DEFAULT '{}',
    id         uuid DEFAULT NULL
) RETURNS uuid AS $$
DECLARE
    new_id uuid := coalesce(id, gen_random_uuid());
BEGIN
    IF task IS NULL OR task = '' OR task ~ '\s' THEN
        RAISE EXCEPTION 'schedule_job: task must be a Celery task name, got %', quote_literal(coalesce(task, 'NULL'));
    END IF;
    IF due_at IS NULL THEN
        RAISE EXCEPTION 'schedule_job: due_at is required';
    END IF;
    IF expires_at IS NOT NULL AND expires_at <= due_at THEN
        RAISE EXCEPTION 'schedule_job: expires_at (%) must be after due_at (%)', expires_at, due_at;
    END IF;
    INSERT INTO jobs (id, task, args, kwargs, queue, due_at, expires_at, priority, headers)
    VALUES (new_id, schedule_job.task, schedule_job.args, schedule_job.kwargs, schedule_job.queue,
            schedule_job.due_at, schedule_job.expires_at, schedule_job.priority, schedule_job.headers);
    RETURN new_id;
END;
$$ LANGUAGE plpgsql;
