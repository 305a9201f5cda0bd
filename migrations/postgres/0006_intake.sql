-- Celery tasks diverted by the application (sqsbeat_celery.install(app))
-- arrive on the intake queue whole, and each is kept as a one-off job under
-- its Celery task id (python/INTAKE.md). Such a job is released as exactly
-- the message Celery would have sent, never rebuilt from the other columns:
--
--   envelope            kombu's envelope as JSON text, byte for byte as
--                       Python's json.dumps writes it: text, because jsonb
--                       would reorder its keys. NULL for jobs sqsbeat builds
--                       itself. On a job set aside as a malformed intake
--                       message (status 'failed'), the envelope as received.
--   body_base64         whether the SQS body is base64 of the envelope
--                       (kombu's sqs_base64_encoding), as the application's was
--   sqs_queue           the SQS queue the application would have sent to,
--                       its queue_name_prefix applied ("queue" stays the
--                       logical name the worker consumes)
--   queue_url           its URL, when the application predefined it
--   message_attributes  SQS MessageAttributes, sent beside the body
--   group_id, dedup_id  MessageGroupId and MessageDeduplicationId
--   retries             the message's headers.retries: a message with a
--                       higher count replaces the job (a Celery retry), one
--                       with an equal or lower count is a duplicate. Jobs
--                       written any other way count as 0.
ALTER TABLE jobs
    ADD COLUMN envelope text,
    ADD COLUMN body_base64 boolean NOT NULL DEFAULT true,
    ADD COLUMN sqs_queue text,
    ADD COLUMN queue_url text,
    ADD COLUMN message_attributes jsonb,
    ADD COLUMN group_id text,
    ADD COLUMN dedup_id text,
    ADD COLUMN retries integer NOT NULL DEFAULT 0,
    ADD CONSTRAINT jobs_retries_count CHECK (retries >= 0),
    ADD CONSTRAINT jobs_message_attributes_object
        CHECK (message_attributes IS NULL OR jsonb_typeof(message_attributes) = 'object');
