//! The intake contract (python/INTAKE.md) against messages captured from
//! real Celery 5.7 / kombu 5.7 on moto (tests/fixtures/intake): every
//! intake message is read by sqsbeat's reader, kept as a job by the intake
//! consumer in a real store, and released by the releaser; what it sends
//! must be, byte for byte, what Celery sent without diversion (`direct/`)
//! and the SendMessage `release.json` gives. Nothing is normalised: the
//! fixtures pin every per-message value, and what varies between captures
//! (`meta.json`) is only in `sqs_message.json`, which is not compared.

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};
use sqsbeat::jobs::intake::Consumer;
use sqsbeat::jobs::releaser::Releaser;
use sqsbeat::store::jobs;
use sqsbeat::wire::intake::{self, AttributeValue, MessageAttribute};
use sqsbeat::wire::queue::QueueName;
use sqsbeat::wire::sink::{MemorySink, Outgoing};
use sqsbeat::wire::source::{MemorySource, Poll, Source};

use crate::harness::Harness;

/// What capture.py wrote for one call.
pub struct Case {
    pub name: String,
    dir: PathBuf,
    pub meta: Value,
    release: Value,
}

impl Case {
    pub fn file(&self, rel: &str) -> String {
        let p = self.dir.join(rel);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// The intake queue the application sent to, as sqsbeat resolves it
    /// from the same logical name and prefix.
    pub fn intake_queue(&self) -> QueueName {
        let prefix = self.meta["transport_options"]["queue_name_prefix"]
            .as_str()
            .unwrap_or("");
        QueueName::new(prefix, self.meta["intake_queue"].as_str().unwrap())
    }

    fn now(&self) -> DateTime<Utc> {
        at(self.release["now"].as_str().unwrap())
    }

    fn send(&self) -> &Map<String, Value> {
        self.release["send_message"].as_object().unwrap()
    }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

/// Every captured case, by name.
pub fn cases() -> Vec<Case> {
    let root: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests/fixtures/intake"]
        .iter()
        .collect();
    let mut out: Vec<Case> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("meta.json").exists())
        .map(|dir| {
            let read = |f: &str| -> Value {
                serde_json::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap()
            };
            Case {
                name: dir.file_name().unwrap().to_string_lossy().into_owned(),
                meta: read("meta.json"),
                release: read("release.json"),
                dir,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    // A case that went missing must fail here, not pass by absence.
    assert_eq!(out.len(), 13, "fixture cases in {}", root.display());
    out
}

/// The reader alone: the envelope it keeps is Celery's own, byte for
/// byte, and so is the SQS body a release sends.
#[test]
fn every_intake_fixture_reads_as_the_message_celery_sent_directly() {
    for c in cases() {
        let intake_q = c.intake_queue();
        assert_eq!(
            intake_q.sqs, c.meta["intake_sqs_queue"],
            "{}: sqsbeat resolves the intake queue as kombu did",
            c.name
        );
        let d = intake::read(&c.file("intake/sqs_body.raw"), &intake_q, 1_048_576)
            .unwrap_or_else(|e| panic!("{}: {}", c.name, e.reason));
        assert_eq!(
            d.envelope,
            c.file("direct/envelope.raw.json"),
            "{}: envelope",
            c.name
        );
        assert_eq!(
            intake::release_body(&d.envelope, d.base64),
            c.file("direct/sqs_body.raw"),
            "{}: SQS body",
            c.name
        );
        let dest = &c.meta["destination"];
        assert_eq!(d.queue.logical, dest["queue"], "{}", c.name);
        assert_eq!(d.queue.sqs, dest["sqs_queue"], "{}", c.name);
        assert_eq!(d.queue.fifo, dest["fifo"], "{}", c.name);
        assert_eq!(d.id.to_string(), c.meta["celery_task_id"], "{}", c.name);
        assert_eq!(d.due_at, at(c.meta["eta"].as_str().unwrap()), "{}", c.name);
        // The task body is passed through unread; its display copy is the
        // captured one's.
        let task_body: Value = serde_json::from_str(&c.file("direct/task_body.raw.json")).unwrap();
        assert_eq!(d.args, task_body[0], "{}", c.name);
        assert_eq!(d.kwargs, task_body[1], "{}", c.name);
    }
}

/// SendMessage's MessageAttributes as release.json writes them.
fn attributes_json(a: &[(String, MessageAttribute)]) -> Value {
    let mut m = Map::new();
    for (name, attr) in a {
        let v = match &attr.value {
            AttributeValue::String(s) => json!({"DataType": attr.data_type, "StringValue": s}),
            AttributeValue::Binary(b) => {
                json!({"DataType": attr.data_type, "BinaryValue": B64.encode(b)})
            }
        };
        m.insert(name.clone(), v);
    }
    Value::Object(m)
}

/// Compares one sent message with a case's release.json.
fn assert_release(c: &Case, sent: &Outgoing) {
    let want = c.send();
    let name = &c.name;
    assert_eq!(sent.body, want["MessageBody"], "{name}: MessageBody");
    match (want.get("QueueUrl"), want.get("QueueName")) {
        (Some(url), _) => assert_eq!(sent.queue_url.as_deref(), url.as_str(), "{name}"),
        (None, Some(q)) => {
            assert_eq!(sent.queue.sqs, *q, "{name}: QueueName");
            assert_eq!(sent.queue_url, None, "{name}");
        }
        (None, None) => panic!("{name}: release.json names no queue"),
    }
    match want.get("DelaySeconds") {
        Some(d) => {
            assert!(!sent.queue.fifo, "{name}");
            assert_eq!(
                i64::from(sent.delay_seconds),
                d.as_i64().unwrap(),
                "{name}: DelaySeconds"
            );
        }
        None => assert!(
            sent.queue.fifo,
            "{name}: only FIFO sends go without DelaySeconds"
        ),
    }
    assert_eq!(
        sent.group_id.as_deref(),
        want.get("MessageGroupId").and_then(Value::as_str),
        "{name}: MessageGroupId"
    );
    assert_eq!(
        sent.dedup_id.as_deref(),
        want.get("MessageDeduplicationId").and_then(Value::as_str),
        "{name}: MessageDeduplicationId"
    );
    assert_eq!(
        attributes_json(&sent.attributes),
        want.get("MessageAttributes").cloned().unwrap_or(json!({})),
        "{name}: MessageAttributes"
    );
    let allowed = [
        "MessageBody",
        "QueueName",
        "QueueUrl",
        "DelaySeconds",
        "MessageGroupId",
        "MessageDeduplicationId",
        "MessageAttributes",
    ];
    for k in want.keys() {
        assert!(
            allowed.contains(&k.as_str()),
            "{name}: release.json has {k}, unchecked here"
        );
    }
}

/// Every case through the consumer into `h`'s store, then released at
/// its `now` by the releaser: what the sink takes is release.json.
async fn fixtures_round_trip_through_the_store(h: Harness) {
    for c in cases() {
        let source = MemorySource::new();
        source.push(c.file("intake/sqs_body.raw"));
        let consumer = Consumer {
            store: h.store.clone(),
            source: source.clone(),
            queue: c.intake_queue(),
            max_message_bytes: 1_048_576,
            poll: Poll {
                max_messages: 10,
                wait: std::time::Duration::ZERO,
                visibility: std::time::Duration::from_secs(60),
            },
        };
        let got = source
            .receive(&consumer.queue, &consumer.poll)
            .await
            .unwrap();
        let batch = consumer.handle(got).await.unwrap();
        assert_eq!(
            (batch.stored, batch.deleted),
            (1, 1),
            "{}: {batch:?}",
            c.name
        );
        assert!(source.remaining().is_empty(), "{}", c.name);
        let id = uuid::Uuid::parse_str(c.meta["celery_task_id"].as_str().unwrap()).unwrap();
        let row = jobs::get(&h.store, id).await.unwrap().unwrap();
        assert_eq!(row.status, jobs::JobStatus::Pending, "{}", c.name);

        let sink = MemorySink::new();
        let releaser = Releaser {
            store: h.store.clone(),
            sink: sink.clone(),
            opts: h.opts.clone(),
            window: Duration::minutes(15),
            max_message_bytes: 1_048_576,
            clock: h.clock.clone(),
            renew_every: sqsbeat::jobs::releaser::RENEW_EVERY,
            trust: h.trust.subscribe(),
        };
        let now = c.now();
        h.clock.set(now);
        let pass = releaser.pass(now, Some(id)).await.unwrap();
        assert_eq!(pass.released, 1, "{}: {pass:?}", c.name);
        let accepted = sink.accepted();
        assert_eq!(accepted.len(), 1, "{}", c.name);
        assert_eq!(accepted[0].message.task_id, id);
        assert_release(&c, &accepted[0].message);
        let row = jobs::get(&h.store, id).await.unwrap().unwrap();
        assert_eq!(row.status, jobs::JobStatus::Released, "{}", c.name);
    }
}

#[tokio::test]
async fn intake_fixtures_round_trip_through_sqlite_byte_for_byte() {
    fixtures_round_trip_through_the_store(Harness::sqlite(at("2030-01-15T12:00:00Z")).await).await;
}

#[tokio::test]
async fn intake_fixtures_round_trip_through_postgres_byte_for_byte() {
    fixtures_round_trip_through_the_store(Harness::postgres(at("2030-01-15T12:00:00Z")).await)
        .await;
}
