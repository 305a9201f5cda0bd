//! The releaser: runs in every replica, leader or not, and hands one-off
//! jobs to SQS in the final minutes before they are due.
//!
//! Each pass leases the pending jobs whose window has opened (a short
//! transaction; replicas share the work, see `store::jobs`), plans their
//! messages (a pure step: bad rows are marked failed, not retried; a task
//! diverted to the intake queue goes out as its stored envelope, byte for
//! byte, never rebuilt), sends
//! them through the [`Sink`] with `DelaySeconds` for the remainder so each
//! becomes visible at its due instant, and settles the outcomes. Between
//! passes it sleeps until the next window opens, or until a new job wakes it
//! (NOTIFY on PostgreSQL; on SQLite, `store::listen`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn};
use uuid::Uuid;

use crate::clock::{Clock, StepGuard, Trust};
use crate::jobs::release_plan;
use crate::store::jobs::{self, ClaimRequest, IntakeMessage, JobRow, Settlement};
use crate::store::listen::Listener;
use crate::store::{Store, StoreError};
use crate::wire::MessageOptions;
use crate::wire::intake;
use crate::wire::queue::QueueName;
use crate::wire::sink::{Outgoing, SendError, Sink};

/// Jobs per pass (and per claim).
pub const BATCH: i64 = 500;
/// Passes a replica keeps sending and settling while it claims the next
/// one, as long as claims come back full (PostgreSQL only).
pub const IN_FLIGHT: usize = 3;
/// Longest sleep between passes. A new or moved job wakes the releaser
/// sooner: PostgreSQL's NOTIFY, or on SQLite the store's change watching
/// (`store::listen`: this process's own writes at once, another process's
/// commits within a second).
const MAX_SLEEP: StdDuration = StdDuration::from_secs(30);
// Only a job due within 16 minutes NOTIFYs (migrations/postgres/0009): a
// later one's window (at most 15 minutes) opens after a releaser has
// looked by itself.
const _: () = assert!(MAX_SLEEP.as_secs() + crate::jobs::MAX_DELAY_SECONDS as u64 <= 16 * 60);
/// How often a releaser held by an unchecked clock looks again.
const TRUST_RECHECK: StdDuration = StdDuration::from_secs(1);
/// How long a pass's claimed jobs stay its own. A pass whose sends take
/// longer (slow SQS: the client gives up on an operation after 30 s, and a
/// pass may make several) renews its lease every [`RENEW_EVERY`], so only
/// a replica that died mid-send lets it run out: its jobs then wait at most
/// this long before another pass sends them, with the same task ids.
pub const LEASE: Duration = Duration::seconds(30);
/// How often a pass still sending renews its lease.
pub const RENEW_EVERY: StdDuration = StdDuration::from_secs(10);

#[derive(Clone)]
pub struct Releaser<S> {
    pub store: Store,
    pub sink: S,
    pub opts: MessageOptions,
    pub window: Duration,
    /// SQS's limit, for rows written by hand that `schedule` never checked.
    pub max_message_bytes: usize,
    pub clock: Clock,
    /// [`RENEW_EVERY`], but for tests.
    pub renew_every: StdDuration,
    /// What the host clock is worth against the database's: no release on
    /// a clock that is off (it would send jobs early or late by the error).
    pub trust: watch::Receiver<Trust>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    pub claimed: usize,
    pub released: usize,
    pub retrying: usize,
    pub failed: usize,
}

/// What a pass will do with the rows it claimed: messages to send (each
/// with its job and delay), and rows that can never be sent as they stand.
#[derive(Debug, Default)]
pub struct Plan {
    pub send: Vec<(Sending, Outgoing)>,
    /// Marked failed with the reason (expired, a hand-written bad row).
    pub failed: Vec<(Uuid, String)>,
    /// Claimed, but their window is not open at `now` (a lease taken over
    /// from a dead pass, say): handed back as pending.
    pub not_yet: Vec<Uuid>,
}

