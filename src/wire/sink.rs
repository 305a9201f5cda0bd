//! Where task messages go: the one-method [`Sink`] seam between the drivers
//! (beat, releaser) and SQS.
//!
//! [`crate::wire::sqs::SqsSink`] is the real one. [`MemorySink`] records
//! what it accepts and can be told to fail every message, fail part of a
//! batch, answer late, answer only when a test opens a gate, or never
//! answer, so the drivers' claim → send → confirm → retry paths are tested
//! in-process, in milliseconds.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use chrono::Duration;
use uuid::Uuid;

use crate::wire::intake::MessageAttribute;
use crate::wire::queue::QueueName;

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The Celery task id the body carries (for records and logs).
    pub task_id: Uuid,
    pub queue: QueueName,
    /// The queue's URL when the message names it (a task diverted by an
    /// application with `predefined_queues`); else resolved from
    /// `queue.sqs`.
    pub queue_url: Option<String>,
    pub body: String,
    /// FIFO queues (sqsbeat's own messages); on a standard queue only a
    /// diverted task's own `MessageGroupId` (SQS fair queues).
    pub group_id: Option<String>,
    /// FIFO only: the task id, so SQS drops a re-send within 5 minutes.
    pub dedup_id: Option<String>,
    /// 0..=900; ignored on FIFO queues, which take no per-message delay.
    pub delay_seconds: i32,
    /// SQS message attributes (a diverted task's `message_attributes`).
    pub attributes: Vec<(String, MessageAttribute)>,
}

/// Why one message was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error(
        "queue {logical:?} (SQS name {sqs:?}) does not exist; create it, list it under [sqs.queues], or set [sqs] create_missing_queues = true"
    )]
    QueueMissing { logical: String, sqs: String },
    #[error("SQS refused the message: {code}: {message}")]
    Rejected {
        code: String,
        message: String,
        sender_fault: bool,
    },
    #[error("SQS request failed: {0}")]
    Request(String),
}

impl SendError {
    /// Whether nothing will change without someone fixing something (a
    /// missing queue, a refused message): retried, but slowly.
    pub fn needs_a_fix(&self) -> bool {
        matches!(
            self,
            SendError::QueueMissing { .. }
                | SendError::Rejected {
                    sender_fault: true,
                    ..
                }
        )
    }

    /// How long to wait before attempt `attempt` (1-based) of a message
    /// that failed with this error: [`backoff`], three steps further along
    /// for errors that need a fix, so SQS is not hammered.
    pub fn retry_delay(&self, attempt: u32, key: &str) -> Duration {
        if self.needs_a_fix() {
            backoff(attempt + 2, key)
        } else {
            backoff(attempt, key)
        }
    }
}

/// Delay before retry `attempt` (1-based): 1 s doubling to 60 s, plus up to
/// half again, derived from `key` (a task id) so it needs no RNG and every
/// replica agrees.
pub fn backoff(attempt: u32, key: &str) -> Duration {
    let base_ms = 1_000i64
        .saturating_mul(1 << attempt.saturating_sub(1).min(6))
        .min(60_000);
    let spread = key.bytes().fold(u64::from(attempt), |h, b| {
        h.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    Duration::milliseconds(base_ms + (spread % (base_ms as u64 / 2 + 1)) as i64)
}

/// Hands messages to a queue service.
pub trait Sink: Clone + Send + Sync + 'static {
    /// Sends every message; returns one outcome per message, in order. A
    /// message counts as sent only when its outcome is `Ok`.
    fn send_all(
        &self,
        messages: Vec<Outgoing>,
    ) -> impl Future<Output = Vec<Result<(), SendError>>> + Send;
}

/// Holds calls of a [`MemorySink`] until the test opens it.
#[derive(Debug, Clone)]
pub struct Gate(tokio::sync::watch::Sender<bool>);

impl Gate {
    pub fn new() -> Self {
        Gate(tokio::sync::watch::channel(false).0)
    }
    pub fn open(&self) {
        self.0.send_replace(true);
    }
    async fn passed(&self) {
        // The sender lives in `self`, so the channel cannot close here.
        let _ = self.0.subscribe().wait_for(|open| *open).await;
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

/// What one call to a [`MemorySink`] does.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Answer only after this long (a tokio sleep).
    pub delay: Option<StdDuration>,
    /// Answer only once this gate is open.
    pub gate: Option<Gate>,
    /// Never answer (the caller's own timeout or shutdown must cope).
    pub hang: bool,
    /// Fail these messages of the call, by position (all: `fail_all`).
    pub fail: Vec<usize>,
    /// Fail every message of the call with this error.
    pub fail_all: Option<SendError>,
    /// Accept the messages but answer as if the call failed (the SQS call
    /// that timed out after SQS took the messages).
    pub accept_then_fail: bool,
}

impl Plan {
    pub fn fail_all(error: SendError) -> Self {
        Plan {
            fail_all: Some(error),
            ..Plan::default()
        }
    }
    pub fn fail(positions: &[usize]) -> Self {
        Plan {
            fail: positions.to_vec(),
            ..Plan::default()
        }
    }
    pub fn delay(d: StdDuration) -> Self {
        Plan {
            delay: Some(d),
            ..Plan::default()
        }
    }
    pub fn gated(gate: &Gate) -> Self {
        Plan {
            gate: Some(gate.clone()),
            ..Plan::default()
        }
    }
    pub fn hang() -> Self {
        Plan {
            hang: true,
            ..Plan::default()
        }
    }
}

/// A message a [`MemorySink`] accepted, in acceptance order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub message: Outgoing,
    /// Which call (0-based) accepted it.
    pub call: usize,
}

#[derive(Debug, Default)]
struct MemoryState {
    plans: VecDeque<Plan>,
    /// Used when no planned call is left.
    default: Plan,
    accepted: Vec<Accepted>,
    calls: usize,
}

/// An in-memory sink for tests: accepts everything unless told otherwise.
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    state: Arc<Mutex<MemoryState>>,
}

