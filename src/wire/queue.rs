//! Logical Celery queue names → SQS queue names, exactly as kombu maps them.
//!
//! kombu's `canonical_queue_name(q) = entity_name(prefix + q)`: `.` becomes
//! `-`, every other ASCII punctuation mark except `-` and `_` becomes `_`,
//! and a trailing `.fifo` is kept. Whether a queue is FIFO is decided on the
//! *logical* name, as kombu's `_put` does.

/// An SQS queue as a Celery worker knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QueueName {
    /// The logical name: what goes in `delivery_info.routing_key`.
    pub logical: String,
    /// The SQS queue name (prefix + logical, mangled).
    pub sqs: String,
    pub fifo: bool,
}

impl QueueName {
    pub fn new(prefix: &str, logical: &str) -> Self {
        QueueName {
            logical: logical.to_string(),
            sqs: entity_name(&format!("{prefix}{logical}")),
            fifo: is_fifo(logical),
        }
    }
}

/// Whether a logical queue is a FIFO queue: kombu decides on the logical
/// name's `.fifo` suffix (case-sensitive), before any prefix or mangling.
pub fn is_fifo(logical: &str) -> bool {
    logical.ends_with(".fifo")
}

/// kombu's `entity_name`.
pub fn entity_name(name: &str) -> String {
    let (stem, suffix) = match name.strip_suffix(".fifo") {
        Some(stem) => (stem, ".fifo"),
        None => (name, ""),
    };
    let mut out: String = stem
        .chars()
        .map(|c| match c {
            '.' => '-',
            '-' | '_' => c,
            c if c.is_ascii_punctuation() => '_',
            c => c,
        })
        .collect();
    out.push_str(suffix);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_kombu_measured_table() {
        // REPORT.md section 5, measured with kombu 5.7.
        let cases = [
            ("", "celery", "celery"),
            ("", "my.dotted.queue", "my-dotted-queue"),
            ("", "my.dotted.queue:name", "my-dotted-queue_name"),
            ("", "tasks.v1:high*prio", "tasks-v1_high_prio"),
            ("", "jobs.fifo", "jobs.fifo"),
            ("", "jobs.fifo.fifo", "jobs-fifo.fifo"),
            ("", "x.FIFO", "x-FIFO"),
            ("pfx-", "my.dotted.queue", "pfx-my-dotted-queue"),
            ("dev.", "jobs.fifo", "dev-jobs.fifo"),
        ];
        for (prefix, logical, sqs) in cases {
            assert_eq!(
                QueueName::new(prefix, logical).sqs,
                sqs,
                "{prefix}{logical}"
            );
        }
        assert!(QueueName::new("", "jobs.fifo").fifo);
        assert!(
            !QueueName::new("", "x.FIFO").fifo,
            "the suffix check is case-sensitive"
        );
    }
}
