//! The intake consumer: runs in every replica, leader or not, and turns the
//! Celery tasks an application diverted to the intake queue
//! (`sqsbeat_celery.install(app)`, `python/INTAKE.md`) into one-off jobs.
//!
//! Each turn long-polls the queue (up to 10 messages, 20 s), reads every
//! message (pure: [`crate::wire::intake::read`]), stores the batch in one
//! short transaction ([`crate::store::intake`]: a redelivered message is
//! one job, a Celery retry replaces its job) and only after the commit
//! deletes the messages. No transaction is open across an SQS call: a
//! failed commit deletes nothing, and the messages come back after their
//! visibility timeout; a failed delete leaves a stored message that comes
//! back and is recognised as a duplicate.
//!
//! A malformed message never stops the loop and is never dropped silently:
//! one whose task id, task name and ETA can be read is kept as a `failed`
//! job with the reason (then deleted); any other is logged with its SQS
//! `MessageId` and left on the queue for its redrive policy, as is one
//! whose row the database refuses (the rest of its batch is stored and
//! deleted: one bad message never sends its neighbours round again). SQS and
//! database errors are logged and retried with backoff; after a database
//! error nothing more is received until the database answers, so a
//! database outage does not run messages up to the redrive policy's
//! `maxReceiveCount`.

use std::time::Duration as StdDuration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::store::intake::{IntakeJob, Stored, store_batch};
use crate::store::{Store, StoreError};
use crate::wire::intake::read;
use crate::wire::queue::QueueName;
use crate::wire::sink::{SendError, backoff};
use crate::wire::source::{Poll, Received, Source};

/// Most messages per receive (SQS's own limit).
pub const MAX_MESSAGES: i32 = 10;
/// The long poll: SQS's longest wait.
pub const WAIT: StdDuration = StdDuration::from_secs(20);
/// How long received messages stay invisible: storing a batch takes one
/// short transaction, so a minute is ample, and the messages of a replica
/// that died mid-batch come back within it.
pub const VISIBILITY: StdDuration = StdDuration::from_secs(60);
/// An empty answer sooner than this (an endpoint that does not long-poll)
/// is followed by a pause: the loop never spins.
const MIN_EMPTY_POLL: StdDuration = StdDuration::from_secs(1);

/// The receive of [`Consumer::run`]: [`MAX_MESSAGES`], [`WAIT`], [`VISIBILITY`].
pub const POLL: Poll = Poll {
    max_messages: MAX_MESSAGES,
    wait: WAIT,
    visibility: VISIBILITY,
};

#[derive(Clone)]
pub struct Consumer<Q> {
    pub store: Store,
    pub source: Q,
    /// The intake queue.
    pub queue: QueueName,
    /// What the releaser may send: a message that could never be released
    /// is a `failed` job at once.
    pub max_message_bytes: usize,
    /// [`POLL`], but for tests.
    pub poll: Poll,
}

/// What one batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Batch {
    pub received: usize,
    /// New jobs, and jobs replaced by a Celery retry.
    pub stored: usize,
    /// Messages whose job was stored already (a redelivery, a re-publish,
    /// a stale copy).
    pub duplicates: usize,
    /// Malformed messages kept as `failed` jobs.
    pub failed: usize,
    /// Messages for a cancelled job, kept with it (still cancelled).
    pub cancelled: usize,
    /// Malformed messages, and messages whose row the database refused,
    /// left on the queue for its redrive policy.
    pub left: usize,
    pub deleted: usize,
    pub delete_failed: usize,
}

