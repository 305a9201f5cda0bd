//! The intake consumer in-process: a real store, a `MemorySource` with
//! SQS's at-least-once manners, messages captured from real Celery
//! (tests/fixtures/intake). Judged by the jobs table and by what is left on
//! the queue.

use std::time::Duration as StdDuration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::Duration;
use serde_json::{Value, json};
use sqsbeat::jobs::intake::{Batch, Consumer};
use sqsbeat::jobs::releaser::Releaser;
use sqsbeat::store::jobs::{self, Cancelled, ClaimRequest, Filter, JobStatus, Settlement};
use sqsbeat::store::{Store, StoreError};
use sqsbeat::wire::celery::python_json;
use sqsbeat::wire::queue::QueueName;
use sqsbeat::wire::sink::{MemorySink, SendError};
use sqsbeat::wire::source::{MemorySource, Poll, Received, Source};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::harness::{Harness, at};
use crate::intake_golden::{Case, cases};

fn case(name: &str) -> Case {
    cases().into_iter().find(|c| c.name == name).unwrap()
}

/// No long poll: a receive answers at once.
const NOW: Poll = Poll {
    max_messages: 10,
    wait: StdDuration::ZERO,
    visibility: StdDuration::from_secs(60),
};

fn consumer<Q: Source>(h: &Harness, source: &Q) -> Consumer<Q> {
    Consumer {
        store: h.store.clone(),
        source: source.clone(),
        queue: QueueName::new("", "sqsbeat-intake"),
        max_message_bytes: 1_048_576,
        poll: NOW,
    }
}

/// One receive and its handling.
async fn turn(c: &Consumer<MemorySource>) -> Result<Batch, StoreError> {
    let got = c.source.receive(&c.queue, &c.poll).await.unwrap();
    c.handle(got).await
}

fn releaser(h: &Harness, sink: &MemorySink) -> Releaser<MemorySink> {
    Releaser {
        store: h.store.clone(),
        sink: sink.clone(),
        opts: h.opts.clone(),
        window: Duration::minutes(15),
        max_message_bytes: 1_048_576,
        clock: h.clock.clone(),
        renew_every: sqsbeat::jobs::releaser::RENEW_EVERY,
        trust: h.trust.subscribe(),
    }
}

/// A captured intake envelope, edited, as an SQS body.
fn edited(c: &Case, edit: impl FnOnce(&mut Value)) -> String {
    let mut env: Value = serde_json::from_str(&c.file("intake/envelope.raw.json")).unwrap();
    edit(&mut env);
    B64.encode(python_json(&env))
}

/// The retry fixture's task (retries = 1) as its first attempt (retries
/// = 0), due an hour earlier.
fn first_attempt(retry: &Case) -> String {
    edited(retry, |e| {
        e["headers"]["retries"] = json!(0);
        e["headers"]["eta"] = json!("2030-01-15T12:00:00+00:00");
        e["headers"]["sqsbeat_intake"]["eta"] = json!("2030-01-15T12:00:00+00:00");
    })
}

fn task_id(c: &Case) -> Uuid {
    Uuid::parse_str(c.meta["celery_task_id"].as_str().unwrap()).unwrap()
}

async fn job(store: &Store, id: Uuid) -> jobs::JobRow {
    jobs::get(store, id).await.unwrap().expect("the job exists")
}

async fn count_jobs(store: &Store) -> usize {
    let all = Filter {
        limit: 1000,
        ..Filter::default()
    };
    jobs::list(store, &all).await.unwrap().len()
}

async fn a_redelivered_message_is_one_job(h: Harness) {
    let c = case("apply_async_countdown");
    let source = MemorySource::new();
    let m = source.push(c.file("intake/sqs_body.raw"));
    let con = consumer(&h, &source);
    // Stored, but the delete fails: SQS delivers it again.
    source.fail_delete(&[0]);
    let b = turn(&con).await.unwrap();
    assert_eq!((b.stored, b.deleted, b.delete_failed), (1, 0, 1));
    assert_eq!(source.remaining(), std::slice::from_ref(&m));
    source.expire();
    let b = turn(&con).await.unwrap();
    assert_eq!((b.stored, b.duplicates, b.deleted), (0, 1, 1), "{b:?}");
    assert!(source.remaining().is_empty());
    assert_eq!(source.deliveries(&m), 2);
    // The same message published twice (kombu re-publishes after a
    // connection error): one job still.
    source.push(c.file("intake/sqs_body.raw"));
    let b = turn(&con).await.unwrap();
    assert_eq!((b.duplicates, b.deleted), (1, 1));
    assert_eq!(count_jobs(&h.store).await, 1);
    let row = job(&h.store, task_id(&c)).await;
    assert_eq!(row.status, JobStatus::Pending);
    assert_eq!(row.task, "intake.add");
    assert_eq!(row.due_at, at("2030-01-15T13:00:00Z"));
    assert_eq!(row.queue, "celery");
    assert_eq!(row.args, json!([1, 1]));
    assert_eq!(row.scheduled_by, "intake:gen1000@capture");
    let m = row.intake.expect("an intake job");
    assert_eq!(m.envelope, c.file("direct/envelope.raw.json"));
    assert_eq!(m.sqs_queue.as_deref(), Some("celery"));
}

