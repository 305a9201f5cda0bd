-- Celery tasks diverted to the intake queue, kept as one-off jobs: see
-- migrations/postgres/0006_intake.sql for what each column holds. The
-- envelope is text on both backends, byte for byte as json.dumps wrote it.
ALTER TABLE jobs ADD COLUMN envelope TEXT;
ALTER TABLE jobs ADD COLUMN body_base64 INTEGER NOT NULL DEFAULT 1;
ALTER TABLE jobs ADD COLUMN sqs_queue TEXT;
ALTER TABLE jobs ADD COLUMN queue_url TEXT;
ALTER TABLE jobs ADD COLUMN message_attributes TEXT;
ALTER TABLE jobs ADD COLUMN group_id TEXT;
ALTER TABLE jobs ADD COLUMN dedup_id TEXT;
ALTER TABLE jobs ADD COLUMN retries INTEGER NOT NULL DEFAULT 0 CHECK (retries >= 0);
