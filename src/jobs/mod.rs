//! One-off jobs: a Celery task due at one instant, possibly weeks away.
//!
//! SQS holds a message back for at most 15 minutes (`DelaySeconds` ≤ 900),
//! and a Celery `eta` beyond the queue's visibility timeout runs twice or
//! never. So a job waits in the database until its release window opens
//! (at most 15 minutes before it is due) and then goes to SQS with
//! `DelaySeconds` for the remainder: it becomes visible at its due instant
//! and no worker ever holds it. Everything here is pure.

pub mod intake;
pub mod releaser;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::wire::celery::{ArgsShape, BodyEncoding, TaskMessage};
use crate::wire::limits;
use crate::wire::queue::{QueueName, is_fifo};

/// SQS's longest per-message delay.
pub const MAX_DELAY_SECONDS: i64 = 900;

/// What to schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// The Celery task id.
    pub id: Uuid,
    pub task: String,
    pub args: Vec<Value>,
    pub kwargs: Map<String, Value>,
    pub queue: String,
    pub due_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub priority: u8,
    pub headers: Map<String, Value>,
}

impl JobSpec {
    /// The Celery message, sent at `now` to land at `due_at`. The `eta`
    /// header is the due instant only while the message is still delayed by
    /// SQS itself, so a worker never holds it waiting.
    pub fn message<'a>(
        &'a self,
        id: &'a str,
        origin: &'a str,
        eta: Option<DateTime<Utc>>,
    ) -> TaskMessage<'a> {
        TaskMessage {
            task: &self.task,
            id,
            args: &self.args,
            kwargs: &self.kwargs,
            queue: &self.queue,
            priority: self.priority,
            headers: &self.headers,
            eta,
            expires: self.expires_at,
            scheduled_at: self.due_at,
            periodic_entry: None,
            trigger: None,
            origin,
            args_shape: ArgsShape::Tuple,
            sentry: None,
        }
    }

    /// Every problem with the job; empty when it can be scheduled.
    pub fn problems(
        &self,
        now: DateTime<Utc>,
        allow_past: bool,
        max_message_bytes: usize,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let limits = [
            limits::check_task_name(&self.task),
            limits::check_queue_name(&self.queue),
            limits::check_headers(&self.headers),
        ];
        out.extend(
            limits
                .into_iter()
                .filter_map(Result::err)
                .map(|e| e.to_string()),
        );
        // The releaser sends a FIFO job with its task name as the group id.
        if is_fifo(&self.queue)
            && let Err(e) = limits::check_fifo_id(&self.task)
        {
            out.push(format!(
                "on FIFO queue {:?} the task name is the MessageGroupId, and it {e}",
                self.queue
            ));
        }
        if self.due_at < now && !allow_past {
            out.push(format!(
                "due instant {} is in the past; pass --allow-past to send it at once",
                self.due_at.to_rfc3339()
            ));
        }
        if let Some(x) = self.expires_at
            && x <= self.due_at
        {
            out.push(format!(
                "expires ({}) must be after the due instant ({})",
                x.to_rfc3339(),
                self.due_at.to_rfc3339()
            ));
        }
        // The cheap bound settles most jobs (and every call with no limit)
        // without building the message.
        let names = 2 * self.task.len() + self.queue.len();
        if limits::message_size_bound(&self.args, &self.kwargs, &self.headers, names)
            > max_message_bytes
        {
            let size = self
                .message(
                    limits::PROBE_TASK_ID,
                    limits::PROBE_ORIGIN,
                    Some(self.due_at),
                )
                .sqs_body(now, BodyEncoding::Base64)
                .len();
            if let Err(e) = limits::check_message_size(size, max_message_bytes) {
                out.push(e.to_string());
            }
        }
        out
    }
}

/// How to send a job whose window is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    pub delay_seconds: i32,
    pub eta: Option<DateTime<Utc>>,
}

/// The release of a job due at `due_at`, sent at `now`: DelaySeconds for
/// the remainder in whole seconds, at most 900, and an eta of the due
/// instant for the fraction left over. FIFO
/// queues take no per-message delay, so their jobs are released at the due
/// instant and carry no eta. `None`: not yet (the window is not open).
pub fn release_plan(
    due_at: DateTime<Utc>,
    now: DateTime<Utc>,
    window: Duration,
    queue: &QueueName,
) -> Option<Release> {
    if queue.fifo {
        return (due_at <= now).then_some(Release {
            delay_seconds: 0,
            eta: None,
        });
    }
    if due_at > now + window.min(Duration::seconds(MAX_DELAY_SECONDS)) {
        return None;
    }
    // Whole seconds rounded down, so the message is visible at most a second
    // before it is due; the eta header (the due instant) covers that last
    // fraction, which a worker holds for under a second, far inside any
    // visibility timeout.
    let remaining_ms = (due_at - now).num_milliseconds().max(0);
    let delay = (remaining_ms / 1000).min(MAX_DELAY_SECONDS) as i32;
    Some(Release {
        delay_seconds: delay,
        eta: (due_at > now).then_some(due_at),
    })
}