#[tokio::test]
async fn a_redelivered_intake_message_is_one_job_sqlite() {
    a_redelivered_message_is_one_job(Harness::sqlite(at("2030-01-15T12:00:00Z")).await).await;
}

#[tokio::test]
async fn a_redelivered_intake_message_is_one_job_postgres() {
    a_redelivered_message_is_one_job(Harness::postgres(at("2030-01-15T12:00:00Z")).await).await;
}

async fn a_retry_replaces_its_job_and_a_stale_copy_does_not(h: Harness) {
    let retry = case("retry_countdown_worker");
    let id = task_id(&retry);
    let source = MemorySource::new();
    let con = consumer(&h, &source);
    source.push(first_attempt(&retry));
    assert_eq!(turn(&con).await.unwrap().stored, 1);
    // Released, and run by a worker, which retries it.
    let sink = MemorySink::new();
    let now = h.at("2030-01-15T11:50:00Z");
    assert_eq!(
        releaser(&h, &sink).pass(now, None).await.unwrap().released,
        1
    );
    assert_eq!(job(&h.store, id).await.status, JobStatus::Released);
    source.push(retry.file("intake/sqs_body.raw"));
    let b = turn(&con).await.unwrap();
    assert_eq!((b.stored, b.deleted), (1, 1));
    let row = job(&h.store, id).await;
    assert_eq!(row.status, JobStatus::Pending, "the retry is pending again");
    assert_eq!(row.retries, 1);
    assert_eq!(row.due_at, at(retry.meta["eta"].as_str().unwrap()));
    assert_eq!((row.attempts, row.released_at), (0, None));
    assert_eq!(
        row.intake.unwrap().envelope,
        retry.file("direct/envelope.raw.json")
    );
    // The first attempt's message again (a late redelivery): stale.
    source.push(first_attempt(&retry));
    let b = turn(&con).await.unwrap();
    assert_eq!((b.stored, b.duplicates, b.deleted), (0, 1, 1));
    let row = job(&h.store, id).await;
    assert_eq!((row.status, row.retries), (JobStatus::Pending, 1));
    assert_eq!(count_jobs(&h.store).await, 1);
}

#[tokio::test]
async fn a_celery_retry_replaces_its_released_job_and_a_stale_copy_does_not_sqlite() {
    a_retry_replaces_its_job_and_a_stale_copy_does_not(
        Harness::sqlite(at("2030-01-15T11:00:00Z")).await,
    )
    .await;
}

#[tokio::test]
async fn a_celery_retry_replaces_its_released_job_and_a_stale_copy_does_not_postgres() {
    a_retry_replaces_its_job_and_a_stale_copy_does_not(
        Harness::postgres(at("2030-01-15T11:00:00Z")).await,
    )
    .await;
}

/// A replica that sent the first attempt and died before settling left
/// the row `releasing`; the retry replaces it, and that replica's late
/// settlement (its lease token) must not mark the new attempt released.
async fn a_retry_is_not_undone_by_the_previous_attempts_late_settle(h: Harness) {
    let retry = case("retry_countdown_worker");
    let id = task_id(&retry);
    let source = MemorySource::new();
    let con = consumer(&h, &source);
    source.push(first_attempt(&retry));
    turn(&con).await.unwrap();
    let now = at("2030-01-15T11:50:00Z");
    let token = Uuid::from_u128(0x1ea5e);
    let claimed = jobs::claim(
        &h.store,
        &ClaimRequest {
            now,
            window: Duration::minutes(15),
            limit: 10,
            lease_for: Duration::seconds(30),
            only: None,
            token,
        },
    )
    .await
    .unwrap();
    assert_eq!(claimed.rows.len(), 1);
    source.push(retry.file("intake/sqs_body.raw"));
    assert_eq!(turn(&con).await.unwrap().stored, 1);
    let late = Settlement {
        released: vec![id],
        ..Settlement::default()
    };
    let out = jobs::settle(&h.store, token, &late, now).await.unwrap();
    assert_eq!((out.settled, out.lost), (0, 1));
    let row = job(&h.store, id).await;
    assert_eq!((row.status, row.retries), (JobStatus::Pending, 1));
}

