-- Every running replica says it is alive every few seconds, so `sqsbeat
-- status` can list the leader and the standbys.
CREATE TABLE replicas (
    holder      text PRIMARY KEY,
    role        text NOT NULL,
    epoch       bigint,
    version     text NOT NULL,
    started_at  timestamptz NOT NULL,
    seen_at     timestamptz NOT NULL
);
