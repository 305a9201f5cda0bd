-- Periodic entries kept in the database (see migrations/postgres). JSON
-- fields are text; instants are RFC 3339 text. A change bumps
-- entries_version, which the running process checks every second.
CREATE TABLE entries (
    name        TEXT PRIMARY KEY,
    task        TEXT NOT NULL,
    cron        TEXT,
    crontab     TEXT,
    every       TEXT,
    timezone    TEXT,
    args        TEXT NOT NULL DEFAULT '[]',
    kwargs      TEXT NOT NULL DEFAULT '{}',
    queue       TEXT,
    priority    INTEGER,
    headers     TEXT NOT NULL DEFAULT '{}',
    expires     TEXT,
    enabled     INTEGER NOT NULL DEFAULT 1,
    start_at    TEXT,
    end_at      TEXT,
    catch_up    TEXT,
    grace       TEXT,
    jitter      TEXT,
    anchor      TEXT,
    group_id    TEXT,
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE entries_version (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    version  INTEGER NOT NULL
);
INSERT INTO entries_version (id, version) VALUES (1, 0);

CREATE TRIGGER entries_ins AFTER INSERT ON entries BEGIN UPDATE entries_version SET version = version + 1; END;
CREATE TRIGGER entries_upd AFTER UPDATE ON entries BEGIN UPDATE entries_version SET version = version + 1; END;
CREATE TRIGGER entries_del AFTER DELETE ON entries BEGIN UPDATE entries_version SET version = version + 1; END;
