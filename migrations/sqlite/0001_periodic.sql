-- Periodic entries: leader epoch, per-entry cursors, and the run ledger.
-- The same tables and rules as migrations/postgres; instants are RFC 3339
-- text in UTC, which sorts in time order.

CREATE TABLE leader (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    epoch      INTEGER NOT NULL,
    holder     TEXT NOT NULL,
    since      TEXT NOT NULL,
    heartbeat  TEXT NOT NULL
);

CREATE TABLE entry_state (
    entry       TEXT PRIMARY KEY,
    cursor      TEXT NOT NULL,
    enabled     INTEGER NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE ledger (
    entry       TEXT NOT NULL,
    slot        TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    queue       TEXT NOT NULL,
    epoch       INTEGER NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('claimed', 'sent', 'missed')),
    reason      TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    claimed_at  TEXT NOT NULL,
    sent_at     TEXT,
    PRIMARY KEY (entry, slot)
);

CREATE INDEX ledger_unconfirmed ON ledger (entry, slot) WHERE outcome = 'claimed';
CREATE INDEX ledger_by_slot ON ledger (slot);
