-- Operating a running schedule (see migrations/postgres/0007): pauses, the
-- history of changes made through the CLI, manual runs, and which ledger
-- rows backfill wrote. Instants are RFC 3339 text, JSON is text.

CREATE TABLE entry_pauses (
    entry         TEXT PRIMARY KEY,
    paused_at     TEXT NOT NULL,
    paused_until  TEXT,
    reason        TEXT,
    paused_by     TEXT NOT NULL,
    updated_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- A change bumps pauses_version, which the running process checks every
-- second.
CREATE TABLE pauses_version (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    version  INTEGER NOT NULL
);
INSERT INTO pauses_version (id, version) VALUES (1, 0);

CREATE TRIGGER pauses_ins AFTER INSERT ON entry_pauses BEGIN UPDATE pauses_version SET version = version + 1; END;
CREATE TRIGGER pauses_upd AFTER UPDATE ON entry_pauses BEGIN UPDATE pauses_version SET version = version + 1; END;
CREATE TRIGGER pauses_del AFTER DELETE ON entry_pauses BEGIN UPDATE pauses_version SET version = version + 1; END;

CREATE TABLE entry_history (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    entry   TEXT NOT NULL,
    at      TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL CHECK (action IN ('add', 'replace', 'remove', 'enable', 'disable',
                                            'pause', 'resume', 'run', 'backfill')),
    detail  TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX entry_history_by_entry ON entry_history (entry, id);

CREATE TABLE manual_runs (
    task_id       TEXT PRIMARY KEY,
    entry         TEXT NOT NULL,
    requested_at  TEXT NOT NULL,
    queue         TEXT NOT NULL,
    actor         TEXT NOT NULL,
    outcome       TEXT NOT NULL CHECK (outcome IN ('claimed', 'sent', 'failed')),
    error         TEXT,
    sent_at       TEXT
);
CREATE INDEX manual_runs_by_entry ON manual_runs (entry, requested_at);

ALTER TABLE ledger ADD COLUMN source TEXT NOT NULL DEFAULT 'beat'
    CHECK (source IN ('beat', 'backfill'));
