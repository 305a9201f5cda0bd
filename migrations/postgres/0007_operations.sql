-- Operating a running schedule: pauses, the history of changes made
-- through the CLI, manual runs, and which ledger rows backfill wrote.

-- One pause per entry, whatever defines the entry (a schedule file, the
-- entries table, django-celery-beat): its slots from paused_at until
-- paused_until (NULL: until resumed) are recorded as missed with reason
-- 'paused' and never caught up. A resume sets paused_until to its instant
-- instead of deleting the row, so a leader that was down during the pause
-- still misses those slots when it decides them later.
CREATE TABLE entry_pauses (
    entry         text PRIMARY KEY,
    paused_at     timestamptz NOT NULL,
    paused_until  timestamptz,
    reason        text,
    paused_by     text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- A running leader honours a pause or a resume within a second: every
-- change notifies it (the payload names the schema, as for entries).
CREATE FUNCTION pauses_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('sqsbeat_pauses', TG_TABLE_SCHEMA);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER pauses_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON entry_pauses
    FOR EACH STATEMENT EXECUTE FUNCTION pauses_changed();

-- Every change made through the CLI to an entry: who, when, what (the
-- fields that changed, before and after).
CREATE TABLE entry_history (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entry   text NOT NULL,
    at      timestamptz NOT NULL,
    actor   text NOT NULL,
    action  text NOT NULL CHECK (action IN ('add', 'replace', 'remove', 'enable', 'disable',
                                            'pause', 'resume', 'run', 'backfill')),
    detail  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX entry_history_by_entry ON entry_history (entry, id);

-- The ledger of manual runs (`sqsbeat entries run`). A manual run has no
-- slot: it is keyed by its (random) task id, apart from the ledger's
-- (entry, slot) key, so it never takes a slot's place, never moves a
-- cursor, and is never re-sent by a leader as an unconfirmed claim.
CREATE TABLE manual_runs (
    task_id       uuid PRIMARY KEY,
    entry         text NOT NULL,
    requested_at  timestamptz NOT NULL,
    queue         text NOT NULL,
    actor         text NOT NULL,
    outcome       text NOT NULL CHECK (outcome IN ('claimed', 'sent', 'failed')),
    error         text,
    sent_at       timestamptz
);
CREATE INDEX manual_runs_by_entry ON manual_runs (entry, requested_at);

-- Who wrote a ledger row: the beat, or `sqsbeat backfill`.
ALTER TABLE ledger ADD COLUMN source text NOT NULL DEFAULT 'beat'
    CHECK (source IN ('beat', 'backfill'));
