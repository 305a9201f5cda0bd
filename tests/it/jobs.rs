//! One-off jobs: the CLI, the SQL function, and the releaser with real
//! PostgreSQL, moto and a real Celery worker. Time is advanced by moving
//! due instants in the database, never by sleeping for minutes.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::pg::TestDb;
use crate::stack::{self, cli};

fn json(s: &str) -> Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("{e}: {s}"))
}

#[test]
fn schedule_pending_show_cancel_and_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, out, err) = cli(
        d,
        None,
        None,
        &[
            "schedule",
            "app.tasks.send_report",
            "--in",
            "14d",
            "--kwargs",
            r#"{"account": 42}"#,
            "--output",
            "json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let job = json(&out);
    assert_eq!(
        (job["status"].as_str(), job["task"].as_str()),
        (Some("pending"), Some("app.tasks.send_report"))
    );
    let id = job["id"].as_str().unwrap().to_string();

    // Idempotent by --id: the same payload is one job; another payload is an error.
    let fixed = "7d9f2c1e-1111-4b2b-9c3d-000000000042";
    for _ in 0..2 {
        let (code, _, err) = cli(
            d,
            None,
            None,
            &[
                "schedule",
                "app.tasks.a",
                "--at",
                "2027-01-01T09:00:00Z",
                "--id",
                fixed,
            ],
        );
        assert_eq!(code, 0, "{err}");
    }
    let (code, _, err) = cli(
        d,
        None,
        None,
        &[
            "schedule",
            "app.tasks.b",
            "--at",
            "2027-01-01T09:00:00Z",
            "--id",
            fixed,
        ],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("already exists with a different payload"),
        "{err}"
    );

    for (args, want) in [
        (
            vec!["schedule", "app.tasks.a", "--at", "2020-01-01T00:00:00Z"],
            "is in the past; pass --allow-past",
        ),
        (vec!["schedule", "bad name", "--in", "1d"], "contains ' '"),
        (
            vec!["schedule", "a.b", "--in", "1d", "--args", "{}"],
            "--args must be a JSON array",
        ),
        (
            vec!["schedule", "a.b", "--in", "1d", "--kwargs", "[1"],
            "--kwargs is not valid JSON",
        ),
        (
            vec![
                "schedule",
                "a.b",
                "--in",
                "1d",
                "--expires",
                "2020-01-01T00:00:00Z",
            ],
            "must be after the due instant",
        ),
        (
            vec!["schedule", "a.b", "--in", "soon"],
            "--in: invalid duration",
        ),
        (
            vec!["schedule", "a.b", "--in", "1d", "--header", "id=3"],
            "headers may not set",
        ),
    ] {
        let (code, _, err) = cli(d, None, None, &args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let (code, _, err) = cli(d, None, None, &["schedule", "a.b"]);
    assert_eq!(code, 2, "--at or --in is required: {err}");

    let (_, out, _) = cli(d, None, None, &["pending", "--output", "json"]);
    let rows: Vec<Value> = out.lines().map(json).collect();
    assert_eq!(rows.len(), 2);
    assert!(
        rows[0]["due_at"].as_str() < rows[1]["due_at"].as_str(),
        "by due instant"
    );
    let (_, out, _) = cli(
        d,
        None,
        None,
        &[
            "pending",
            "--task",
            "app.tasks.send_report",
            "--output",
            "json",
        ],
    );
    assert_eq!(out.lines().count(), 1);
    let (_, out, _) = cli(
        d,
        None,
        None,
        &["pending", "--due-before", "2026-12-31T00:00:00Z"],
    );
    assert!(out.starts_with("ID ") && out.lines().count() == 2, "{out}");
    let (_, out, _) = cli(
        d,
        None,
        None,
        &[
            "pending",
            "--due-after",
            "2027-01-01T00:00:00Z",
            "--limit",
            "1",
            "--output",
            "json",
        ],
    );
    assert_eq!(json(&out)["id"], fixed);

    let (code, out, _) = cli(d, None, None, &["show", &id, "--output", "json"]);
    assert_eq!(code, 0);
    assert_eq!(json(&out)["kwargs"]["account"], 42);
    let (code, out, _) = cli(d, None, None, &["cancel", &id]);
    assert_eq!(
        (code, out.trim().to_string()),
        (0, format!("cancelled {id}"))
    );
    let (code, _, err) = cli(
        d,
        None,
        None,
        &["cancel", &id, "7d9f2c1e-0000-4b2b-9c3d-000000000000"],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("is cancelled, not pending") && err.contains("no job with id"),
        "{err}"
    );
    let (_, out, _) = cli(
        d,
        None,
        None,
        &["pending", "--status", "cancelled", "--output", "json"],
    );
    assert_eq!(json(&out)["id"], id);
    let (code, _, err) = cli(
        d,
        None,
        None,
        &["show", "7d9f2c1e-0000-4b2b-9c3d-000000000000"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("no job with id"), "{err}");
}

async fn sql(url: &str, q: &str) {
    let s = sqsbeat::store::PgStore::connect(url, "sqsbeat")
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(q.to_string()))
        .execute(s.pool())
        .await
        .unwrap();
}

async fn jobs(url: &str) -> Vec<(String, String, DateTime<Utc>, Option<DateTime<Utc>>)> {
    let s = sqsbeat::store::PgStore::connect(url, "sqsbeat")
        .await
        .unwrap();
    sqlx::query_as("SELECT id::text, status, due_at, released_at FROM jobs ORDER BY due_at")
        .fetch_all(s.pool())
        .await
        .unwrap()
}

fn queue_depth(endpoint: &str, queue: &str) -> i64 {
    let code = format!(
        "import boto3; q = boto3.client('sqs', endpoint_url='{endpoint}', region_name='us-east-1', aws_access_key_id='x', aws_secret_access_key='y')\n\
         try:\n  u = q.get_queue_url(QueueName='{queue}')['QueueUrl']\nexcept Exception:\n  print(0); raise SystemExit\n\
         a = q.get_queue_attributes(QueueUrl=u, AttributeNames=['All'])['Attributes']\n\
         print(sum(int(a[k]) for k in ('ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible', 'ApproximateNumberOfMessagesDelayed')))"
    );
    let out = Command::new(stack::python())
        .args(["-c", &code])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn far_future_jobs_wait_in_the_database_and_run_once_on_time() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_moto, endpoint) = stack::moto(d);
    stack::config_creating_queues(d);
    let schedule = d.join("s.toml");
    std::fs::write(
        &schedule,
        "[entries.idle]\ntask = \"a.idle\"\nevery = \"1d\"\nenabled = false\n",
    )
    .unwrap();
    // Two replicas: both release, each job must go out once.
    let mut a = stack::sqsbeat_replica(d, &endpoint, &schedule, "a.log", Some(&db.url));
    let mut b = stack::sqsbeat_replica(d, &endpoint, &schedule, "b.log", Some(&db.url));

    let mut ids: BTreeMap<String, &str> = BTreeMap::new();
    for (label, when) in [("20m", "20m"), ("14d", "14d"), ("30d", "30d")] {
        let (code, out, err) = cli(
            d,
            Some(&db.url),
            Some(&endpoint),
            &[
                "schedule",
                "e2e.job",
                "--in",
                when,
                "--queue",
                "jobs",
                "--kwargs",
                &format!(r#"{{"label": "{label}"}}"#),
                "--output",
                "json",
            ],
        );
        assert_eq!(code, 0, "{err}");
        ids.insert(json(&out)["id"].as_str().unwrap().to_string(), label);
    }
    let (_, out, _) = cli(
        d,
        Some(&db.url),
        Some(&endpoint),
        &[
            "schedule", "e2e.job", "--in", "20m", "--queue", "jobs", "--output", "json",
        ],
    );
    let cancelled = json(&out)["id"].as_str().unwrap().to_string();
    // From application code: the job exists if and only if the transaction commits.
    rt.block_on(sql(&db.url, "BEGIN; SELECT sqsbeat.schedule_job('e2e.job', now() + interval '21 minutes', queue => 'jobs'); ROLLBACK;"));
    rt.block_on(async {
        let s = sqsbeat::store::PgStore::connect(&db.url, "sqsbeat").await.unwrap();
        let mut tx = s.pool().begin().await.unwrap();
        for i in 0..40 {
            sqlx::query("SELECT schedule_job('e2e.job', now() + interval '22 minutes', kwargs => $1, queue => 'jobs')")
                .bind(serde_json::json!({"label": format!("bulk-{i}")}))
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    });
    assert_eq!(
        rt.block_on(jobs(&db.url)).len(),
        44,
        "the rolled-back job does not exist"
    );
    let (code, _, _) = cli(d, Some(&db.url), None, &["cancel", &cancelled]);
    assert_eq!(code, 0);

    // Nothing is in SQS while every job is more than the window away.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        queue_depth(&endpoint, "jobs"),
        0,
        "no job may reach SQS before its window"
    );

    let _worker = stack::worker(d, &endpoint, "jobs", "e2e.job");
    // "Advance the clock": every pending job is now due in 4 seconds.
    rt.block_on(sql(&db.url, "UPDATE sqsbeat.jobs SET due_at = date_trunc('second', now()) + interval '4 seconds' WHERE status = 'pending'"));
    let expected: Vec<(String, DateTime<Utc>)> = rt
        .block_on(jobs(&db.url))
        .into_iter()
        .filter(|j| j.0 != cancelled)
        .map(|j| (j.0, j.2))
        .collect();
    assert_eq!(expected.len(), 43);
    let records = stack::wait_records(d, Duration::from_secs(60), |recs| {
        expected.iter().all(|(id, _)| {
            recs.iter()
                .any(|r| r["id"] == id.as_str() && r["event"] == "executed")
        })
    });
    std::thread::sleep(Duration::from_millis(1500)); // any duplicate would arrive by now
    let records = if records.len() < stack::json_lines(&d.join("record.jsonl")).len() {
        stack::json_lines(&d.join("record.jsonl"))
    } else {
        records
    };
    for p in [&mut a, &mut b] {
        assert!(
            p.terminate(Duration::from_secs(10))
                .is_some_and(|s| s.success())
        );
    }

    let mut runs: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for r in records.iter().filter(|r| r["event"] == "executed") {
        runs.entry(r["id"].as_str().unwrap()).or_default().push(r);
    }
    assert!(
        !runs.contains_key(cancelled.as_str()),
        "a job cancelled before release never runs"
    );
    let mut lateness = Vec::new();
    for (id, due) in &expected {
        let r = runs
            .get(id.as_str())
            .unwrap_or_else(|| panic!("job {id} never ran"));
        assert_eq!(r.len(), 1, "job {id} ran {} times", r.len());
        let ran = DateTime::parse_from_rfc3339(r[0]["executed_at"].as_str().unwrap())
            .unwrap()
            .to_utc();
        let late = (ran - *due).num_milliseconds();
        assert!(late >= -50, "job {id} ran {late} ms before it was due");
        assert!(late < 5000, "job {id} ran {late} ms late");
        assert_eq!(
            r[0]["headers"]["sqsbeat_scheduled_at"],
            due.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        );
        lateness.push(late);
    }
    for (id, label) in &ids {
        assert_eq!(runs[id.as_str()][0]["kwargs"]["label"], *label);
    }
    let rows = rt.block_on(jobs(&db.url));
    for (id, status, due, released) in &rows {
        if *id == cancelled {
            assert_eq!(status, "cancelled");
            continue;
        }
        assert_eq!(status, "released", "{id}");
        let released = released.unwrap();
        assert!(
            released <= *due && *due - released <= chrono::Duration::minutes(15),
            "{id}: released {released}, due {due}"
        );
    }
    let releases = |log: &str| {
        stack::json_lines(&d.join(log))
            .iter()
            .filter(|l| l["message"] == "released")
            .count()
    };
    let (ra, rb) = (releases("a.log"), releases("b.log"));
    lateness.sort();
    eprintln!(
        "jobs: 43 released once ({ra} by replica a, {rb} by b), none early; due -> executed by the worker: p50 {} ms, max {} ms",
        lateness[lateness.len() / 2],
        lateness[lateness.len() - 1]
    );
    assert_eq!(ra + rb, 43, "each job released once across both replicas");
}

#[test]
fn sqlite_store_releases_jobs_too() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_moto, endpoint) = stack::moto(d);
    // Within the window: straight to SQS, delayed until due.
    let (code, out, err) = cli(
        d,
        None,
        Some(&endpoint),
        &[
            "schedule", "e2e.soon", "--in", "5s", "--queue", "lite", "--output", "json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["status"], "released");
    assert_eq!(
        queue_depth(&endpoint, "lite"),
        1,
        "in SQS as a delayed message"
    );
    // Far away: stored until a running sqsbeat releases it.
    let (_, out, _) = cli(
        d,
        None,
        Some(&endpoint),
        &[
            "schedule",
            "e2e.later",
            "--in",
            "14d",
            "--queue",
            "lite",
            "--output",
            "json",
        ],
    );
    let later = json(&out)["id"].as_str().unwrap().to_string();
    let schedule = d.join("s.toml");
    std::fs::write(
        &schedule,
        "[entries.idle]\ntask = \"a.idle\"\nevery = \"1d\"\nenabled = false\n",
    )
    .unwrap();
    stack::config_creating_queues(d);
    let mut run = stack::sqsbeat_replica(d, &endpoint, &schedule, "run.log", None);
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(
        queue_depth(&endpoint, "lite"),
        1,
        "the 14-day job is not released early"
    );
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let s = sqsbeat::store::SqliteStore::open(&d.join("sqsbeat.db"))
            .await
            .unwrap();
        let soon = (Utc::now() + chrono::Duration::seconds(3))
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        sqlx::query("UPDATE jobs SET due_at = ?1 WHERE id = ?2")
            .bind(soon)
            .bind(&later)
            .execute(s.pool())
            .await
            .unwrap();
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, out, _) = cli(d, None, None, &["show", &later, "--output", "json"]);
        if json(&out)["status"] == "released" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not released: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        run.terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    assert_eq!(queue_depth(&endpoint, "lite"), 2);
}

#[tokio::test]
async fn concurrent_claims_share_the_rows_and_a_dead_releasers_jobs_return_after_its_lease() {
    use sqsbeat::store::jobs::{self, ClaimRequest, JobStatus, Settlement};
    let db = TestDb::new().await;
    let pg = sqsbeat::store::PgStore::connect(&db.url, "sqsbeat")
        .await
        .unwrap();
    let store = sqsbeat::store::Store::Postgres(pg);
    let now = Utc::now();
    for i in 0..10 {
        let spec = sqsbeat::jobs::JobSpec {
            id: uuid::Uuid::new_v4(),
            task: "a.b".into(),
            args: vec![Value::from(i)],
            kwargs: Default::default(),
            queue: "q".into(),
            due_at: now + chrono::Duration::minutes(1),
            expires_at: None,
            priority: 0,
            headers: Default::default(),
        };
        assert!(matches!(
            jobs::insert(&store, &spec, "t").await.unwrap(),
            jobs::Inserted::Created
        ));
    }
    let lease = chrono::Duration::minutes(2);
    let request = |now, limit, token| ClaimRequest {
        now,
        window: chrono::Duration::minutes(15),
        limit,
        lease_for: lease,
        only: None,
        token,
    };
    // Two releasers at once: each takes rows the other does not.
    let (t1, t2) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let (r1, r2) = (request(now, 6, t1), request(now, 100, t2));
    let (first, second) = tokio::join!(jobs::claim(&store, &r1), jobs::claim(&store, &r2));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.rows.len() + second.rows.len(), 10);
    let mut ids: Vec<uuid::Uuid> = first
        .rows
        .iter()
        .chain(&second.rows)
        .map(|j| j.id)
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10, "no job claimed twice");
    // The first releaser dies after sending, before settling: its rows stay
    // its own until the lease ends, then go out again (same ids).
    let released: Vec<uuid::Uuid> = second.rows.iter().map(|j| j.id).collect();
    jobs::settle(
        &store,
        t2,
        &Settlement {
            released,
            ..Default::default()
        },
        now,
    )
    .await
    .unwrap();
    assert!(
        jobs::claim(&store, &request(now, 100, uuid::Uuid::new_v4()))
            .await
            .unwrap()
            .rows
            .is_empty(),
        "leased rows are not claimed while the lease lasts"
    );
    let after = now + lease + chrono::Duration::seconds(1);
    let t3 = uuid::Uuid::new_v4();
    let again = jobs::claim(&store, &request(after, 100, t3)).await.unwrap();
    let mut dead: Vec<uuid::Uuid> = first.rows.iter().map(|j| j.id).collect();
    let mut back: Vec<uuid::Uuid> = again.rows.iter().map(|j| j.id).collect();
    dead.sort();
    back.sort();
    assert_eq!(back, dead, "the dead releaser's jobs, same ids");
    jobs::settle(
        &store,
        t3,
        &Settlement {
            released: back,
            ..Default::default()
        },
        after,
    )
    .await
    .unwrap();
    let left = jobs::list(
        &store,
        &jobs::Filter {
            status: Some(JobStatus::Pending),
            limit: 100,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(left.is_empty());
}

/// Integers beyond 64 bits became floats in args and kwargs; with
/// serde_json's `arbitrary_precision` they stay exact through both stores
/// (JSONB and SQLite text) and into the task body a worker reads.
#[tokio::test]
async fn integers_beyond_64_bits_survive_both_stores_exact() {
    use sqsbeat::store::{PgStore, SqliteStore, Store, jobs};
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let stores = [
        Store::Postgres(PgStore::connect(&db.url, "sqsbeat").await.unwrap()),
        Store::Sqlite(SqliteStore::open(&dir.path().join("s.db")).await.unwrap()),
    ];
    for store in stores {
        let spec = sqsbeat::jobs::JobSpec {
            id: uuid::Uuid::new_v4(),
            task: "a.b".into(),
            args: json("[18446744073709551616, -9223372036854775809]")
                .as_array()
                .unwrap()
                .clone(),
            kwargs: json(r#"{"id": 18446744073709551616}"#)
                .as_object()
                .unwrap()
                .clone(),
            queue: "q".into(),
            due_at: "2030-01-01T00:00:00Z".parse().unwrap(),
            expires_at: None,
            priority: 0,
            headers: Default::default(),
        };
        jobs::insert(&store, &spec, "t").await.unwrap();
        let back = jobs::get(&store, spec.id)
            .await
            .unwrap()
            .unwrap()
            .spec()
            .unwrap();
        assert_eq!(back, spec);
        let body = back.message("id", "o", None).task_body_json();
        assert!(
            body.starts_with(
                r#"[[18446744073709551616, -9223372036854775809], {"id": 18446744073709551616}, "#
            ),
            "{body}"
        );
    }
}
