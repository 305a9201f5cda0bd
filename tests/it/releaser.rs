//! The releaser in-process: a real store, a `MemorySink`, a manual clock.
//! Judged by the jobs table and the sink's record.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};
use sqsbeat::jobs::JobSpec;
use sqsbeat::jobs::releaser::Releaser;
use sqsbeat::store::{Store, jobs};
use sqsbeat::wire::sink::{Gate, MemorySink, Plan, SendError};
use uuid::Uuid;

use crate::harness::{Harness, at};

fn job(n: u8, due_at: DateTime<Utc>) -> JobSpec {
    JobSpec {
        id: Uuid::from_bytes([n; 16]),
        task: "app.tasks.report".into(),
        args: vec![Value::from(n)],
        kwargs: Map::new(),
        queue: "celery".into(),
        due_at,
        expires_at: None,
        priority: 0,
        headers: Map::new(),
    }
}

fn releaser(h: &Harness) -> Releaser<MemorySink> {
    Releaser {
        store: h.store.clone(),
        sink: h.sink.clone(),
        opts: h.opts.clone(),
        window: Duration::minutes(15),
        max_message_bytes: 1_048_576,
        clock: h.clock.clone(),
        renew_every: sqsbeat::jobs::releaser::RENEW_EVERY,
        trust: h.trust.subscribe(),
    }
}

/// Runs SQL written for each backend (a row written by hand).
async fn raw(h: &Harness, pg: &str, lite: &str) {
    match &h.store {
        Store::Postgres(s) => sqlx::raw_sql(sqlx::AssertSqlSafe(pg.to_string()))
            .execute(s.pool())
            .await
            .map(|_| ()),
        Store::Sqlite(s) => sqlx::raw_sql(sqlx::AssertSqlSafe(lite.to_string()))
            .execute(s.pool())
            .await
            .map(|_| ()),
    }
    .unwrap_or_else(|e| panic!("{pg} / {lite}: {e}"));
}

