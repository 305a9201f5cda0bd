//! Where intake messages come from: the [`Source`] seam between the intake
//! consumer and SQS (receive, delete), the mirror of [`crate::wire::sink`].
//!
//! [`crate::wire::sqs::SqsSink`] is the real one. [`MemorySource`] is an
//! in-memory queue with SQS's at-least-once manners: a received message is
//! invisible until it is deleted or until the test lets its visibility
//! lapse, and is then delivered again under a new receipt handle (an old
//! handle no longer deletes it); receives long-poll, and receives and
//! deletes fail when a test says so. The consumer's paths (parse, store,
//! delete after commit, redelivery) are so tested in-process.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use tokio::sync::Notify;

use crate::wire::queue::QueueName;
use crate::wire::sink::SendError;

/// One message received from the intake queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// SQS's `MessageId`: what a log line names.
    pub message_id: String,
    /// What deletes this delivery of it.
    pub receipt_handle: String,
    pub body: String,
    /// SQS's `ApproximateReceiveCount` (1 on the first delivery), which
    /// the queue's redrive policy compares with its `maxReceiveCount`.
    pub receive_count: u32,
}

/// How one receive asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poll {
    /// 1..=10.
    pub max_messages: i32,
    /// Long poll: wait this long for a message before answering with none.
    pub wait: StdDuration,
    /// How long the received messages stay invisible to other receivers.
    pub visibility: StdDuration,
}

/// Takes messages from a queue and deletes them once handled. Errors are
/// those of a send ([`SendError`]): a missing queue, a refusal (access
/// denied), a failed request.
pub trait Source: Clone + Send + Sync + 'static {
    fn receive(
        &self,
        queue: &QueueName,
        poll: &Poll,
    ) -> impl Future<Output = Result<Vec<Received>, SendError>> + Send;

    /// Deletes received messages by receipt handle: one outcome per
    /// handle, in order.
    fn delete(
        &self,
        queue: &QueueName,
        handles: Vec<String>,
    ) -> impl Future<Output = Vec<Result<(), SendError>>> + Send;
}

#[derive(Debug)]
struct Message {
    id: String,
    body: String,
    receives: u32,
    /// The handle of the delivery in flight, if one is.
    in_flight: Option<String>,
    deleted: bool,
}

#[derive(Debug, Default)]
struct MemoryState {
    messages: Vec<Message>,
    next_id: u64,
    /// The next receives fail with these.
    receive_failures: VecDeque<SendError>,
    /// The next delete calls fail these positions of theirs.
    delete_failures: VecDeque<Vec<usize>>,
    receives: usize,
}

/// An in-memory queue for tests.
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    state: Arc<Mutex<MemoryState>>,
    arrived: Arc<Notify>,
}

impl MemorySource {
    pub fn new() -> Self {
        MemorySource::default()
    }

    /// Puts a message on the queue; returns its `MessageId`.
    pub fn push(&self, body: impl Into<String>) -> String {
        let id = {
            let mut s = self.lock();
            s.next_id += 1;
            let id = format!("m-{}", s.next_id);
            s.messages.push(Message {
                id: id.clone(),
                body: body.into(),
                receives: 0,
                in_flight: None,
                deleted: false,
            });
            id
        };
        self.arrived.notify_waiters();
        id
    }

    /// Every message in flight becomes visible again, as when its
    /// visibility timeout ends: its next delivery has a new handle.
    pub fn expire(&self) {
        for m in &mut self.lock().messages {
            m.in_flight = None;
        }
        self.arrived.notify_waiters();
    }

    /// The next receive fails with `error`.
    pub fn fail_receive(&self, error: SendError) {
        self.lock().receive_failures.push_back(error);
    }

    /// The next delete call fails these positions of its handles.
    pub fn fail_delete(&self, positions: &[usize]) {
        self.lock().delete_failures.push_back(positions.to_vec());
    }

    /// Ids of the messages not deleted, in arrival order.
    pub fn remaining(&self) -> Vec<String> {
        self.lock()
            .messages
            .iter()
            .filter(|m| !m.deleted)
            .map(|m| m.id.clone())
            .collect()
    }

    /// How many receive calls were made.
    pub fn receives(&self) -> usize {
        self.lock().receives
    }

