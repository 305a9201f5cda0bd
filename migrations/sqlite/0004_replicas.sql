CREATE TABLE replicas (
    holder      TEXT PRIMARY KEY,
    role        TEXT NOT NULL,
    epoch       INTEGER,
    version     TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    seen_at     TEXT NOT NULL
);
