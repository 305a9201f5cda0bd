//! The releaser in-process: a real store, a `MemorySink`, a manual clock.
//! Judged by the jobs table and the sink's record.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};
use sqsbeat::jobs::JobSpec;
use sqsbeat::jobs::releaser::Releaser;
use sqsbeat::store::jobs;
use sqsbeat::wire::sink::{MemorySink, Plan, SendError};
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