impl MemorySink {
    pub fn new() -> Self {
        MemorySink::default()
    }

    /// The next calls, in order, follow these plans.
    pub fn then(&self, plan: Plan) -> &Self {
        self.lock().plans.push_back(plan);
        self
    }

    /// Every call with no planned behaviour left follows this plan.
    pub fn always(&self, plan: Plan) {
        self.lock().default = plan;
    }

    /// Everything accepted so far.
    pub fn accepted(&self) -> Vec<Accepted> {
        self.lock().accepted.clone()
    }

    /// How many calls were made.
    pub fn calls(&self) -> usize {
        self.lock().calls
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A poisoned lock means a test already panicked; its state is still
        // what the test wants to see.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Sink for MemorySink {
    async fn send_all(&self, messages: Vec<Outgoing>) -> Vec<Result<(), SendError>> {
        let (plan, call) = {
            let mut s = self.lock();
            let plan = match s.plans.pop_front() {
                Some(p) => p,
                None => s.default.clone(),
            };
            s.calls += 1;
            (plan, s.calls - 1)
        };
        if plan.hang {
            std::future::pending::<()>().await;
        }
        if let Some(d) = plan.delay {
            tokio::time::sleep(d).await;
        }
        if let Some(g) = &plan.gate {
            g.passed().await;
        }
        let mut out = Vec::with_capacity(messages.len());
        let mut s = self.lock();
        for (i, message) in messages.into_iter().enumerate() {
            if let Some(e) = &plan.fail_all {
                out.push(Err(e.clone()));
            } else if plan.fail.contains(&i) {
                out.push(Err(SendError::Rejected {
                    code: "InternalError".into(),
                    message: "planned failure".into(),
                    sender_fault: false,
                }));
            } else {
                s.accepted.push(Accepted { message, call });
                out.push(if plan.accept_then_fail {
                    Err(SendError::Request("timed out after SQS took it".into()))
                } else {
                    Ok(())
                });
            }
        }
        out
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

    #[test]
    fn errors_that_need_a_fix_back_off_further() {
        let missing = SendError::QueueMissing {
            logical: "q".into(),
            sqs: "q".into(),
        };
        let throttled = SendError::Rejected {
            code: "ThrottlingException".into(),
            message: String::new(),
            sender_fault: false,
        };
        assert_eq!(missing.retry_delay(1, "k"), backoff(3, "k"));
        assert_eq!(throttled.retry_delay(1, "k"), backoff(1, "k"));
    }

    fn msg(n: u8) -> Outgoing {
        Outgoing {
            task_id: Uuid::from_bytes([n; 16]),
            queue: QueueName::new("", "celery"),
            queue_url: None,
            body: format!("body {n}"),
            group_id: None,
            dedup_id: None,
            delay_seconds: 0,
            attributes: Vec::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn memory_sink_follows_its_plans_then_accepts() {
        let sink = MemorySink::new();
        sink.then(Plan::fail(&[1]))
            .then(Plan::delay(StdDuration::from_secs(5)));
        let r = sink.send_all(vec![msg(0), msg(1), msg(2)]).await;
        assert!(r[0].is_ok() && r[1].is_err() && r[2].is_ok());
        let started = tokio::time::Instant::now();
        assert!(sink.send_all(vec![msg(3)]).await[0].is_ok());
        assert_eq!(started.elapsed(), StdDuration::from_secs(5));
        let ids: Vec<u8> = sink
            .accepted()
            .iter()
            .map(|a| a.message.task_id.as_bytes()[0])
            .collect();
        assert_eq!(ids, [0, 2, 3]);
        assert_eq!(sink.calls(), 2);
    }
}
