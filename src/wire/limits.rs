//! What Celery's protocol and SQS accept, in one place: the headers a user
//! may not set, task and queue names, FIFO group and deduplication ids, and
//! the message size. Entries, one-off jobs and the releaser all ask here,
//! so a rule (and the message that explains it) exists once.
//!
//! Pure: no I/O, no clock.

use serde_json::{Map, Value};

/// SQS's message size limit (current API): body plus attributes.
pub const SQS_MAX_MESSAGE_BYTES: usize = 1_048_576;

/// Headers Celery's protocol defines, plus sqsbeat's own; user headers may
/// not replace them.
pub const RESERVED_HEADERS: &[&str] = &[
    "lang",
    "task",
    "id",
    "shadow",
    "eta",
    "expires",
    "group",
    "group_index",
    "retries",
    "timelimit",
    "root_id",
    "parent_id",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "ignore_result",
    "replaced_task_nesting",
    "stamped_headers",
    "stamps",
    "celery_beat_task",
    "periodic_task_name",
    "sqsbeat_scheduled_at",
    // Marks a message diverted to the intake queue (python/INTAKE.md): a
    // task carrying it would be taken for one.
    "sqsbeat_intake",
    "sqsbeat_trigger",
];

/// Longest FIFO `MessageGroupId` / `MessageDeduplicationId` SQS accepts.
pub const MAX_FIFO_ID_CHARS: usize = 128;

/// A task id of the real width, to measure a message before any id exists:
/// the size depends on lengths only.
pub const PROBE_TASK_ID: &str = "00000000-0000-0000-0000-000000000000";
/// An `origin` header of the longest host name (64 characters).
pub const PROBE_ORIGIN: &str =
    "sqsbeat@a-host-name-of-sixty-four-characters-which-is-the-max-length";

/// A value Celery or SQS would refuse, or mishandle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("task name is empty")]
    EmptyTask,
    #[error("task name is longer than 512 characters")]
    LongTask,
    #[error(
        "task name {task:?} contains {found:?}; Celery task names look like \"app.tasks.send_report\""
    )]
    TaskChar { task: String, found: char },
    #[error("queue is empty")]
    EmptyQueue,
    #[error(
        "queue {queue:?} contains {found:?}; SQS queue names are ASCII letters, digits, '-' and '_' (kombu turns '.' into '-')"
    )]
    QueueChar { queue: String, found: char },
    #[error("queue {0:?} is longer than SQS's 80 characters")]
    LongQueue(String),
    #[error("headers may not set {}: Celery's protocol (or sqsbeat) owns them", quoted(.0))]
    ReservedHeaders(Vec<String>),
    #[error("{0}")]
    FifoId(FifoIdError),
    #[error(
        "the task message is {size} bytes on SQS, over the {max} byte limit; pass a reference (an id, a key) instead of the data"
    )]
    TooLarge { size: usize, max: usize },
}

fn quoted(keys: &[String]) -> String {
    keys.iter()
        .map(|k| format!("{k:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a string cannot be a FIFO `MessageGroupId` or
/// `MessageDeduplicationId` (SQS: 1 to 128 characters, each an ASCII letter
/// or digit or one of ``!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~``).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FifoIdError {
    #[error("is empty")]
    Empty,
    #[error("is {0} characters long, over SQS's 128")]
    TooLong(usize),
    #[error("contains {0:?}; SQS allows only ASCII letters, digits and punctuation (no spaces)")]
    Char(char),
}

/// Celery task names are dotted identifiers; SQS and Celery accept more,
/// but a space or control character is always a mistake.
pub fn check_task_name(task: &str) -> Result<(), LimitError> {
    if task.trim().is_empty() {
        return Err(LimitError::EmptyTask);
    }
    if task.len() > 512 {
        return Err(LimitError::LongTask);
    }
    if let Some(found) = task.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(LimitError::TaskChar {
            task: task.to_string(),
            found,
        });
    }
    Ok(())
}

/// Logical queue names must mangle to a valid SQS name (kombu's rules).
pub fn check_queue_name(queue: &str) -> Result<(), LimitError> {
    if queue.trim().is_empty() {
        return Err(LimitError::EmptyQueue);
    }
    if let Some(found) = queue
        .chars()
        .find(|c| !c.is_ascii() || c.is_ascii_whitespace() || c.is_ascii_control())
    {
        return Err(LimitError::QueueChar {
            queue: queue.to_string(),
            found,
        });
    }
    if queue.len() > 80 {
        return Err(LimitError::LongQueue(queue.to_string()));
    }
    Ok(())
}

/// User headers that would replace one of [`RESERVED_HEADERS`].
pub fn check_headers(headers: &Map<String, Value>) -> Result<(), LimitError> {
    let reserved: Vec<String> = headers
        .keys()
        .filter(|k| RESERVED_HEADERS.contains(&k.as_str()))
        .cloned()
        .collect();
    if reserved.is_empty() {
        Ok(())
    } else {
        Err(LimitError::ReservedHeaders(reserved))
    }
}

/// SQS's rule for a FIFO `MessageGroupId` or `MessageDeduplicationId`. The
/// allowed set is exactly ASCII's graphic characters (letters, digits and
/// the 32 punctuation marks).
pub fn check_fifo_id(id: &str) -> Result<(), FifoIdError> {
    if id.is_empty() {
        return Err(FifoIdError::Empty);
    }
    if let Some(c) = id.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(FifoIdError::Char(c));
    }
    // All ASCII by now: bytes are characters.
    if id.len() > MAX_FIFO_ID_CHARS {
        return Err(FifoIdError::TooLong(id.len()));
    }
    Ok(())
}