/// What a pass records of a job it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sending {
    pub id: Uuid,
    pub task: String,
    pub queue: QueueName,
    pub due_at: DateTime<Utc>,
}

/// What to do with one claimed row.
enum Planned {
    Send(Box<(Sending, Outgoing)>),
    Failed(String),
    NotYet,
}

/// Plans the release of claimed rows at `now`. Pure. Rows can be written
/// by hand or by another application, past every check `sqsbeat schedule`
/// makes: each is checked again, and a bad one is marked failed with the
/// reason rather than retried forever. Rows whose window is not open yet
/// are left alone.
pub fn plan(
    rows: &[JobRow],
    now: DateTime<Utc>,
    window: Duration,
    opts: &MessageOptions,
    max_message_bytes: usize,
) -> Plan {
    let mut out = Plan::default();
    for row in rows {
        let planned = match &row.intake {
            Some(m) => plan_intake(row, m, now, window, max_message_bytes),
            None => plan_built(row, now, window, opts, max_message_bytes),
        };
        match planned {
            Planned::Send(send) => out.send.push(*send),
            Planned::Failed(why) => out.failed.push((row.id, why)),
            Planned::NotYet => out.not_yet.push(row.id),
        }
    }
    out
}

/// A job sqsbeat builds the message of (`schedule`, `schedule_job`, SQL).
fn plan_built(
    row: &JobRow,
    now: DateTime<Utc>,
    window: Duration,
    opts: &MessageOptions,
    max_message_bytes: usize,
) -> Planned {
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
        Err(why) => return Planned::Failed(why),
    };
    if let Some(x) = spec.expires_at
        && x <= now
    {
        return Planned::Failed(format!("expired at {} before release", x.to_rfc3339()));
    }
    let queue = QueueName::new(&opts.queue_name_prefix, &spec.queue);
    let Some(release) = release_plan(spec.due_at, now, window, &queue) else {
        return Planned::NotYet;
    };
    let id = spec.id.to_string();
    let body = spec
        .message(&id, &opts.origin, release.eta)
        .sqs_body(now, opts.body_encoding);
    if let Err(e) = crate::wire::limits::check_message_size(body.len(), max_message_bytes) {
        return Planned::Failed(e.to_string());
    }
    let message = Outgoing {
        task_id: spec.id,
        group_id: queue.fifo.then(|| spec.task.clone()),
        dedup_id: queue.fifo.then(|| id.clone()),
        queue: queue.clone(),
        queue_url: None,
        body,
        delay_seconds: release.delay_seconds,
        attributes: Vec::new(),
    };
    let job = Sending {
        id: spec.id,
        task: spec.task,
        queue,
        due_at: spec.due_at,
    };
    Planned::Send(Box::new((job, message)))
}