impl<Q: Source> Consumer<Q> {
    /// Polls until shutdown. A receive under way when shutdown comes is
    /// abandoned (what it took comes back after [`VISIBILITY`]); a batch
    /// in hand is stored and deleted first.
    pub async fn run(self, shutdown: CancellationToken) {
        info!(queue = %self.queue.logical, sqs_name = %self.queue.sqs, "intake consumer started");
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            let started = tokio::time::Instant::now();
            let received = tokio::select! {
                r = self.source.receive(&self.queue, &self.poll) => r,
                _ = shutdown.cancelled() => break,
            };
            let pause = match received {
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = e.retry_delay(failures, &self.queue.sqs);
                    self.log_receive_error(&e, failures, wait);
                    wait.to_std().unwrap_or(MIN_EMPTY_POLL)
                }
                Ok(messages) if messages.is_empty() => {
                    failures = 0;
                    MIN_EMPTY_POLL.saturating_sub(started.elapsed())
                }
                Ok(messages) => match self.handle(messages).await {
                    Ok(_) => {
                        failures = 0;
                        StdDuration::ZERO
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        error!(error = %e, "cannot store intake messages; nothing was deleted, they come back from the queue; receiving again once the database answers");
                        if !self.until_store_answers(&mut failures, &shutdown).await {
                            break;
                        }
                        StdDuration::ZERO
                    }
                },
            };
            if !pause.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
        }
        info!("intake consumer stopped");
    }

    fn log_receive_error(&self, e: &SendError, failures: u32, wait: chrono::Duration) {
        let (queue, sqs_name, retry_ms) = (
            &self.queue.logical,
            &self.queue.sqs,
            wait.num_milliseconds(),
        );
        match e {
            SendError::QueueMissing { .. } => error!(
                %queue, %sqs_name, failures, retry_in_ms = retry_ms,
                "the intake queue does not exist; create it with a redrive policy (python/README.md), sqsbeat never creates it"
            ),
            SendError::Rejected { code, .. } if code.contains("AccessDenied") => error!(
                %queue, %sqs_name, failures, retry_in_ms = retry_ms, error = %e,
                "SQS denied access to the intake queue; grant sqs:GetQueueUrl, sqs:ReceiveMessage and sqs:DeleteMessage on it"
            ),
            _ => warn!(
                %queue, %sqs_name, failures, retry_in_ms = retry_ms, error = %e,
                "cannot receive from the intake queue; retrying"
            ),
        }
    }

    /// Backs off until the database answers again; `false` on shutdown.
    async fn until_store_answers(&self, failures: &mut u32, shutdown: &CancellationToken) -> bool {
        loop {
            let wait = backoff(*failures, &self.queue.sqs)
                .to_std()
                .unwrap_or(MIN_EMPTY_POLL);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return false,
            }
            let answered = tokio::select! {
                r = self.store.ping() => r,
                _ = shutdown.cancelled() => return false,
            };
            match answered {
                Ok(()) => return true,
                Err(e) => {
                    *failures = failures.saturating_add(1);
                    warn!(error = %e, failures = *failures, "the database still does not answer; the intake waits");
                }
            }
        }
    }

    /// Reads, stores (one transaction) and then deletes one received batch.
    /// On a database error nothing is deleted.
    pub async fn handle(&self, messages: Vec<Received>) -> Result<Batch, StoreError> {
        let mut batch = Batch {
            received: messages.len(),
            ..Batch::default()
        };
        let m = crate::runtime::metrics::get();
        let mut jobs: Vec<(IntakeJob, &Received)> = Vec::with_capacity(messages.len());
        for msg in &messages {
            match read(&msg.body, &self.queue, self.max_message_bytes) {
                Ok(d) => jobs.push((IntakeJob::pending(&d), msg)),
                Err(bad) => {
                    m.intake_messages.get_or_create(&outcome("malformed")).inc();
                    match bad.failed_job() {
                        Some(known) => {
                            error!(message_id = %msg.message_id, receive_count = msg.receive_count, job = %known.id, task = %known.task,
                                "malformed intake message: {}; kept as a failed job (sqsbeat show {})", bad.reason, known.id);
                            batch.failed += 1;
                            let job = IntakeJob::failed(
                                known,
                                &bad,
                                &msg.message_id,
                                &self.queue.logical,
                            );
                            jobs.push((job, msg));
                        }
                        None => {
                            error!(message_id = %msg.message_id, receive_count = msg.receive_count, queue = %self.queue.sqs,
                                "malformed intake message: {}; left on the queue for its redrive policy (it moves to the dead-letter queue after maxReceiveCount receives)", bad.reason);
                            batch.left += 1;
                        }
                    }
                }
            }
        }
        let rows: Vec<IntakeJob> = jobs.iter().map(|(j, _)| j.clone()).collect();
        let outcomes = store_batch(&self.store, &rows).await?;
        for ((job, msg), stored) in jobs.iter().zip(&outcomes) {
            self.record(job, msg, stored, &mut batch);
        }
        // A message whose row the database refused stays on the queue, for
        // its redrive policy; the rest of the batch is stored and deleted.
        let jobs: Vec<_> = jobs
            .into_iter()
            .zip(&outcomes)
            .filter(|(_, stored)| !matches!(stored, Stored::Refused { .. }))
            .map(|(job, _)| job)
            .collect();
        if jobs.is_empty() {
            return Ok(batch);
        }
        let handles = jobs
            .iter()
            .map(|(_, msg)| msg.receipt_handle.clone())
            .collect();
        let deleted = self.source.delete(&self.queue, handles).await;
        for ((job, msg), result) in jobs.iter().zip(deleted) {
            match result {
                Ok(()) => batch.deleted += 1,
                Err(e) => {
                    batch.delete_failed += 1;
                    m.intake_delete_failures.inc();
                    warn!(message_id = %msg.message_id, job = %job.id, error = %e,
                        "cannot delete a stored intake message; it comes back and is recognised as a duplicate");
                }
            }
        }
        Ok(batch)
    }

    /// Logs and counts what storing one message did.
    fn record(&self, job: &IntakeJob, msg: &Received, stored: &Stored, batch: &mut Batch) {
        let m = crate::runtime::metrics::get();
        let (id, task, due) = (job.id, &job.task, job.due_at.to_rfc3339());
        let failed = job.status == crate::store::jobs::JobStatus::Failed;
        match stored {
            Stored::Inserted | Stored::Replaced { .. } if !failed => {
                batch.stored += 1;
                m.intake_messages.get_or_create(&outcome("stored")).inc();
                match stored {
                    Stored::Replaced { status, retries } => info!(
                        job = %id, %task, %due, queue = %job.queue, retries = job.retries,
                        previous_status = %status, previous_retries = retries,
                        "a Celery retry replaced its one-off job"
                    ),
                    _ => info!(
                        job = %id, %task, %due, queue = %job.queue, retries = job.retries,
                        message_id = %msg.message_id, "diverted task stored as a one-off job"
                    ),
                }
            }
            Stored::Inserted | Stored::Replaced { .. } => {}
            Stored::Cancelled => {
                batch.cancelled += 1;
                m.intake_messages.get_or_create(&outcome("cancelled")).inc();
                info!(
                    job = %id, %task, message_id = %msg.message_id, retries = job.retries,
                    "intake message for a cancelled job: kept with it, still cancelled; deleting it"
                );
            }
            Stored::Refused { reason } => {
                batch.left += 1;
                m.intake_messages.get_or_create(&outcome("refused")).inc();
                error!(
                    job = %id, message_id = %msg.message_id, receive_count = msg.receive_count, queue = %self.queue.sqs,
                    "intake message not stored: {reason}; left on the queue for its redrive policy (it moves to the dead-letter queue after maxReceiveCount receives)"
                );
            }
            Stored::Duplicate { existing } => {
                if !failed {
                    batch.duplicates += 1;
                }
                m.intake_messages.get_or_create(&outcome("duplicate")).inc();
                let (status, retries) = existing.clone().unwrap_or_else(|| ("?".into(), -1));
                info!(
                    job = %id, %task, message_id = %msg.message_id, receive_count = msg.receive_count,
                    retries = job.retries, existing_status = %status, existing_retries = retries,
                    "intake message already stored (a redelivery, a re-publish or a stale copy); deleting it"
                );
            }
        }
    }
}

fn outcome(o: &str) -> crate::runtime::metrics::Outcome {
    crate::runtime::metrics::Outcome {
        outcome: o.to_string(),
    }
}
