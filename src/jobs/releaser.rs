//! The releaser: runs in every replica, leader or not, and hands one-off
//! jobs to SQS in the final minutes before they are due.
//!
//! Each pass claims the pending jobs whose window has opened (PostgreSQL:
//! `FOR UPDATE SKIP LOCKED`, so replicas share the work), sends them with
//! `DelaySeconds` for the remainder so each becomes visible at its due
//! instant, and marks them released in the same transaction. A crash
//! before the commit leaves them pending: they go again with the same task
//! id. Between passes it sleeps until the next window opens, or until a
//! new job wakes it (NOTIFY on PostgreSQL).

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn};
use uuid::Uuid;

use crate::beat::driver::backoff;
use crate::clock::system_now;
use crate::jobs::release_plan;
use crate::store::jobs::{self, Settlement};
use crate::store::{Store, StoreError};
use crate::wire::MessageOptions;
use crate::wire::queue::QueueName;
use crate::wire::sqs::{Outgoing, SendError, SqsSink};

/// Jobs per pass (and per claim transaction).
pub const BATCH: i64 = 500;
/// Longest sleep on PostgreSQL (NOTIFY wakes it sooner) and on SQLite,
/// where jobs scheduled by another process are seen by looking.
const MAX_SLEEP_PG: StdDuration = StdDuration::from_secs(30);
const MAX_SLEEP_SQLITE: StdDuration = StdDuration::from_secs(1);

#[derive(Clone)]
pub struct Releaser {
    pub store: Store,
    pub sink: SqsSink,
    pub opts: MessageOptions,
    pub window: Duration,
    /// SQS's limit, for rows written by hand that `schedule` never checked.
    pub max_message_bytes: usize,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    pub claimed: usize,
    pub released: usize,
    pub retrying: usize,
    pub failed: usize,
}

