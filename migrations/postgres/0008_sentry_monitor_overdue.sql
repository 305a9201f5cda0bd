-- An entry kept in the database may ask for Sentry Crons' headers on its
-- fires, like `sentry_monitor = true` in a schedule file (NULL: not set).
ALTER TABLE entries ADD COLUMN sentry_monitor boolean;

-- The leader's freshness check, published with its heartbeat so that
-- `sqsbeat status` and every replica's status page can show it: how many
-- entries are overdue, and the first of them by name (a JSON array).
-- NULL on standbys, which do not compute it.
ALTER TABLE replicas ADD COLUMN overdue bigint, ADD COLUMN overdue_entries jsonb;