    /// How many times a message was delivered.
    pub fn deliveries(&self, id: &str) -> u32 {
        self.lock()
            .messages
            .iter()
            .find(|m| m.id == id)
            .map_or(0, |m| m.receives)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A poisoned lock means a test already panicked; its state is still
        // what the test wants to see.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self, max: usize) -> Result<Vec<Received>, SendError> {
        let mut s = self.lock();
        if let Some(e) = s.receive_failures.pop_front() {
            return Err(e);
        }
        let mut out = Vec::new();
        for m in s.messages.iter_mut() {
            if out.len() == max {
                break;
            }
            if m.deleted || m.in_flight.is_some() {
                continue;
            }
            m.receives += 1;
            let handle = format!("{}#{}", m.id, m.receives);
            m.in_flight = Some(handle.clone());
            out.push(Received {
                message_id: m.id.clone(),
                receipt_handle: handle,
                body: m.body.clone(),
                receive_count: m.receives,
            });
        }
        Ok(out)
    }
}

impl Source for MemorySource {
    async fn receive(&self, _queue: &QueueName, poll: &Poll) -> Result<Vec<Received>, SendError> {
        self.lock().receives += 1;
        let max = usize::try_from(poll.max_messages.clamp(1, 10)).unwrap_or(1);
        let deadline = tokio::time::Instant::now() + poll.wait;
        loop {
            // Registered before looking, so a push in between still wakes it.
            let arrived = self.arrived.notified();
            let got = self.take(max)?;
            if !got.is_empty() {
                return Ok(got);
            }
            tokio::select! {
                _ = arrived => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
            }
        }
    }

    async fn delete(&self, _queue: &QueueName, handles: Vec<String>) -> Vec<Result<(), SendError>> {
        let mut s = self.lock();
        let fail = s.delete_failures.pop_front().unwrap_or_default();
        handles
            .iter()
            .enumerate()
            .map(|(i, h)| {
                if fail.contains(&i) {
                    return Err(SendError::Rejected {
                        code: "InternalError".into(),
                        message: "planned failure".into(),
                        sender_fault: false,
                    });
                }
                match s
                    .messages
                    .iter_mut()
                    .find(|m| m.in_flight.as_deref() == Some(h.as_str()))
                {
                    Some(m) => {
                        m.deleted = true;
                        m.in_flight = None;
                        Ok(())
                    }
                    None => Err(SendError::Rejected {
                        code: "ReceiptHandleIsInvalid".into(),
                        message: format!("{h} is not a current receipt handle"),
                        sender_fault: true,
                    }),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(wait_ms: u64) -> Poll {
        Poll {
            max_messages: 10,
            wait: StdDuration::from_millis(wait_ms),
            visibility: StdDuration::from_secs(60),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn memory_source_redelivers_what_is_not_deleted_under_a_new_handle() {
        let q = QueueName::new("", "sqsbeat-intake");
        let src = MemorySource::new();
        let a = src.push("a");
        let b = src.push("b");
        let got = src.receive(&q, &poll(0)).await.unwrap();
        assert_eq!(got.len(), 2);
        assert!(
            src.receive(&q, &poll(0)).await.unwrap().is_empty(),
            "in flight"
        );
        let r = src.delete(&q, vec![got[0].receipt_handle.clone()]).await;
        assert!(r[0].is_ok());
        src.expire();
        let again = src.receive(&q, &poll(0)).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(
            (again[0].message_id.as_str(), again[0].receive_count),
            (b.as_str(), 2)
        );
        let stale = src.delete(&q, vec![got[1].receipt_handle.clone()]).await;
        assert!(stale[0].is_err(), "an old handle deletes nothing");
        assert_eq!(src.remaining(), [b]);
        assert_eq!(src.deliveries(&a), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_source_long_polls_until_a_message_arrives_or_the_wait_ends() {
        let q = QueueName::new("", "sqsbeat-intake");
        let src = MemorySource::new();
        let started = tokio::time::Instant::now();
        assert!(src.receive(&q, &poll(20_000)).await.unwrap().is_empty());
        assert_eq!(started.elapsed(), StdDuration::from_secs(20));
        let pusher = src.clone();
        tokio::spawn(async move {
            tokio::time::sleep(StdDuration::from_secs(3)).await;
            pusher.push("late");
        });
        let started = tokio::time::Instant::now();
        let got = src.receive(&q, &poll(20_000)).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(started.elapsed(), StdDuration::from_secs(3));
    }
}