impl Releaser {
    /// Runs passes until shutdown; a pass that filled its batch is
    /// followed at once by another.
    pub async fn run(self, wake: Arc<Notify>, shutdown: CancellationToken) {
        info!(window_s = self.window.num_seconds(), "releaser started");
        loop {
            let pass = tokio::select! {
                p = self.pass(system_now(), None) => p,
                _ = shutdown.cancelled() => break,
            };
            let full = match &pass {
                Ok(p) => p.claimed as i64 >= BATCH,
                Err(e) => {
                    error!(error = %e, "release pass failed; retrying");
                    false
                }
            };
            if full {
                continue;
            }
            let cap = match self.store {
                Store::Postgres(_) => MAX_SLEEP_PG,
                Store::Sqlite(_) => MAX_SLEEP_SQLITE,
            };
            let wait = match jobs::next_wake(&self.store, self.window).await {
                // A floor, so rows that are due but not releasable yet (a FIFO
                // job before its instant) cannot make the loop spin.
                Ok(Some(at)) => (at - system_now())
                    .to_std()
                    .unwrap_or_default()
                    .clamp(StdDuration::from_millis(100), cap),
                Ok(None) => cap,
                Err(e) => {
                    warn!(error = %e, "cannot read the next due job");
                    StdDuration::from_secs(1)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = wake.notified() => {}
                _ = shutdown.cancelled() => break,
            }
        }
        info!("releaser stopped");
    }

    /// One pass at `now`: claim, send, settle. `only` restricts it to one
    /// job (what `sqsbeat schedule` does for a job due within the window).
    pub async fn pass(&self, now: DateTime<Utc>, only: Option<Uuid>) -> Result<Pass, StoreError> {
        let batch = jobs::claim(&self.store, now, self.window, BATCH, only).await?;
        let mut settle = Settlement::default();
        let mut outgoing = Vec::new();
        let mut sent_jobs = Vec::new();
        for row in &batch.jobs {
            // Rows can be written by hand or by another application, past
            // every check `sqsbeat schedule` makes: check again, and mark a
            // bad one failed with the reason rather than retry it forever.
            // The size is checked on the body built below, not on a second
            // build here.
            let checked = row.spec().and_then(|s| {
                let problems = s.problems(now, true, usize::MAX);
                if problems.is_empty() {
                    Ok(s)
                } else {
                    Err(problems.join("; "))
                }
            });
            let spec = match checked {
                Ok(s) => s,
                Err(why) => {
                    cannot_send(&mut settle, row, why);
                    continue;
                }
            };
            if let Some(x) = spec.expires_at
                && x <= now
            {
                warn!(job = %row.id, task = %row.task, expires = %x.to_rfc3339(), "job expired before it could be released; marked failed");
                crate::runtime::metrics::get().jobs_failed.inc();
                settle.failed.push((
                    row.id,
                    format!("expired at {} before release", x.to_rfc3339()),
                ));
                continue;
            }
            let queue = QueueName::new(&self.opts.queue_name_prefix, &spec.queue);
            let Some(plan) = release_plan(spec.due_at, now, self.window, &queue) else {
                continue;
            };
            let id = spec.id.to_string();
            let body = spec
                .message(&id, &self.opts.origin, plan.eta)
                .sqs_body(now, self.opts.body_encoding);
            if body.len() > self.max_message_bytes {
                let why = format!(
                    "the task message is {} bytes on SQS, over the {} byte limit; pass a reference (an id, a key) instead of the data",
                    body.len(),
                    self.max_message_bytes
                );
                cannot_send(&mut settle, row, why);
                continue;
            }
            outgoing.push(Outgoing {
                group_id: queue.fifo.then(|| spec.task.clone()),
                dedup_id: queue.fifo.then(|| id.clone()),
                queue,
                body,
                delay_seconds: plan.delay_seconds,
            });
            sent_jobs.push((spec, plan.delay_seconds, row.attempts));
        }
        let results = if outgoing.is_empty() {
            Vec::new()
        } else {
            self.sink.send_all(outgoing).await
        };
        let accepted_at = system_now();
        for ((spec, delay, attempts), result) in sent_jobs.iter().zip(results) {
            let span =
                info_span!("release", job = %spec.id, task = %spec.task, queue = %spec.queue);
            let _enter = span.enter();
            match result {
                Ok(()) => {
                    let m = crate::runtime::metrics::get();
                    m.jobs_released.inc();
                    let opened = crate::jobs::opens_at(
                        spec.due_at,
                        self.window,
                        &QueueName::new(&self.opts.queue_name_prefix, &spec.queue),
                    );
                    m.releaser_lag
                        .observe((accepted_at - opened).num_milliseconds().max(0) as f64 / 1000.0);
                    info!(due = %spec.due_at.to_rfc3339(), delay_s = delay, "released");
                    settle.released.push(spec.id);
                }
                Err(err) => {
                    crate::runtime::metrics::get().jobs_release_failed.inc();
                    let wait = match &err {
                        SendError::QueueMissing { .. }
                        | SendError::Rejected {
                            sender_fault: true, ..
                        } => backoff(*attempts as u32 + 3, &spec.id.to_string()),
                        _ => backoff(*attempts as u32 + 1, &spec.id.to_string()),
                    };
                    warn!(error = %err, retry_in_ms = wait.num_milliseconds(), "release failed; will retry");
                    settle
                        .retry
                        .push((spec.id, err.to_string(), accepted_at + wait));
                }
            }
        }
        let pass = Pass {
            claimed: batch.jobs.len(),
            released: settle.released.len(),
            retrying: settle.retry.len(),
            failed: settle.failed.len(),
        };
        batch.settle(&settle).await?;
        Ok(pass)
    }
}

/// Marks a job that can never be sent as it stands failed, with the reason.
fn cannot_send(settle: &mut Settlement, row: &jobs::JobRow, why: String) {
    error!(job = %row.id, task = %row.task, "job cannot be sent: {why}; marked failed");
    crate::runtime::metrics::get().jobs_failed.inc();
    settle.failed.push((row.id, why));
}

/// Wakes `wake` whenever a job is scheduled or moved (PostgreSQL NOTIFY);
/// on SQLite the releaser looks every second instead.
pub async fn watch_jobs(store: Store, wake: Arc<Notify>, shutdown: CancellationToken) {
    let Store::Postgres(pg) = store else { return };
    let schema = pg.schema().to_string();
    loop {
        let listen = async {
            let mut l = sqlx::postgres::PgListener::connect_with(pg.pool()).await?;
            l.listen("sqsbeat_jobs").await?;
            wake.notify_one();
            loop {
                if l.recv().await?.payload() == schema {
                    wake.notify_one();
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            r = listen => if let Err(e) = r { warn!(error = %e, "jobs listener failed; reconnecting") },
            _ = shutdown.cancelled() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(StdDuration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
