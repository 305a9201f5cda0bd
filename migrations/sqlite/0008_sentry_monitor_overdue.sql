-- See migrations/postgres/0008_sentry_monitor_overdue.sql.
ALTER TABLE entries ADD COLUMN sentry_monitor INTEGER;
ALTER TABLE replicas ADD COLUMN overdue INTEGER;
ALTER TABLE replicas ADD COLUMN overdue_entries TEXT;
