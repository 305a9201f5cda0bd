-- One-off jobs are claimed as a lease, not held in a transaction across the
-- send to SQS. A claim sets status 'releasing', a lease token and the end of
-- the lease in one short transaction; the settlement after the send touches
-- only rows still under that token. A replica that dies mid-send leaves its
-- rows 'releasing' until the lease ends; any replica then claims them again
-- (they go out with the same task id).
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('pending', 'releasing', 'released', 'cancelled', 'failed'));
ALTER TABLE jobs ADD COLUMN lease uuid, ADD COLUMN lease_until timestamptz;
CREATE INDEX jobs_releasing ON jobs (lease_until) WHERE status = 'releasing';
-- A FIFO queue takes no per-message delay, so its jobs are released only
-- once due; other queues' as their window opens. Separate heads per kind
-- let a claim and the releaser's wake-up read only rows that may be
-- released: 500 FIFO jobs inside the window but not yet due filled every
-- claim, and the releaser ran passes back to back.
CREATE INDEX jobs_pending_fifo ON jobs (due_at) WHERE status = 'pending' AND right(queue, 5) = '.fifo';
CREATE INDEX jobs_pending_delayed ON jobs (due_at) WHERE status = 'pending' AND right(queue, 5) <> '.fifo';

-- Wake the releasers only when there may be new work: a job inserted as
-- pending, set (back) to pending, or moved while pending. The statement
-- trigger this replaces also fired on statements that changed nothing, so
-- each release pass woke every releaser for another pass, forever.
DROP TRIGGER jobs_changed ON jobs;
CREATE TRIGGER jobs_inserted
    AFTER INSERT ON jobs
    FOR EACH ROW WHEN (NEW.status = 'pending')
    EXECUTE FUNCTION jobs_changed();
CREATE TRIGGER jobs_changed
    AFTER UPDATE OF status, due_at ON jobs
    FOR EACH ROW WHEN (NEW.status = 'pending'
                       AND (OLD.status <> 'pending' OR OLD.due_at IS DISTINCT FROM NEW.due_at))
    EXECUTE FUNCTION jobs_changed();

-- Applications call schedule_job() from their own sessions, whose
-- search_path ("$user", public by default) may not include sqsbeat's schema
-- or may find an application table named jobs first. The function now
-- carries its own search_path: this migration's schema (current_schema(),
-- sqsbeat's configured one), then pg_catalog, then pg_temp last so a
-- temporary table cannot stand in for sqsbeat's.
DO $$
BEGIN
    EXECUTE format(
        'ALTER FUNCTION schedule_job(text, timestamptz, jsonb, jsonb, text, timestamptz, integer, jsonb, uuid) '
        'SET search_path = %I, pg_catalog, pg_temp',
        current_schema());
END
$$;
