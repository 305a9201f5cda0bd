-- Periodic entries kept in the database, beside (never instead of) the
-- TOML files: the same fields, validated by the same code when loaded.
-- Manage them with `sqsbeat entries ...` or plain SQL; every change
-- notifies the running leader, which reloads within a second.
CREATE TABLE entries (
    name        text PRIMARY KEY,
    task        text NOT NULL,
    cron        text,
    crontab     jsonb,
    every       text,
    timezone    text,
    args        jsonb NOT NULL DEFAULT '[]',
    kwargs      jsonb NOT NULL DEFAULT '{}',
    queue       text,
    priority    integer,
    headers     jsonb NOT NULL DEFAULT '{}',
    expires     text,
    enabled     boolean NOT NULL DEFAULT true,
    start_at    timestamptz,
    end_at      timestamptz,
    catch_up    text,
    grace       text,
    jitter      text,
    anchor      timestamptz,
    group_id    text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The payload names the schema, so deployments in several schemas of one
-- database only react to their own changes.
CREATE FUNCTION entries_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('sqsbeat_entries', TG_TABLE_SCHEMA);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER entries_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION entries_changed();