/// An upper bound on the SQS body of a task message with this payload,
/// whose names (entry, task, queue, group id) add up to `names` bytes,
/// without building it.
///
/// Python's `json.dumps` writes a value in at most 5× its compact
/// serde_json length: strings at most 3× (`\uXXXX` for 2-3 UTF-8 bytes, a
/// surrogate pair for 4, `", "` for `,`), numbers up to 4.5× (the float
/// `1e15` is `1000000000000000.0`); names appear in a few headers; the fixed part
/// (protocol headers, properties, the capped reprs) is under 16 KiB; the
/// body and then the envelope are base64-encoded (4/3 each).
pub fn message_size_bound(
    args: &[Value],
    kwargs: &Map<String, Value>,
    headers: &Map<String, Value>,
    names: usize,
) -> usize {
    fn compact_len<T: serde::Serialize + ?Sized>(v: &T) -> usize {
        serde_json::to_vec(v).map_or(usize::MAX / 64, |v| v.len())
    }
    let payload = compact_len(args) + compact_len(kwargs) + compact_len(headers);
    ((payload * 5 + names * 6 * 4 + 16_384) * 16).div_ceil(9) + 1024
}

/// Whether a message of `size` bytes fits under `max`.
pub fn check_message_size(size: usize, max: usize) -> Result<(), LimitError> {
    if size > max {
        Err(LimitError::TooLarge { size, max })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_ids_are_ascii_graphic_and_1_to_128_long() {
        assert_eq!(check_fifo_id("daily-report"), Ok(()));
        assert_eq!(
            check_fifo_id("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~azAZ09"),
            Ok(())
        );
        assert_eq!(check_fifo_id(&"x".repeat(128)), Ok(()));
        assert_eq!(
            check_fifo_id(&"x".repeat(129)),
            Err(FifoIdError::TooLong(129))
        );
        assert_eq!(check_fifo_id(""), Err(FifoIdError::Empty));
        assert_eq!(check_fifo_id("daily report"), Err(FifoIdError::Char(' ')));
        assert_eq!(check_fifo_id("café"), Err(FifoIdError::Char('é')));
        assert_eq!(check_fifo_id("a\tb"), Err(FifoIdError::Char('\t')));
    }

    #[test]
    fn one_size_message_for_every_caller() {
        let e = check_message_size(1_048_577, SQS_MAX_MESSAGE_BYTES).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the task message is 1048577 bytes on SQS, over the 1048576 byte limit; pass a reference (an id, a key) instead of the data"
        );
        assert_eq!(check_message_size(1_048_576, SQS_MAX_MESSAGE_BYTES), Ok(()));
    }

    #[test]
    fn reserved_headers_are_named() {
        let mut h = Map::new();
        h.insert("id".into(), Value::from(1));
        h.insert("x-trace".into(), Value::from("a"));
        h.insert("eta".into(), Value::Null);
        assert_eq!(
            check_headers(&h).unwrap_err().to_string(),
            "headers may not set \"id\", \"eta\": Celery's protocol (or sqsbeat) owns them"
        );
    }
}
