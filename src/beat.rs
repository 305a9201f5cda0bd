//! The beat driver: the one place that reads the wall clock.
//!
//! Each turn: read the clock, ask the pure [`Beat`] what is due, hand the
//! messages to a send task, then wait for the next deadline, a finished
//! send (failures go back to the beat for a retry with backoff), or
//! shutdown. On shutdown no new fire is decided, and every send already
//! in flight finishes and has its outcome logged.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn};

use crate::celery::{BodyEncoding, fire_task_id};
use crate::queue::QueueName;
use crate::sink::{Outgoing, SendError, SqsSink};
use crate::tick::{Beat, Fire, MissReason};

/// Longest single sleep: the loop re-reads the wall clock at least this
/// often, so a clock step or a suspended host is noticed.
const MAX_SLEEP: StdDuration = StdDuration::from_secs(30);

/// What the driver needs besides the beat and the sink.
#[derive(Debug, Clone)]
pub struct Options {
    pub origin: String,
    pub queue_name_prefix: String,
    pub body_encoding: BodyEncoding,
}

/// The wall clock. Everything else receives `now` from here.
pub fn now() -> DateTime<Utc> {
    Utc::now()
}

/// Delay before retry `attempt` (1-based) of a fire: 1 s doubling to 60 s,
/// plus up to half again, derived from the task id so it needs no RNG.
pub fn backoff(attempt: u32, task_id: &str) -> Duration {
    let base_ms = 1_000i64
        .saturating_mul(1 << attempt.saturating_sub(1).min(6))
        .min(60_000);
    let spread = task_id.bytes().fold(u64::from(attempt), |h, b| {
        h.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    Duration::milliseconds(base_ms + (spread % (base_ms as u64 / 2 + 1)) as i64)
}

/// Most send tasks in flight; past this the loop waits for one to finish.
const MAX_IN_FLIGHT: usize = 64;

/// What a finished send task hands back.
struct Sent {
    due: Vec<Fire>,
    ids: Vec<String>,
    results: Vec<Result<(), SendError>>,
    accepted_at: DateTime<Utc>,
}

/// Runs until `shutdown` is cancelled, then waits for in-flight sends.
///
/// Deciding and sending are decoupled: each turn's due fires go out in a
/// task of their own, so a slow or unreachable endpoint delays no other
/// fire's decision, and the loop `select!`s on its next deadline, a
/// finished send, and shutdown.
pub async fn run(mut beat: Beat, sink: SqsSink, opts: Options, shutdown: CancellationToken) {
    info!(entries = beat.entries().len(), "beat started");
    let mut in_flight: JoinSet<Sent> = JoinSet::new();
    loop {
        let decision = beat.tick(now());
        report_missed(&beat, &decision.missed);
        if !decision.due.is_empty() {
            while in_flight.len() >= MAX_IN_FLIGHT {
                if let Some(done) = in_flight.join_next().await {
                    settle(&mut beat, done);
                }
            }
            let (outgoing, ids) = build(&beat, &opts, &decision.due, now());
            let sink = sink.clone();
            let due = decision.due;
            in_flight.spawn(async move {
                let results = sink.send_all(outgoing).await;
                Sent {
                    due,
                    ids,
                    results,
                    accepted_at: now(),
                }
            });
        }
        let wait = match beat.wake_at() {
            Some(wake) => (wake - now()).to_std().unwrap_or_default().min(MAX_SLEEP),
            None => MAX_SLEEP,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => settle(&mut beat, done),
            _ = shutdown.cancelled() => break,
        }
    }
    if !in_flight.is_empty() {
        info!(sends = in_flight.len(), "waiting for in-flight sends");
    }
    while let Some(done) = in_flight.join_next().await {
        settle(&mut beat, done);
    }
    info!("beat stopped");
}

fn report_missed(beat: &Beat, missed: &[crate::tick::Missed]) {
    for m in missed {
        let e = &beat.entries()[m.entry];
        let why = match m.reason {
            MissReason::Expired => "expired before it could be sent".to_string(),
            MissReason::CatchUp(p) => format!("later than grace; catch_up = {}", p.as_str()),
            MissReason::Bound => "beyond the catch-up bound".to_string(),
        };
        warn!(entry = %e.name, slot = %m.nominal.to_rfc3339(), "missed fire: {why}");
    }
}

/// The SQS messages of `due`, and their task ids.
fn build(
    beat: &Beat,
    opts: &Options,
    due: &[Fire],
    built_at: DateTime<Utc>,
) -> (Vec<Outgoing>, Vec<String>) {
    let mut ids = Vec::with_capacity(due.len());
    let mut outgoing = Vec::with_capacity(due.len());
    for f in due {
        let e = &beat.entries()[f.entry];
        let id = fire_task_id(&e.name, f.nominal).to_string();
        let queue = QueueName::new(&opts.queue_name_prefix, &e.queue);
        let body = e
            .message(&id, f.nominal, &opts.origin)
            .sqs_body(built_at, opts.body_encoding);
        outgoing.push(Outgoing {
            group_id: queue
                .fifo
                .then(|| e.group_id.clone().unwrap_or_else(|| e.name.clone())),
            dedup_id: queue.fifo.then(|| id.clone()),
            queue,
            body,
            delay_seconds: 0,
        });
        ids.push(id);
    }
    (outgoing, ids)
}

/// Logs each outcome of a finished send and puts failures back for retry.
fn settle(beat: &mut Beat, done: Result<Sent, tokio::task::JoinError>) {
    let Sent {
        due,
        ids,
        results,
        accepted_at,
    } = match done {
        Ok(s) => s,
        // Unreachable in practice (send tasks do not panic); if one did, its
        // fires have no outcome and are lost from memory, which the log says.
        Err(e) => {
            warn!(error = %e, "a send task failed; its fires have no recorded outcome");
            return;
        }
    };
    for ((fire, id), result) in due.into_iter().zip(ids).zip(results) {
        let e = &beat.entries()[fire.entry];
        let span = info_span!("fire", entry = %e.name, task_id = %id, queue = %e.queue);
        let _enter = span.enter();
        let late_ms = (accepted_at - e.send_at(fire.nominal)).num_milliseconds();
        match result {
            Ok(()) => info!(
                task = %e.task,
                slot = %fire.nominal.to_rfc3339(),
                late_ms,
                attempt = fire.attempt,
                "sent"
            ),
            Err(err) => {
                let delay = match &err {
                    // Nothing will change soon for these; do not hammer SQS.
                    SendError::QueueMissing { .. }
                    | SendError::Rejected {
                        sender_fault: true, ..
                    } => backoff(fire.attempt + 3, &id),
                    _ => backoff(fire.attempt + 1, &id),
                };
                warn!(
                    slot = %fire.nominal.to_rfc3339(),
                    attempt = fire.attempt,
                    retry_in_ms = delay.num_milliseconds(),
                    error = %err,
                    "send failed; will retry"
                );
                drop(_enter);
                beat.retry(fire, accepted_at + delay);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_with_bounded_spread() {
        for attempt in 1..20 {
            let d = backoff(attempt, "3f1c").num_milliseconds();
            let base = (1000i64 << (attempt - 1).min(6)).min(60_000);
            assert!(d >= base && d <= base + base / 2, "attempt {attempt}: {d}");
        }
        assert_eq!(backoff(3, "x"), backoff(3, "x"));
    }
}