/// A task diverted to the intake queue (python/INTAKE.md, section 3): the
/// stored envelope, unchanged, to the queue the application named, with
/// its message attributes and FIFO ids. `DelaySeconds` rounds up, so the
/// worker receives it at its ETA, not before (the `eta` header is Celery's
/// own). An `expires` that has passed does not stop it: the worker drops
/// an expired task and records it as such, as it would have without
/// sqsbeat.
fn plan_intake(
    row: &JobRow,
    m: &IntakeMessage,
    now: DateTime<Utc>,
    window: Duration,
    max_message_bytes: usize,
) -> Planned {
    if let Err(why) = intake::check_stored(&m.envelope, row.id) {
        return Planned::Failed(why);
    }
    let Some(sqs) = m.sqs_queue.clone() else {
        return Planned::Failed(
            "an intake job without sqs_queue: the queue to release it to is unknown".into(),
        );
    };
    let queue = QueueName {
        logical: row.queue.clone(),
        sqs,
        fifo: crate::wire::queue::is_fifo(&row.queue),
    };
    let Some(_) = release_plan(row.due_at, now, window, &queue) else {
        return Planned::NotYet;
    };
    let attributes = match &m.message_attributes {
        None => Vec::new(),
        Some(Value::Object(a)) => match intake::attributes(Some(a)) {
            Ok(a) => a,
            Err(why) => return Planned::Failed(why),
        },
        Some(other) => {
            // The kind, never the value: the reason is shown on the status page.
            return Planned::Failed(format!(
                "column message_attributes must be a JSON object, found {}",
                intake::json_kind(other)
            ));
        }
    };
    let body = intake::release_body(&m.envelope, m.body_base64);
    let size = body.len() + attributes.iter().map(|(n, a)| a.size(n)).sum::<usize>();
    if let Err(e) = crate::wire::limits::check_message_size(size, max_message_bytes) {
        return Planned::Failed(e.to_string());
    }
    let (group_id, dedup_id, delay_seconds) = if queue.fifo {
        (
            Some(m.group_id.clone().unwrap_or_else(|| "default".into())),
            Some(
                m.dedup_id
                    .clone()
                    .unwrap_or_else(|| format!("{}:{}", row.id, row.retries)),
            ),
            0,
        )
    } else {
        (
            m.group_id.clone(),
            None,
            intake::release_delay(row.due_at, now),
        )
    };
    let message = Outgoing {
        task_id: row.id,
        queue: queue.clone(),
        queue_url: m.queue_url.clone(),
        body,
        group_id,
        dedup_id,
        delay_seconds,
        attributes,
    };
    let job = Sending {
        id: row.id,
        task: row.task.clone(),
        queue,
        due_at: row.due_at,
    };
    Planned::Send(Box::new((job, message)))
}

/// A pass between its claim and its sends: what it leased and what it
/// will do with each row.
pub struct Claim {
    token: Uuid,
    /// Rows leased, read or not: what [`Pass::claimed`] reports.
    leased: usize,
    /// Rows that could not be read (already marked failed by the claim).
    unreadable: usize,
    /// Attempts so far of each job to send, for its retry backoff.
    attempts: HashMap<Uuid, i64>,
    send: Vec<(Sending, Outgoing)>,
    /// Failed and not-yet rows, already decided.
    settle: Settlement,
}

impl Claim {
    /// Rows this pass will settle one way or another (sent, retrying or
    /// failed): a claim of rows it can only hand back must not count, or
    /// the loop would spin on them.
    pub fn actionable(&self) -> usize {
        self.send.len() + self.settle.failed.len() + self.unreadable
    }
}