/// The end of a job's lease, as stored.
async fn lease_until(h: &Harness, id: Uuid) -> DateTime<Utc> {
    match &h.store {
        Store::Postgres(s) => sqlx::query_scalar("SELECT lease_until FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_one(s.pool())
            .await
            .unwrap(),
        Store::Sqlite(s) => {
            let t: String = sqlx::query_scalar("SELECT lease_until FROM jobs WHERE id = ?1")
                .bind(id.to_string())
                .fetch_one(s.pool())
                .await
                .unwrap();
            at(&t)
        }
    }
}

async fn a_failing_sink_leaves_jobs_pending_with_a_retry(h: Harness) {
    let now = h.at("2026-12-05T08:50:00Z");
    for n in 1..=3 {
        jobs::insert(&h.store, &job(n, now + Duration::minutes(5)), "t")
            .await
            .unwrap();
    }
    h.sink.then(Plan::fail_all(SendError::Request(
        "connection reset".into(),
    )));
    let r = releaser(&h);
    let pass = r.pass(now, None).await.unwrap();
    assert_eq!((pass.claimed, pass.released, pass.retrying), (3, 0, 3));
    for n in 1..=3 {
        let row = jobs::get(&h.store, Uuid::from_bytes([n; 16]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.status.to_string(), "pending");
        assert_eq!(row.attempts, 1);
        assert!(
            row.last_error
                .as_deref()
                .unwrap_or("")
                .contains("connection reset")
        );
    }
    // Before the backoff ends nothing is claimed; after it, all go.
    assert_eq!(
        r.pass(now + Duration::milliseconds(500), None)
            .await
            .unwrap()
            .claimed,
        0
    );
    let later = h.at("2026-12-05T08:50:05Z");
    let pass = r.pass(later, None).await.unwrap();
    assert_eq!(pass.released, 3);
    let sent: Vec<Uuid> = h.accepted_ids();
    assert_eq!(sent.len(), 3, "each job once, under its own id");
    for n in 1..=3 {
        assert!(sent.contains(&Uuid::from_bytes([n; 16])));
    }
    let delays: Vec<i32> = h
        .sink
        .accepted()
        .iter()
        .map(|a| a.message.delay_seconds)
        .collect();
    assert_eq!(
        delays,
        [295, 295, 295],
        "DelaySeconds for the rest of the wait"
    );
}

#[tokio::test]
async fn a_failing_sink_leaves_jobs_pending_with_a_retry_sqlite() {
    a_failing_sink_leaves_jobs_pending_with_a_retry(
        Harness::sqlite(at("2026-12-05T08:50:00Z")).await,
    )
    .await;
}

#[tokio::test]
async fn a_failing_sink_leaves_jobs_pending_with_a_retry_postgres() {
    a_failing_sink_leaves_jobs_pending_with_a_retry(
        Harness::postgres(at("2026-12-05T08:50:00Z")).await,
    )
    .await;
}

#[tokio::test]
async fn a_failed_part_of_a_batch_is_retried_alone() {
    let h = Harness::sqlite(at("2026-12-05T09:00:00Z")).await;
    let now = h.at("2026-12-05T09:00:00Z");
    for n in 1..=3 {
        jobs::insert(&h.store, &job(n, now), "t").await.unwrap();
    }
    h.sink.then(Plan::fail(&[1]));
    let r = releaser(&h);
    let pass = r.pass(now, None).await.unwrap();
    assert_eq!((pass.released, pass.retrying), (2, 1));
    let pass = r.pass(h.at("2026-12-05T09:00:05Z"), None).await.unwrap();
    assert_eq!((pass.claimed, pass.released), (1, 1));
    let mut ids = h.accepted_ids();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "every job sent, none twice");
}

async fn a_cancel_racing_a_pass_never_says_cancelled_for_a_job_that_is_sent(h: Harness) {
    let now = h.at("2026-12-05T09:00:00Z");
    let sent_job = job(1, now);
    let waiting_job = job(2, now + Duration::hours(2));
    jobs::insert(&h.store, &sent_job, "t").await.unwrap();
    jobs::insert(&h.store, &waiting_job, "t").await.unwrap();
    let gate = Gate::new();
    h.sink.then(Plan::gated(&gate));
    let r = releaser(&h);
    let pass = r.pass(now, None);
    let racer = async {
        // Wait until the pass holds job 1 (claimed, its send held at the gate).
        loop {
            let row = jobs::get(&h.store, sent_job.id).await.unwrap().unwrap();
            if row.status.to_string() == "releasing" {
                break;
            }
            tokio::task::yield_now().await;
        }
        let answer = jobs::cancel(&h.store, sent_job.id).await.unwrap();
        let other = jobs::cancel(&h.store, waiting_job.id).await.unwrap();
        gate.open();
        (answer, other)
    };
    let (pass, (answer, other)) = tokio::join!(pass, racer);
    assert_eq!(pass.unwrap().released, 1);
    assert!(
        matches!(answer, jobs::Cancelled::BeingReleased),
        "a job being sent is not reported cancelled"
    );
    assert!(matches!(other, jobs::Cancelled::Done));
    let status = |row: Option<sqsbeat::store::jobs::JobRow>| row.unwrap().status.to_string();
    assert_eq!(
        status(jobs::get(&h.store, sent_job.id).await.unwrap()),
        "released"
    );
    assert_eq!(
        status(jobs::get(&h.store, waiting_job.id).await.unwrap()),
        "cancelled"
    );
    assert_eq!(h.accepted_ids(), [sent_job.id]);
    // The cancelled job never goes out, not even when it falls due.
    let later = h.at("2026-12-05T11:00:00Z");
    assert_eq!(r.pass(later, None).await.unwrap().claimed, 0);
}

#[tokio::test]
async fn a_cancel_racing_a_pass_never_says_cancelled_for_a_job_that_is_sent_sqlite() {
    a_cancel_racing_a_pass_never_says_cancelled_for_a_job_that_is_sent(
        Harness::sqlite(at("2026-12-05T09:00:00Z")).await,
    )
    .await;
}

#[tokio::test]
async fn a_cancel_racing_a_pass_never_says_cancelled_for_a_job_that_is_sent_postgres() {
    a_cancel_racing_a_pass_never_says_cancelled_for_a_job_that_is_sent(
        Harness::postgres(at("2026-12-05T09:00:00Z")).await,
    )
    .await;
}

#[tokio::test]
async fn a_slow_send_renews_its_lease_so_no_other_replica_sends_it_again() {
    let h = Harness::postgres(at("2026-12-05T09:00:00Z")).await;
    let now = h.at("2026-12-05T09:00:00Z");
    jobs::insert(&h.store, &job(1, now), "t").await.unwrap();
    let gate = Gate::new();
    h.sink.then(Plan::gated(&gate));
    let slow = Releaser {
        renew_every: std::time::Duration::from_millis(20),
        ..releaser(&h)
    };
    let other = releaser(&h);
    let first = slow.pass(now, None);
    let second = async {
        // The send outlives the lease it started with.
        loop {
            let row = jobs::get(&h.store, job(1, now).id).await.unwrap().unwrap();
            if row.status.to_string() == "releasing" {
                break;
            }
            tokio::task::yield_now().await;
        }
        let later = h.at("2026-12-05T09:01:00Z");
        // Until a renewal has happened at the new time (the renewal reads
        // the clock): the lease then ends a lease after it.
        let renewed = later + sqsbeat::jobs::releaser::LEASE;
        while lease_until(&h, job(1, now).id).await < renewed {
            tokio::task::yield_now().await;
        }
        let p = other.pass(later, None).await.unwrap();
        gate.open();
        p
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(second.claimed, 0, "the renewed lease kept the job its own");
    assert_eq!(first.unwrap().released, 1);
    assert_eq!(h.accepted_ids().len(), 1, "sent once");
}

#[tokio::test]
async fn no_job_is_released_while_the_host_clock_disagrees_with_the_database() {
    let h = Harness::sqlite(at("2026-12-05T09:00:00Z")).await;
    let now = h.at("2026-12-05T09:00:00Z");
    jobs::insert(&h.store, &job(1, now), "t").await.unwrap();
    h.trust.send_replace(sqsbeat::clock::Trust::Checked {
        skew: Duration::days(365),
        at: tokio::time::Instant::now(),
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(releaser(&h).run(
        std::sync::Arc::new(tokio::sync::Notify::new()),
        stop.clone(),
    ));
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
    let row = jobs::get(&h.store, job(1, now).id).await.unwrap().unwrap();
    assert_eq!(
        row.status.to_string(),
        "pending",
        "held while the clock is off"
    );
    assert!(h.sink.accepted().is_empty());
    h.trust.send_replace(sqsbeat::clock::Trust::Checked {
        skew: Duration::milliseconds(-4),
        at: tokio::time::Instant::now(),
    });
    loop {
        let row = jobs::get(&h.store, job(1, now).id).await.unwrap().unwrap();
        if row.status.to_string() == "released" {
            break;
        }
        tokio::task::yield_now().await;
    }
    stop.cancel();
    run.await.unwrap();
    assert_eq!(h.accepted_ids(), [job(1, now).id]);
}

/// Regression: on PostgreSQL `attempts = attempts + 1` on a row at
/// integer's maximum failed the settle transaction ("integer out of
/// range"): every job of the pass stayed `releasing` and was sent again
/// each time the lease ended, forever. On SQLite the count went past what
/// the row can be read back as. The count now stops at its maximum.
async fn a_job_at_the_attempts_limit_does_not_make_its_pass_send_the_batch_again(h: Harness) {
    let now = h.at("2026-12-05T09:00:00Z");
    for n in 1..=3 {
        jobs::insert(&h.store, &job(n, now), "t").await.unwrap();
    }
    let worn = job(2, now).id;
    raw(
        &h,
        &format!("UPDATE jobs SET attempts = 2147483647 WHERE id = '{worn}'"),
        &format!("UPDATE jobs SET attempts = 2147483647 WHERE id = '{worn}'"),
    )
    .await;
    let r = releaser(&h);
    // A failed send first (the retry's count), then sends that succeed.
    h.sink.then(Plan::fail_all(SendError::Request(
        "connection reset".into(),
    )));
    let first = r.pass(now, None).await.unwrap();
    assert_eq!(first.retrying, 3);
    for i in 1..=4 {
        let t = now + Duration::seconds(91 * i);
        h.clock.set(t);
        r.pass(t, None).await.unwrap();
    }
    let mut sent = h.accepted_ids();
    sent.sort();
    let each: Vec<Uuid> = (1..=3).map(|n| job(n, now).id).collect();
    assert_eq!(sent, each, "each job sent once");
    for n in 1..=3 {
        let row = jobs::get(&h.store, job(n, now).id).await.unwrap().unwrap();
        assert_eq!(row.status.to_string(), "released");
        let want = if n == 2 { i64::from(i32::MAX) } else { 2 };
        assert_eq!(row.attempts, want, "job {n}");
    }
}

#[tokio::test]
async fn a_job_at_the_attempts_limit_does_not_make_its_pass_send_the_batch_again_sqlite() {
    a_job_at_the_attempts_limit_does_not_make_its_pass_send_the_batch_again(
        Harness::sqlite(at("2026-12-05T09:00:00Z")).await,
    )
    .await;
}

#[tokio::test]
async fn a_job_at_the_attempts_limit_does_not_make_its_pass_send_the_batch_again_postgres() {
    a_job_at_the_attempts_limit_does_not_make_its_pass_send_the_batch_again(
        Harness::postgres(at("2026-12-05T09:00:00Z")).await,
    )
    .await;
}

/// A settle the database refuses for one row (here a trigger an operator
/// added) settles the pass's other rows: only that row is left out of
/// the transaction, and it is marked failed where the database takes
/// that, so nothing is sent again when the lease ends.
async fn a_row_the_database_will_not_settle_leaves_the_rest_of_the_pass_settled(h: Harness) {
    let now = h.at("2026-12-05T09:00:00Z");
    for n in 1..=3 {
        jobs::insert(&h.store, &job(n, now), "t").await.unwrap();
    }
    let odd = job(2, now).id;
    raw(
        &h,
        &format!(
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused by policy'; END; $$ LANGUAGE plpgsql;
             CREATE TRIGGER refuse BEFORE UPDATE ON jobs FOR EACH ROW
                 WHEN (NEW.status = 'released' AND NEW.id = '{odd}') EXECUTE FUNCTION refuse();"
        ),
        &format!(
            "CREATE TRIGGER refuse BEFORE UPDATE ON jobs
                 WHEN NEW.status = 'released' AND NEW.id = '{odd}'
             BEGIN SELECT RAISE(ABORT, 'refused by policy'); END;"
        ),
    )
    .await;
    let r = releaser(&h);
    assert_eq!(r.pass(now, None).await.unwrap().claimed, 3);
    for i in 1..=3 {
        let t = now + Duration::seconds(31 * i);
        h.clock.set(t);
        assert_eq!(
            r.pass(t, None).await.unwrap().claimed,
            0,
            "nothing left to claim"
        );
    }
    assert_eq!(h.accepted_ids().len(), 3, "each job sent once");
    for n in [1, 3] {
        let row = jobs::get(&h.store, job(n, now).id).await.unwrap().unwrap();
        assert_eq!(row.status.to_string(), "released", "job {n}");
    }
    let row = jobs::get(&h.store, odd).await.unwrap().unwrap();
    assert_eq!(row.status.to_string(), "failed");
    let why = row.last_error.unwrap_or_default();
    assert!(why.contains("refused by policy"), "{why}");
}

#[tokio::test]
async fn a_row_the_database_will_not_settle_leaves_the_rest_of_the_pass_settled_sqlite() {
    a_row_the_database_will_not_settle_leaves_the_rest_of_the_pass_settled(
        Harness::sqlite(at("2026-12-05T09:00:00Z")).await,
    )
    .await;
}

#[tokio::test]
async fn a_row_the_database_will_not_settle_leaves_the_rest_of_the_pass_settled_postgres() {
    a_row_the_database_will_not_settle_leaves_the_rest_of_the_pass_settled(
        Harness::postgres(at("2026-12-05T09:00:00Z")).await,
    )
    .await;
}

/// Regression (SQLite): a `due_at` written by hand with a UTC offset was
/// compared as text by the claim, so a job due at 10:00Z written as
/// 12:00+02:00 went out two hours late, while the next wake-up, which
/// reads the instant properly, had the releaser run a pass every 100 ms
/// meanwhile. Such a row is now put in sqsbeat's own form by the claim
/// and released on time; one that holds no instant is marked failed.
#[tokio::test]
async fn a_due_at_written_with_an_offset_is_released_on_time_sqlite() {
    let h = Harness::sqlite(at("2026-11-28T09:50:00Z")).await;
    let (on_time, garbled) = (Uuid::from_bytes([1; 16]), Uuid::from_bytes([2; 16]));
    raw(
        &h,
        "",
        &format!(
            "INSERT INTO jobs (id, task, due_at, created_at) VALUES
                 ('{on_time}', 'a.b', '2026-11-28T12:00:00+02:00', '2026-11-28T09:00:00.000000Z'),
                 ('{garbled}', 'a.b', 'tomorrow', '2026-11-28T09:00:00.000000Z')"
        ),
    )
    .await;
    let now = h.at("2026-11-28T09:50:00Z");
    let pass = releaser(&h).pass(now, None).await.unwrap();
    assert_eq!((pass.released, pass.failed), (1, 1), "{pass:?}");
    let sent = h.sink.accepted();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message.task_id, on_time);
    assert_eq!(sent[0].message.delay_seconds, 600, "visible at 10:00Z");
    let row = jobs::get(&h.store, on_time).await.unwrap().unwrap();
    assert_eq!(row.due_at, at("2026-11-28T10:00:00Z"));
    assert_eq!(row.status.to_string(), "released");
    let bad = jobs::list(
        &h.store,
        &jobs::Filter {
            status: Some(jobs::JobStatus::Failed),
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(bad.len(), 1, "{bad:?}");
    match &bad[0] {
        Err(sqsbeat::store::StoreError::Decode { column, row, .. }) => {
            assert_eq!(
                (column.as_str(), row.as_str()),
                ("due_at", garbled.to_string().as_str())
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        jobs::next_wake(&h.store, Duration::minutes(15))
            .await
            .unwrap(),
        None,
        "nothing left to wake for"
    );
}

/// Regression: a release error quoted the row's message attributes
/// (`message_attributes ["hunter2"] is not an object`) into last_error,
/// which the status page serves. It names the field and the kind of
/// value, never the value.
async fn a_release_error_names_the_message_attribute_not_its_value(h: Harness) {
    let now = h.at("2030-01-15T12:00:00Z");
    let (attr, column) = (Uuid::from_bytes([1; 16]), Uuid::from_bytes([2; 16]));
    let row = |id: Uuid, attributes: &str| {
        let envelope = format!(
            r#"{{"body": "", "headers": {{"id": "{id}", "task": "a.b", "eta": "2030-01-15T12:00:00+00:00"}}, "properties": {{}}}}"#
        );
        format!(
            "INSERT INTO jobs (id, task, due_at, created_at, envelope, sqs_queue, message_attributes)
             VALUES ('{id}', 'a.b', '2030-01-15T12:00:00.000000Z', '2030-01-15T12:00:00.000000Z',
                     '{envelope}', 'celery', '{attributes}');"
        )
    };
    let bad_attr = row(
        attr,
        r#"{"token": {"DataType": "String", "Value": "hunter2"}}"#,
    );
    // PostgreSQL's CHECK keeps the column an object; SQLite has none.
    let not_object = row(column, r#"["hunter2"]"#);
    raw(&h, &bad_attr, &(bad_attr.clone() + &not_object)).await;
    releaser(&h).pass(now, None).await.unwrap();
    let ids: &[(Uuid, &str)] = match h.store {
        Store::Postgres(_) => &[(attr, "\"token\"")],
        Store::Sqlite(_) => &[(attr, "\"token\""), (column, "message_attributes")],
    };
    for (id, field) in ids {
        let row = jobs::get(&h.store, *id).await.unwrap().unwrap();
        assert_eq!(row.status.to_string(), "failed");
        let why = row.last_error.unwrap_or_default();
        assert!(!why.contains("hunter2"), "{why}");
        assert!(why.contains(field), "{why}");
    }
    assert!(h.sink.accepted().is_empty());
}

#[tokio::test]
async fn a_release_error_names_the_message_attribute_not_its_value_sqlite() {
    a_release_error_names_the_message_attribute_not_its_value(
        Harness::sqlite(at("2030-01-15T12:00:00Z")).await,
    )
    .await;
}

#[tokio::test]
async fn a_release_error_names_the_message_attribute_not_its_value_postgres() {
    a_release_error_names_the_message_attribute_not_its_value(
        Harness::postgres(at("2030-01-15T12:00:00Z")).await,
    )
    .await;
}

/// Each pass used to claim, send and settle before the next claim began,
/// so the database and SQS took turns. Now a full claim is followed at
/// once by the next while its own sends are under way: a send held at the
/// sink does not hold back jobs the next claim takes.
#[tokio::test]
async fn a_held_send_does_not_hold_back_the_next_claim() {
    let h = Harness::postgres(at("2026-12-05T09:00:00Z")).await;
    let now = h.at("2026-12-05T09:00:00Z");
    let batch = sqsbeat::jobs::releaser::BATCH as u128;
    for n in 0..=batch {
        let spec = JobSpec {
            id: Uuid::from_u128(n + 1),
            ..job(0, now + Duration::milliseconds(n as i64))
        };
        jobs::insert(&h.store, &spec, "t").await.unwrap();
    }
    let last = Uuid::from_u128(batch + 1);
    let gate = Gate::new();
    h.sink.then(Plan::gated(&gate));
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(releaser(&h).run(
        std::sync::Arc::new(tokio::sync::Notify::new()),
        stop.clone(),
    ));
    // The first full batch is held at the gate; the job after it goes out.
    loop {
        let row = jobs::get(&h.store, last).await.unwrap().unwrap();
        if row.status.to_string() == "released" {
            break;
        }
        tokio::task::yield_now().await;
    }
    let first = jobs::get(&h.store, Uuid::from_u128(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.status.to_string(), "releasing", "still held");
    assert_eq!(h.accepted_ids(), [last]);
    gate.open();
    loop {
        let row = jobs::get(&h.store, Uuid::from_u128(1))
            .await
            .unwrap()
            .unwrap();
        if row.status.to_string() == "released" {
            break;
        }
        tokio::task::yield_now().await;
    }
    stop.cancel();
    run.await.unwrap();
    let mut sent = h.accepted_ids();
    sent.sort();
    sent.dedup();
    assert_eq!(sent.len(), batch as usize + 1, "every job once");
}

/// A releaser with nothing to do, its jobs listener and the file watcher
/// (which, on SQLite, looks for other processes' commits), as `run`
/// spawns them.
fn idle_releaser(
    h: &Harness,
) -> (
    tokio_util::sync::CancellationToken,
    Vec<tokio::task::JoinHandle<()>>,
) {
    use sqsbeat::store::listen::{Channel, Listener};
    let stop = tokio_util::sync::CancellationToken::new();
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let listener = Listener::new(&h.store, Channel::Jobs);
    let tasks = vec![
        tokio::spawn(sqsbeat::runtime::reload::watch_files(
            sqsbeat::entry::file::SchedulePaths {
                paths: Vec::new(),
                named: false,
            },
            h.store.clone(),
            std::sync::Arc::new(tokio::sync::Notify::new()),
            stop.clone(),
        )),
        tokio::spawn(sqsbeat::jobs::releaser::watch_jobs(
            listener,
            wake.clone(),
            stop.clone(),
        )),
        tokio::spawn(releaser(h).run(wake, stop.clone())),
    ];
    (stop, tasks)
}

/// Waits until the job is released: within 10 s, where a releaser that
/// nothing wakes sleeps 30 s.
async fn released_soon(h: &Harness, id: Uuid) {
    let released = async {
        loop {
            let row = jobs::get(&h.store, id).await.unwrap().unwrap();
            if row.status.to_string() == "released" {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), released)
        .await
        .expect("released well before the releaser's 30 s sleep ends");
}

/// SQLite has no NOTIFY: the releaser used to look at the jobs table every
/// second. It now sleeps up to 30 s, and a job another process schedules
/// on the same file (`sqsbeat schedule`) wakes it through the file
/// watcher's look at the database file.
#[tokio::test]
async fn a_job_another_process_schedules_wakes_an_idle_releaser_sqlite() {
    let h = Harness::sqlite(at("2026-12-05T09:00:00Z")).await;
    let now = h.at("2026-12-05T09:00:00Z");
    let (stop, tasks) = idle_releaser(&h);
    let Store::Sqlite(lite) = &h.store else {
        unreachable!()
    };
    let other = Store::Sqlite(
        sqsbeat::store::SqliteStore::open(lite.path())
            .await
            .unwrap(),
    );
    jobs::insert(&other, &job(1, now + Duration::minutes(5)), "t")
        .await
        .unwrap();
    released_soon(&h, job(1, now).id).await;
    // And again once it has gone back to sleep.
    jobs::insert(&other, &job(2, now + Duration::minutes(6)), "t")
        .await
        .unwrap();
    released_soon(&h, job(2, now).id).await;
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(h.accepted_ids(), [job(1, now).id, job(2, now).id]);
}

/// The same for a job written on the releaser's own connection (the intake
/// consumer's): no other connection committed anything.
#[tokio::test]
async fn a_job_this_process_schedules_wakes_an_idle_releaser_sqlite() {
    let h = Harness::sqlite(at("2026-12-05T09:00:00Z")).await;
    let now = h.at("2026-12-05T09:00:00Z");
    let (stop, tasks) = idle_releaser(&h);
    for n in 1..=2 {
        jobs::insert(&h.store, &job(n, now + Duration::minutes(5)), "t")
            .await
            .unwrap();
        released_soon(&h, job(n, now).id).await;
    }
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(h.accepted_ids().len(), 2);
}