/// When the job's window opens.
pub fn opens_at(due_at: DateTime<Utc>, window: Duration, queue: &QueueName) -> DateTime<Utc> {
    if queue.fifo {
        due_at
    } else {
        due_at - window.min(Duration::seconds(MAX_DELAY_SECONDS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn spec() -> JobSpec {
        JobSpec {
            id: Uuid::nil(),
            task: "app.tasks.report".into(),
            args: vec![],
            kwargs: Map::new(),
            queue: "celery".into(),
            due_at: at("2026-12-05T09:00:00Z"),
            expires_at: None,
            priority: 0,
            headers: Map::new(),
        }
    }

    #[test]
    fn releases_only_inside_the_window_and_lands_on_time() {
        let q = QueueName::new("", "celery");
        let due = at("2026-12-05T09:00:00Z");
        let w = Duration::minutes(15);
        assert_eq!(
            release_plan(due, at("2026-12-05T08:44:59Z"), w, &q),
            None,
            "15m01s early: not yet"
        );
        assert_eq!(
            release_plan(due, at("2026-12-05T08:45:00Z"), w, &q),
            Some(Release {
                delay_seconds: 900,
                eta: Some(due)
            })
        );
        // Rounded down; the eta holds the last fraction of a second.
        assert_eq!(
            release_plan(due, at("2026-12-05T08:59:58.300Z"), w, &q),
            Some(Release {
                delay_seconds: 1,
                eta: Some(due)
            })
        );
        assert_eq!(
            release_plan(due, at("2026-12-05T08:59:59.900Z"), w, &q),
            Some(Release {
                delay_seconds: 0,
                eta: Some(due)
            })
        );
        assert_eq!(
            release_plan(due, at("2026-12-05T09:00:00Z"), w, &q),
            Some(Release {
                delay_seconds: 0,
                eta: None
            })
        );
        assert_eq!(
            release_plan(due, at("2026-12-05T09:05:00Z"), w, &q),
            Some(Release {
                delay_seconds: 0,
                eta: None
            }),
            "late: at once"
        );
        // A configured window longer than SQS allows is capped at 15 minutes.
        assert_eq!(
            release_plan(due, at("2026-12-05T08:40:00Z"), Duration::minutes(30), &q),
            None
        );
        assert_eq!(
            opens_at(due, Duration::minutes(5), &q),
            at("2026-12-05T08:55:00Z")
        );
    }

    #[test]
    fn fifo_jobs_go_at_the_due_instant_without_delay() {
        let q = QueueName::new("", "jobs.fifo");
        let due = at("2026-12-05T09:00:00Z");
        assert_eq!(
            release_plan(due, at("2026-12-05T08:59:59Z"), Duration::minutes(15), &q),
            None
        );
        assert_eq!(
            release_plan(due, due, Duration::minutes(15), &q),
            Some(Release {
                delay_seconds: 0,
                eta: None
            })
        );
        assert_eq!(opens_at(due, Duration::minutes(15), &q), due);
    }

    #[test]
    fn validation_reports_every_problem() {
        let mut s = spec();
        s.task = "bad name".into();
        s.queue = "q w".into();
        s.expires_at = Some(at("2026-12-05T08:00:00Z"));
        s.headers.insert("id".into(), Value::from(1));
        let p = s.problems(at("2026-12-06T00:00:00Z"), false, 1_048_576);
        assert_eq!(p.len(), 5, "{p:?}");
        assert!(
            spec()
                .problems(at("2026-12-01T00:00:00Z"), false, 1_048_576)
                .is_empty()
        );
        assert!(
            spec()
                .problems(at("2026-12-06T00:00:00Z"), true, 1_048_576)
                .is_empty(),
            "--allow-past"
        );
        let mut big = spec();
        big.args = vec![Value::String("x".repeat(700 * 1024))];
        assert!(
            big.problems(at("2026-12-01T00:00:00Z"), false, 1_048_576)[0].contains("byte limit")
        );
    }

    #[test]
    fn a_fifo_job_whose_task_name_sqs_refuses_as_group_id_is_refused() {
        let mut s = spec();
        s.queue = "jobs.fifo".into();
        s.task = format!("app.tasks.{}", "x".repeat(120));
        let p = s.problems(at("2026-12-01T00:00:00Z"), false, 1_048_576);
        assert_eq!(
            p,
            [
                "on FIFO queue \"jobs.fifo\" the task name is the MessageGroupId, and it is 130 characters long, over SQS's 128"
            ]
        );
        s.task = "app.tasks.café".into();
        let p = s.problems(at("2026-12-01T00:00:00Z"), false, 1_048_576);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("contains 'é'"), "{p:?}");
        // The same task on a standard queue is fine.
        s.queue = "jobs".into();
        assert!(
            s.problems(at("2026-12-01T00:00:00Z"), false, 1_048_576)
                .is_empty()
        );
    }
}