#[tokio::test]
async fn a_retry_is_not_undone_by_the_previous_attempts_late_settle_sqlite() {
    a_retry_is_not_undone_by_the_previous_attempts_late_settle(
        Harness::sqlite(at("2030-01-15T11:00:00Z")).await,
    )
    .await;
}

#[tokio::test]
async fn a_retry_is_not_undone_by_the_previous_attempts_late_settle_postgres() {
    a_retry_is_not_undone_by_the_previous_attempts_late_settle(
        Harness::postgres(at("2030-01-15T11:00:00Z")).await,
    )
    .await;
}

#[tokio::test]
async fn two_attempts_of_one_task_in_one_batch_keep_the_later() {
    let h = Harness::sqlite(at("2030-01-15T11:00:00Z")).await;
    let retry = case("retry_countdown_worker");
    let source = MemorySource::new();
    let con = consumer(&h, &source);
    source.push(retry.file("intake/sqs_body.raw"));
    source.push(first_attempt(&retry));
    let b = turn(&con).await.unwrap();
    assert_eq!(
        (b.received, b.stored, b.duplicates, b.deleted),
        (2, 1, 1, 2)
    );
    assert_eq!(job(&h.store, task_id(&retry)).await.retries, 1);
}

async fn sql(store: &Store, q: &str) {
    match store {
        Store::Postgres(s) => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(q.to_string()))
                .execute(s.pool())
                .await
                .unwrap();
        }
        Store::Sqlite(s) => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(q.to_string()))
                .execute(s.pool())
                .await
                .unwrap();
        }
    }
}

async fn a_failed_commit_deletes_nothing(h: Harness) {
    let source = MemorySource::new();
    let con = consumer(&h, &source);
    let names = ["apply_async_countdown", "send_task_eta"];
    for n in names {
        source.push(case(n).file("intake/sqs_body.raw"));
    }
    sql(&h.store, "ALTER TABLE jobs RENAME TO jobs_away").await;
    assert!(turn(&con).await.is_err(), "the store fails");
    assert_eq!(source.remaining().len(), 2, "nothing deleted");
    sql(&h.store, "ALTER TABLE jobs_away RENAME TO jobs").await;
    source.expire();
    let b = turn(&con).await.unwrap();
    assert_eq!((b.stored, b.deleted), (2, 2));
    assert!(source.remaining().is_empty());
    for n in names {
        assert_eq!(
            job(&h.store, task_id(&case(n))).await.status,
            JobStatus::Pending
        );
    }
}

#[tokio::test]
async fn a_failed_commit_deletes_nothing_sqlite() {
    a_failed_commit_deletes_nothing(Harness::sqlite(at("2030-01-15T11:00:00Z")).await).await;
}

#[tokio::test]
async fn a_failed_commit_deletes_nothing_postgres() {
    a_failed_commit_deletes_nothing(Harness::postgres(at("2030-01-15T11:00:00Z")).await).await;
}

#[tokio::test]
async fn malformed_messages_become_failed_jobs_or_stay_for_the_redrive_policy() {
    let h = Harness::sqlite(at("2030-01-15T11:00:00Z")).await;
    let c = case("apply_async_countdown");
    let source = MemorySource::new();
    let con = consumer(&h, &source);
    // Readable: id, task and ETA. Kept as a failed job, then deleted.
    source.push(edited(&c, |e| {
        e["headers"]["sqsbeat_intake"]["fifo"] = json!(true)
    }));
    // Unreadable, and a newer layout: left on the queue.
    let garbage = source.push("not json at all");
    let newer = source.push(edited(&case("send_task_eta"), |e| {
        e["headers"]["sqsbeat_intake"]["v"] = json!(2)
    }));
    let b = turn(&con).await.unwrap();
    assert_eq!(
        (b.received, b.failed, b.left, b.deleted),
        (3, 1, 2, 1),
        "{b:?}"
    );
    assert_eq!(source.remaining(), [garbage.clone(), newer.clone()]);
    let row = job(&h.store, task_id(&c)).await;
    assert_eq!(row.status, JobStatus::Failed);
    assert_eq!(row.due_at, at("2030-01-15T13:00:00Z"));
    let why = row.last_error.unwrap();
    assert!(
        why.starts_with("intake message m-1 is malformed: headers.sqsbeat_intake.fifo is true"),
        "{why}"
    );
    assert!(
        row.intake.unwrap().envelope.contains("\"sqsbeat_intake\""),
        "kept as received"
    );
    assert!(
        jobs::get(&h.store, task_id(&case("send_task_eta")))
            .await
            .unwrap()
            .is_none()
    );
    // They come back after their visibility timeout, and are left again:
    // no crash, no job, until the redrive policy moves them.
    source.expire();
    let b = turn(&con).await.unwrap();
    assert_eq!((b.received, b.left, b.deleted), (2, 2, 0));
    assert_eq!(source.deliveries(&garbage), 2);
    // A failed job is not released, however due.
    let sink = MemorySink::new();
    releaser(&h, &sink)
        .pass(at("2030-01-15T13:00:00Z"), None)
        .await
        .unwrap();
    assert!(sink.accepted().is_empty());
}

