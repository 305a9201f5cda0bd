-- Periodic entries: leadership, per-entry cursors, and the run ledger.
-- Objects are created unqualified: sqsbeat connects with search_path set to
-- its own schema (default "sqsbeat"), so they never mix with the app's.

-- One row: who leads, under which fencing epoch. A new leader bumps the
-- epoch only after taking the advisory lock, i.e. after the previous
-- leader's session is gone; every claim checks the epoch in the same
-- transaction, so an ex-leader that wakes up cannot claim a fire.
CREATE TABLE leader (
    id         integer PRIMARY KEY CHECK (id = 1),
    epoch      bigint NOT NULL,
    holder     text NOT NULL,
    since      timestamptz NOT NULL,
    heartbeat  timestamptz NOT NULL
);

-- The last slot decided (fired or missed) per entry, and whether the entry
-- was enabled then: a re-enabled entry restarts from the moment it is
-- seen enabled, not from before it was disabled.
CREATE TABLE entry_state (
    entry       text PRIMARY KEY,
    cursor      timestamptz NOT NULL,
    enabled     boolean NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per fire, claimed before it is sent and confirmed after SQS
-- accepted it. (entry, slot) is the key: the same fire is never claimed
-- twice; a claim never confirmed is re-sent with the same task id.
CREATE TABLE ledger (
    entry       text NOT NULL,
    slot        timestamptz NOT NULL,
    task_id     uuid NOT NULL,
    queue       text NOT NULL,
    epoch       bigint NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('claimed', 'sent', 'missed')),
    reason      text,
    attempts    integer NOT NULL DEFAULT 0,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,
    PRIMARY KEY (entry, slot)
);

CREATE INDEX ledger_unconfirmed ON ledger (entry, slot) WHERE outcome = 'claimed';
CREATE INDEX ledger_by_slot ON ledger (slot);
