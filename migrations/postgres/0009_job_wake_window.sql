-- A new or moved pending job woke every releaser for a pass, even one due
-- in 14 days: an application scheduling steadily kept every replica busy.
-- A releaser never sleeps longer than 30 s and then reads what is due
-- next, and no release window is longer than SQS's 15 minutes; so only a
-- job due within 16 minutes of now (the slack covers clock skew between
-- hosts and the database) can open its window before a releaser would
-- look anyway. Only those notify. clock_timestamp(), not now(): the
-- application's transaction may have begun long before the insert. The
-- payload stays the schema's name.
DROP TRIGGER jobs_inserted ON jobs;
DROP TRIGGER jobs_changed ON jobs;
CREATE TRIGGER jobs_inserted
    AFTER INSERT ON jobs
    FOR EACH ROW WHEN (NEW.status = 'pending'
                       AND NEW.due_at <= clock_timestamp() + interval '16 minutes')
    EXECUTE FUNCTION jobs_changed();
CREATE TRIGGER jobs_changed
    AFTER UPDATE OF status, due_at ON jobs
    FOR EACH ROW WHEN (NEW.status = 'pending'
                       AND (OLD.status <> 'pending' OR OLD.due_at IS DISTINCT FROM NEW.due_at)
                       AND NEW.due_at <= clock_timestamp() + interval '16 minutes')
    EXECUTE FUNCTION jobs_changed();