impl<S: Sink> Releaser<S> {
    /// Runs passes until shutdown. While claims come back full the next
    /// claim is made as soon as the last one is planned, with up to
    /// [`IN_FLIGHT`] earlier passes still sending and settling (each under
    /// its own lease, in its own short transactions): the database and
    /// the SQS calls overlap instead of taking turns. A pass under way
    /// when shutdown comes finishes (its sends, then its settle):
    /// abandoning it would leave messages SQS took marked unsent until its
    /// lease ran out.
    pub async fn run(mut self, wake: Arc<Notify>, shutdown: CancellationToken) {
        info!(window_s = self.window.num_seconds(), "releaser started");
        let mut guard = StepGuard::default();
        let mut flight: JoinSet<Result<Pass, StoreError>> = JoinSet::new();
        // SQLite has one writer and one connection: passes would only queue.
        let in_flight = if self.store.pushes_changes() {
            IN_FLIGHT
        } else {
            1
        };
        while !shutdown.is_cancelled() {
            let now = self.clock.now();
            if let Some(step) = guard.observe(now) {
                warn!(
                    step_s = step.num_milliseconds() as f64 / 1000.0,
                    "wall clock stepped: no release until it is checked against the database's"
                );
            }
            if !guard.trusted(&self.trust.borrow()) {
                drain(&mut flight).await;
                tokio::select! {
                    Ok(()) = self.trust.changed() => {}
                    _ = tokio::time::sleep(TRUST_RECHECK) => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
            while flight.len() >= in_flight {
                reap(flight.join_next().await);
            }
            let full = match self.claim(now, None).await {
                Ok(c) => {
                    let full = c.actionable() as i64 >= BATCH;
                    let me = self.clone();
                    flight.spawn(async move { me.finish(c).await });
                    full
                }
                Err(e) => {
                    error!(error = %e, "release pass failed; retrying");
                    false
                }
            };
            if full {
                continue;
            }
            drain(&mut flight).await;
            let wait = self.wait().await;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = wake.notified() => {}
                _ = shutdown.cancelled() => break,
            }
        }
        drain(&mut flight).await;
        info!("releaser stopped");
    }

    /// How long to sleep after a pass: until the next window opens, at most
    /// [`MAX_SLEEP`].
    async fn wait(&self) -> StdDuration {
        let cap = MAX_SLEEP;
        match jobs::next_wake(&self.store, self.window).await {
            // A floor, so rows that are due but not releasable yet (a FIFO
            // job before its instant) cannot make the loop spin.
            Ok(Some(at)) => (at - self.clock.now())
                .to_std()
                .unwrap_or_default()
                .clamp(StdDuration::from_millis(100), cap),
            Ok(None) => cap,
            Err(e) => {
                warn!(error = %e, "cannot read the next due job");
                StdDuration::from_secs(1)
            }
        }
    }

    /// One pass at `now`: claim, plan, send, settle. `only` restricts it to
    /// one job (what `sqsbeat schedule` does for a job due within the window).
    pub async fn pass(&self, now: DateTime<Utc>, only: Option<Uuid>) -> Result<Pass, StoreError> {
        let claim = self.claim(now, only).await?;
        self.finish(claim).await
    }

    /// The first half of a pass: lease the rows (one short transaction)
    /// and plan their messages.
    pub async fn claim(&self, now: DateTime<Utc>, only: Option<Uuid>) -> Result<Claim, StoreError> {
        let token = crate::clock::random_id();
        let claimed = jobs::claim(
            &self.store,
            &ClaimRequest {
                now,
                window: self.window,
                limit: BATCH,
                lease_for: LEASE,
                only,
                token,
            },
        )
        .await?;
        for (id, why) in &claimed.failed {
            error!(job = %id, "job cannot be read: {why}; marked failed");
            crate::runtime::metrics::get().jobs_failed.inc();
        }
        let plan = plan(
            &claimed.rows,
            now,
            self.window,
            &self.opts,
            self.max_message_bytes,
        );
        let mut settle = Settlement::default();
        for (id, why) in plan.failed {
            error!(job = %id, "job cannot be sent: {why}; marked failed");
            crate::runtime::metrics::get().jobs_failed.inc();
            settle.failed.push((id, why));
        }
        settle.unclaimed = plan.not_yet;
        Ok(Claim {
            token,
            leased: claimed.rows.len() + claimed.failed.len(),
            unreadable: claimed.failed.len(),
            attempts: claimed.rows.iter().map(|r| (r.id, r.attempts)).collect(),
            send: plan.send,
            settle,
        })
    }

    /// The second half of a pass: send outside any transaction, renewing
    /// the lease while the sends take their time, then settle every
    /// outcome (one short transaction).
    pub async fn finish(&self, claim: Claim) -> Result<Pass, StoreError> {
        let Claim {
            token,
            leased,
            unreadable,
            attempts,
            send,
            mut settle,
        } = claim;
        let (specs, outgoing): (Vec<Sending>, Vec<Outgoing>) = send.into_iter().unzip();
        let delays: Vec<i32> = outgoing.iter().map(|o| o.delay_seconds).collect();
        let results = if outgoing.is_empty() {
            Vec::new()
        } else {
            self.send_renewing(outgoing, token).await
        };
        let accepted_at = self.clock.now();
        for ((spec, delay), result) in specs.iter().zip(delays).zip(results) {
            let tried = attempts.get(&spec.id).copied().unwrap_or(0);
            self.record_outcome(spec, delay, tried, result, accepted_at, &mut settle);
        }
        let pass = Pass {
            claimed: leased,
            released: settle.released.len(),
            retrying: settle.retry.len(),
            failed: settle.failed.len() + unreadable,
        };
        let settled = jobs::settle(&self.store, token, &settle, self.clock.now()).await?;
        for (id, e) in &settled.refused {
            error!(job = %id, error = %e, "the database refused to record the job's outcome; it is marked failed if the database took that, else sent again when its lease ends: fix or delete that row");
        }
        if settled.lost > 0 {
            warn!(
                jobs = settled.lost,
                lease_s = LEASE.num_seconds(),
                "the lease on jobs ended before their sends were settled; another pass may have sent them again (same task ids)"
            );
        }
        Ok(pass)
    }

    /// Sends, renewing the pass's lease while the sends take their time.
    async fn send_renewing(
        &self,
        outgoing: Vec<Outgoing>,
        token: Uuid,
    ) -> Vec<Result<(), SendError>> {
        let send = self.sink.send_all(outgoing);
        tokio::pin!(send);
        loop {
            tokio::select! {
                results = &mut send => return results,
                _ = tokio::time::sleep(self.renew_every) => {
                    let until = self.clock.now() + LEASE;
                    if let Err(e) = jobs::renew(&self.store, token, until).await {
                        warn!(error = %e, "cannot renew the lease of jobs being sent; another replica may send them again when it ends (same task ids)");
                    }
                }
            }
        }
    }

    /// Logs and counts one send's outcome and notes how to settle it.
    fn record_outcome(
        &self,
        spec: &Sending,
        delay: i32,
        attempts: i64,
        result: Result<(), SendError>,
        accepted_at: DateTime<Utc>,
        settle: &mut Settlement,
    ) {
        let span =
            info_span!("release", job = %spec.id, task = %spec.task, queue = %spec.queue.logical);
        let _enter = span.enter();
        let m = crate::runtime::metrics::get();
        match result {
            Ok(()) => {
                m.jobs_released.inc();
                let opened = crate::jobs::opens_at(spec.due_at, self.window, &spec.queue);
                m.releaser_lag
                    .observe((accepted_at - opened).num_milliseconds().max(0) as f64 / 1000.0);
                info!(due = %spec.due_at.to_rfc3339(), delay_s = delay, "released");
                settle.released.push(spec.id);
            }
            Err(err) => {
                m.jobs_release_failed.inc();
                let wait = err.retry_delay(attempts.max(0) as u32 + 1, &spec.id.to_string());
                warn!(error = %err, retry_in_ms = wait.num_milliseconds(), "release failed; will retry");
                settle
                    .retry
                    .push((spec.id, err.to_string(), accepted_at + wait));
            }
        }
    }
}

/// Waits for every pass in flight to finish.
async fn drain(flight: &mut JoinSet<Result<Pass, StoreError>>) {
    while let Some(done) = flight.join_next().await {
        reap(Some(done));
    }
}

/// Logs how a pass in flight ended.
fn reap(done: Option<Result<Result<Pass, StoreError>, tokio::task::JoinError>>) {
    match done {
        Some(Ok(Err(e))) => error!(error = %e, "release pass failed; retrying"),
        // Its rows stay leased until the lease ends, then go out again.
        Some(Err(e)) => {
            error!(error = %e, "release pass panicked; its jobs go out when their lease ends")
        }
        Some(Ok(Ok(_))) | None => {}
    }
}

/// Wakes `wake` whenever a job may have been scheduled or moved
/// (PostgreSQL NOTIFY; SQLite: see `store::listen`).
pub async fn watch_jobs(mut listener: Listener, wake: Arc<Notify>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            r = listener.changed() => match r {
                Ok(()) => wake.notify_one(),
                Err(e) => warn!(error = %e, "jobs listener failed; reconnecting"),
            },
            _ = shutdown.cancelled() => return,
        }
    }
}