#[tokio::test]
async fn intake_jobs_are_listed_shown_and_cancelled_like_any_other() {
    let h = Harness::sqlite(at("2030-01-15T11:00:00Z")).await;
    let c = case("options_headers_attributes");
    let id = task_id(&c);
    let source = MemorySource::new();
    source.push(c.file("intake/sqs_body.raw"));
    turn(&consumer(&h, &source)).await.unwrap();
    let listed = jobs::list(
        &h.store,
        &Filter {
            task: Some("intake.add".into()),
            status: Some(JobStatus::Pending),
            limit: 10,
            ..Filter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(listed.len(), 1);
    let row = listed.into_iter().next().unwrap().unwrap();
    assert_eq!((row.id, row.priority), (id, 5));
    assert_eq!(row.queue, "q-options");
    assert_eq!(row.expires_at, Some(at("2030-01-15T15:00:00Z")));
    let shown = serde_json::to_value(&row).unwrap();
    assert_eq!(
        shown["intake"]["message_attributes"],
        json!({"tenant": {"DataType": "String", "StringValue": "t1"}})
    );
    assert_eq!(jobs::cancel(&h.store, id).await.unwrap(), Cancelled::Done);
    let sink = MemorySink::new();
    releaser(&h, &sink)
        .pass(at("2030-01-15T12:30:00Z"), None)
        .await
        .unwrap();
    assert!(
        sink.accepted().is_empty(),
        "a cancelled job is not released"
    );
}

/// A source whose receive is where shutdown arrives: the batch it returns
/// is the batch in hand.
#[derive(Clone)]
struct ShutdownOnReceive {
    inner: MemorySource,
    shutdown: CancellationToken,
}

impl Source for ShutdownOnReceive {
    async fn receive(&self, q: &QueueName, poll: &Poll) -> Result<Vec<Received>, SendError> {
        let got = self.inner.receive(q, poll).await;
        self.shutdown.cancel();
        got
    }

    async fn delete(&self, q: &QueueName, handles: Vec<String>) -> Vec<Result<(), SendError>> {
        self.inner.delete(q, handles).await
    }
}

#[tokio::test]
async fn a_batch_in_hand_at_shutdown_is_stored_and_deleted() {
    let h = Harness::sqlite(at("2030-01-15T11:00:00Z")).await;
    let c = case("chain_countdown");
    let inner = MemorySource::new();
    inner.push(c.file("intake/sqs_body.raw"));
    let shutdown = CancellationToken::new();
    let source = ShutdownOnReceive {
        inner: inner.clone(),
        shutdown: shutdown.clone(),
    };
    tokio::time::timeout(
        StdDuration::from_secs(30),
        consumer(&h, &source).run(shutdown),
    )
    .await
    .expect("the consumer stops after the batch in hand");
    assert!(inner.remaining().is_empty(), "deleted");
    assert_eq!(inner.receives(), 1, "no receive after shutdown");
    assert_eq!(job(&h.store, task_id(&c)).await.status, JobStatus::Pending);
}

/// Receives that fail (a missing queue) are retried with a backoff that
/// grows; the consumer never ends on its own, and stops on shutdown.
#[tokio::test]
async fn receive_errors_back_off_and_never_end_the_consumer() {
    let h = Harness::sqlite(at("2030-01-15T11:00:00Z")).await;
    tokio::time::pause();
    let source = MemorySource::new();
    for _ in 0..3 {
        source.fail_receive(SendError::QueueMissing {
            logical: "sqsbeat-intake".into(),
            sqs: "sqsbeat-intake".into(),
        });
    }
    let mut con = consumer(&h, &source);
    con.poll.wait = StdDuration::from_secs(20);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(con.run(shutdown.clone()));
    // Backoff after errors that need a fix: about 4 s, 8 s, 16 s (up to
    // half again), then long polls of 20 s.
    tokio::time::sleep(StdDuration::from_secs(20)).await;
    let early = source.receives();
    assert!(
        (2..=3).contains(&early),
        "backed off: {early} receives in 20 s"
    );
    tokio::time::sleep(StdDuration::from_secs(180)).await;
    let later = source.receives();
    assert!((10..=14).contains(&later), "{later} receives in 200 s");
    assert!(!task.is_finished(), "errors never end the consumer");
    shutdown.cancel();
    tokio::time::timeout(StdDuration::from_secs(1), task)
        .await
        .expect("stops on shutdown, mid long poll")
        .unwrap();
}

/// An endpoint that ignores WaitTimeSeconds answers an empty receive at
/// once: the consumer pauses rather than spinning on it.
#[tokio::test]
async fn an_endpoint_that_does_not_long_poll_is_polled_once_a_second() {
    let h = Harness::sqlite(at("2030-01-15T11:00:00Z")).await;
    tokio::time::pause();
    let source = MemorySource::new();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(consumer(&h, &source).run(shutdown.clone()));
    tokio::time::sleep(StdDuration::from_millis(10_500)).await;
    let n = source.receives();
    assert!((10..=12).contains(&n), "{n} receives in 10.5 s");
    shutdown.cancel();
    task.await.unwrap();
}

/// Regression: a diverted job rescheduled earlier kept Celery's original
/// `headers.eta` in its stored envelope; the worker then held the
/// message until that old ETA. The release carries the new instant, every
/// other byte as Celery wrote them.
async fn a_diverted_job_rescheduled_earlier_runs_at_the_new_instant(h: Harness) {
    let c = case("apply_async_countdown");
    let source = MemorySource::new();
    source.push(c.file("intake/sqs_body.raw"));
    let con = consumer(&h, &source);
    assert_eq!(turn(&con).await.unwrap().stored, 1);
    let id = task_id(&c);
    let stored = c.file("direct/envelope.raw.json");
    let old_eta = r#""eta": "2030-01-15T13:00:00+00:00""#;
    assert_eq!(stored.matches(old_eta).count(), 1, "{stored}");
    assert_eq!(
        jobs::reschedule(&h.store, id, at("2030-01-15T12:10:00Z"))
            .await
            .unwrap(),
        jobs::Rescheduled::Done
    );
    let sink = MemorySink::new();
    let now = h.at("2030-01-15T12:00:00Z");
    assert_eq!(
        releaser(&h, &sink).pass(now, None).await.unwrap().released,
        1
    );
    let sent = sink.accepted();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message.delay_seconds, 600);
    let body = String::from_utf8(B64.decode(&sent[0].message.body).unwrap()).unwrap();
    assert_eq!(
        body,
        stored.replace(old_eta, r#""eta": "2030-01-15T12:10:00+00:00""#),
        "the new eta, and nothing else changed"
    );
}

#[tokio::test]
async fn a_diverted_job_rescheduled_earlier_runs_at_the_new_instant_sqlite() {
    a_diverted_job_rescheduled_earlier_runs_at_the_new_instant(
        Harness::sqlite(at("2030-01-15T11:00:00Z")).await,
    )
    .await;
}

#[tokio::test]
async fn a_diverted_job_rescheduled_earlier_runs_at_the_new_instant_postgres() {
    a_diverted_job_rescheduled_earlier_runs_at_the_new_instant(
        Harness::postgres(at("2030-01-15T11:00:00Z")).await,
    )
    .await;
}

/// `apply_async_countdown` under another task id, its task body `body`.
fn with_body(id: Uuid, body: &Value) -> String {
    edited(&case("apply_async_countdown"), |e| {
        e["headers"]["id"] = json!(id);
        e["body"] = json!(B64.encode(python_json(body)));
    })
}

/// What Celery would have sent for an intake envelope, built here from
/// the contract (INTAKE.md, release step 1), not by the reader.
fn direct_body(intake_body: &str) -> String {
    let mut env: Value = serde_json::from_slice(&B64.decode(intake_body).unwrap()).unwrap();
    let target = env["headers"]
        .as_object_mut()
        .unwrap()
        .shift_remove("sqsbeat_intake")
        .unwrap();
    env["properties"]["delivery_info"] =
        json!({"exchange": target["exchange"], "routing_key": target["routing_key"]});
    B64.encode(python_json(&env))
}

/// kombu writes a NUL in args as `\u0000`, which PostgreSQL's jsonb
/// refuses (22P05); a NUL in the task name fails a text column. Either
/// once failed the whole batch's transaction: nothing was deleted, the
/// batch came back and failed again until the redrive policy moved every
/// message of it to the dead-letter queue.
async fn a_nul_in_one_message_never_sends_its_batch_round_again(h: Harness) {
    let source = MemorySource::new();
    let good = source.push(case("send_task_eta").file("intake/sqs_body.raw"));
    let in_args = Uuid::from_u128(0x1111_1111_1111_4111_8111_1111_1111_1111);
    let args_body = with_body(
        in_args,
        &json!([["a\u{0}b"], {"k": "v\u{0}"}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]),
    );
    let with_nul_args = source.push(args_body.clone());
    let in_task = Uuid::from_u128(0x2222_2222_2222_4222_8222_2222_2222_2222);
    let with_nul_task = source.push(edited(&case("apply_async_countdown"), |e| {
        e["headers"]["id"] = json!(in_task);
        e["headers"]["task"] = json!("intake.a\u{0}dd");
    }));
    let con = consumer(&h, &source);
    let b = turn(&con).await.expect("the batch is stored");
    assert_eq!(
        (b.received, b.stored, b.failed, b.left, b.deleted),
        (3, 2, 1, 0, 3),
        "{b:?}"
    );
    assert!(source.remaining().is_empty());
    // Nothing comes back: each message was received once.
    source.expire();
    assert_eq!(turn(&con).await.unwrap().received, 0);
    for m in [&good, &with_nul_args, &with_nul_task] {
        assert_eq!(source.deliveries(m), 1, "{m}");
    }
    assert_eq!(
        job(&h.store, task_id(&case("send_task_eta"))).await.status,
        JobStatus::Pending
    );
    let row = job(&h.store, in_args).await;
    assert_eq!(row.status, JobStatus::Pending);
    assert_eq!(row.args, json!(["a\u{FFFD}b"]), "shown with U+FFFD");
    assert_eq!(row.kwargs, json!({"k": "v\u{FFFD}"}));
    let row = job(&h.store, in_task).await;
    assert_eq!(row.status, JobStatus::Failed);
    assert_eq!(row.task, "intake.a\u{FFFD}dd");
    assert_eq!(
        row.last_error.as_deref(),
        Some(
            format!("intake message {with_nul_task} is malformed: headers.task contains a NUL character, which the jobs table cannot hold").as_str()
        )
    );
    // Released as Celery would have sent it: the NUL in its exact bytes.
    let sink = MemorySink::new();
    releaser(&h, &sink)
        .pass(at("2030-01-15T12:50:00Z"), None)
        .await
        .unwrap();
    let sent = sink.accepted();
    let sent: Vec<_> = sent
        .iter()
        .filter(|a| a.message.task_id == in_args)
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message.body, direct_body(&args_body));
    let env: Value = serde_json::from_slice(&B64.decode(&sent[0].message.body).unwrap()).unwrap();
    let task_body = B64.decode(env["body"].as_str().unwrap()).unwrap();
    assert!(
        String::from_utf8(task_body)
            .unwrap()
            .starts_with(r#"[["a\u0000b"], {"k": "v\u0000"}"#)
    );
}

#[tokio::test]
async fn a_nul_in_one_message_never_sends_its_batch_round_again_sqlite() {
    a_nul_in_one_message_never_sends_its_batch_round_again(
        Harness::sqlite(at("2030-01-15T12:00:00Z")).await,
    )
    .await;
}

#[tokio::test]
async fn a_nul_in_one_message_never_sends_its_batch_round_again_postgres() {
    a_nul_in_one_message_never_sends_its_batch_round_again(
        Harness::postgres(at("2030-01-15T12:00:00Z")).await,
    )
    .await;
}

/// A row the database refuses all the same (here a trigger that refuses
/// one task, as a check the reader does not know would) is set aside on
/// its own: the rest of the batch is stored and deleted, and the refused
/// message stays on the queue for its redrive policy.
async fn a_row_the_database_refuses_is_left_alone_on_the_queue(h: Harness) {
    let refuse = match &h.store {
        Store::Postgres(_) => {
            "CREATE FUNCTION refuse_one() RETURNS trigger AS $$
             BEGIN RAISE EXCEPTION 'refused by the test' USING ERRCODE = '22023'; END;
             $$ LANGUAGE plpgsql;
             CREATE TRIGGER refuse_one BEFORE INSERT ON jobs
                 FOR EACH ROW WHEN (NEW.task = 'intake.refused') EXECUTE FUNCTION refuse_one();"
        }
        Store::Sqlite(_) => {
            "CREATE TRIGGER refuse_one BEFORE INSERT ON jobs WHEN NEW.task = 'intake.refused'
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;"
        }
    };
    sql(&h.store, refuse).await;
    let source = MemorySource::new();
    let good = source.push(case("send_task_eta").file("intake/sqs_body.raw"));
    let refused = source.push(edited(&case("apply_async_countdown"), |e| {
        e["headers"]["task"] = json!("intake.refused");
    }));
    let also_good = source.push(case("options_headers_attributes").file("intake/sqs_body.raw"));
    let con = consumer(&h, &source);
    let b = turn(&con).await.expect("the rest of the batch is stored");
    assert_eq!(
        (b.received, b.stored, b.left, b.deleted),
        (3, 2, 1, 2),
        "{b:?}"
    );
    assert_eq!(source.remaining(), std::slice::from_ref(&refused));
    for c in ["send_task_eta", "options_headers_attributes"] {
        assert_eq!(
            job(&h.store, task_id(&case(c))).await.status,
            JobStatus::Pending
        );
    }
    assert!(
        jobs::get(&h.store, task_id(&case("apply_async_countdown")))
            .await
            .unwrap()
            .is_none()
    );
    source.expire();
    let b = turn(&con).await.unwrap();
    assert_eq!((b.received, b.left, b.deleted), (1, 1, 0));
    assert_eq!(
        (source.deliveries(&good), source.deliveries(&also_good)),
        (1, 1)
    );
}

#[tokio::test]
async fn a_row_the_database_refuses_is_left_alone_on_the_queue_sqlite() {
    a_row_the_database_refuses_is_left_alone_on_the_queue(
        Harness::sqlite(at("2030-01-15T12:00:00Z")).await,
    )
    .await;
}

#[tokio::test]
async fn a_row_the_database_refuses_is_left_alone_on_the_queue_postgres() {
    a_row_the_database_refuses_is_left_alone_on_the_queue(
        Harness::postgres(at("2030-01-15T12:00:00Z")).await,
    )
    .await;
}

/// Past the reader's checks (a job built by hand), PostgreSQL's own
/// refusal of a NUL in a text column is one message's outcome, not the
/// batch's.
#[tokio::test]
async fn postgresql_refusing_one_rows_nul_stores_the_rest_of_the_batch() {
    use sqsbeat::store::intake::{IntakeJob, Stored, store_batch};
    let h = Harness::postgres(at("2030-01-15T12:00:00Z")).await;
    let q = QueueName::new("", "sqsbeat-intake");
    let read = |c: &str| {
        sqsbeat::wire::intake::read(&case(c).file("intake/sqs_body.raw"), &q, 1_048_576).unwrap()
    };
    let good = IntakeJob::pending(&read("send_task_eta"));
    let mut bad = IntakeJob::pending(&read("apply_async_countdown"));
    bad.task = "intake.a\u{0}dd".into();
    let mut bad_json = IntakeJob::pending(&read("options_headers_attributes"));
    bad_json.kwargs = json!({"k": "v\u{0}"});
    let out = store_batch(&h.store, &[good.clone(), bad.clone(), bad_json.clone()])
        .await
        .unwrap();
    assert_eq!(out[0], Stored::Inserted);
    for (o, code) in out[1..].iter().zip(["22021", "22P05"]) {
        assert_eq!(
            o,
            &Stored::Refused {
                reason: format!(
                    "the database refused the row: a value the column cannot hold (SQLSTATE {code})"
                )
            }
        );
    }
    assert_eq!(job(&h.store, good.id).await.status, JobStatus::Pending);
    assert!(jobs::get(&h.store, bad.id).await.unwrap().is_none());
    assert!(jobs::get(&h.store, bad_json.id).await.unwrap().is_none());
}

/// Holds a task id cancelled before the intake read the task, as
/// `sqsbeat_celery.cancel()` does: on PostgreSQL by calling it (the
/// package in python/), on SQLite with the row it writes.
async fn cancel_before_intake(h: &Harness, url: Option<&str>, id: Uuid) {
    match url {
        Some(url) => {
            let out = std::process::Command::new(crate::stack::python())
                .env("PYTHONPATH", crate::stack::repo().join("python"))
                .args([
                    "-c",
                    "import sys, sqsbeat_celery; print(sqsbeat_celery.cancel(sys.argv[1], sys.argv[2]))",
                    // Without sqlx's own options, which libpq does not know.
                    url.split('?').next().unwrap(),
                    &id.to_string(),
                ])
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                "True",
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        None => {
            sql(
                &h.store,
                &format!(
                    "INSERT INTO jobs (id, task, due_at, status, last_error, created_at)
                     VALUES ('{id}', '(not read from the intake queue yet)', {NOW}, 'cancelled',
                             'cancelled by sqsbeat_celery.cancel() before sqsbeat read the task from the intake queue', {NOW})",
                    NOW = sqsbeat::store::sqlite::codec::NOW
                ),
            )
            .await
        }
    }
}

/// `sqsbeat_celery.cancel()` right after `apply_async`, before the intake
/// had stored the task, once matched no row and returned False; the task
/// was stored afterwards and ran. A cancelled job now stays cancelled
/// whatever message of its task id comes: the first, a redelivery, a
/// Celery retry.
async fn a_task_cancelled_before_the_intake_read_it_never_runs(h: Harness, url: Option<&str>) {
    let c = case("apply_async_countdown");
    let id = task_id(&c);
    cancel_before_intake(&h, url, id).await;
    let source = MemorySource::new();
    let con = consumer(&h, &source);
    source.push(c.file("intake/sqs_body.raw"));
    let b = turn(&con).await.unwrap();
    assert_eq!((b.stored, b.cancelled, b.deleted), (0, 1, 1), "{b:?}");
    let row = job(&h.store, id).await;
    assert_eq!(row.status, JobStatus::Cancelled);
    assert_eq!(
        (row.task.as_str(), row.due_at),
        ("intake.add", at("2030-01-15T13:00:00Z"))
    );
    assert!(
        row.last_error
            .unwrap()
            .contains("before sqsbeat read the task")
    );
    assert_eq!(
        row.intake.expect("the message is kept").envelope,
        c.file("direct/envelope.raw.json")
    );
    // A redelivery, then a Celery retry of the same task id.
    source.push(c.file("intake/sqs_body.raw"));
    assert_eq!(turn(&con).await.unwrap().duplicates, 1);
    source.push(edited(&c, |e| e["headers"]["retries"] = json!(1)));
    let b = turn(&con).await.unwrap();
    assert_eq!((b.stored, b.cancelled, b.deleted), (0, 1, 1), "{b:?}");
    let row = job(&h.store, id).await;
    assert_eq!((row.status, row.retries), (JobStatus::Cancelled, 1));
    assert!(source.remaining().is_empty());
    let sink = MemorySink::new();
    releaser(&h, &sink)
        .pass(at("2030-01-15T13:00:00Z"), None)
        .await
        .unwrap();
    assert!(
        sink.accepted().is_empty(),
        "a cancelled task is not released"
    );
}

#[tokio::test]
async fn a_task_cancelled_before_the_intake_read_it_never_runs_sqlite() {
    a_task_cancelled_before_the_intake_read_it_never_runs(
        Harness::sqlite(at("2030-01-15T12:00:00Z")).await,
        None,
    )
    .await;
}

#[tokio::test]
async fn a_task_cancelled_before_the_intake_read_it_never_runs_postgres() {
    let db = crate::pg::TestDb::new().await;
    let url = db.url.clone();
    let h = Harness::postgres_on(db, at("2030-01-15T12:00:00Z")).await;
    a_task_cancelled_before_the_intake_read_it_never_runs(h, Some(&url)).await;
}

/// The daemon's SQLite commits are not synced (`synchronous = NORMAL`):
/// a power cut can undo the last ones. The intake deletes its messages
/// from SQS once stored, so an undone intake commit lost those jobs; its
/// transaction is synced (FULL). A trigger records the level in effect
/// while the intake writes.
#[tokio::test]
async fn the_intake_commit_on_sqlite_is_synced_to_disk() {
    use sqsbeat::store::intake::{IntakeJob, store_batch};
    let dir = tempfile::tempdir().unwrap();
    let lite = sqsbeat::store::SqliteStore::open_for(
        &dir.path().join("t.db"),
        sqsbeat::store::Access::Daemon,
    )
    .await
    .unwrap();
    let level = || async {
        sqlx::query_scalar::<_, i64>("PRAGMA synchronous")
            .fetch_one(lite.pool())
            .await
            .unwrap()
    };
    assert_eq!(level().await, 1, "the daemon: NORMAL");
    sqlx::raw_sql(
        "CREATE TEMP TABLE seen (level INTEGER);
         CREATE TEMP TRIGGER seen AFTER INSERT ON main.jobs
         BEGIN INSERT INTO seen SELECT synchronous FROM pragma_synchronous; END;",
    )
    .execute(lite.pool())
    .await
    .unwrap();
    let q = QueueName::new("", "sqsbeat-intake");
    let d = sqsbeat::wire::intake::read(
        &case("apply_async_countdown").file("intake/sqs_body.raw"),
        &q,
        1_048_576,
    )
    .unwrap();
    let store = Store::Sqlite(lite.clone());
    store_batch(&store, &[IntakeJob::pending(&d)])
        .await
        .unwrap();
    let seen: Vec<i64> = sqlx::query_scalar("SELECT level FROM seen")
        .fetch_all(lite.pool())
        .await
        .unwrap();
    assert_eq!(seen, [2], "FULL while the intake writes");
    assert_eq!(level().await, 1, "NORMAL again for the rest");
}
