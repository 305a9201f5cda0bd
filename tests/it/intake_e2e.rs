//! End to end, the intake: a Celery app with `sqsbeat_celery.install(app)`
//! sends a task with `apply_async(countdown=...)` and a task whose worker
//! calls `self.retry(countdown=...)`, both beyond the divert threshold; moto
//! carries them to the intake queue, `sqsbeat run` (PostgreSQL) keeps them
//! as jobs and releases them, and a real Celery worker must run each once,
//! at (not before) its ETA, under its original ids. Judged by the worker's
//! record, the jobs table and Celery's own result backend.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sqlx::Row;

use crate::pg::TestDb;
use crate::stack::{self, Proc};

/// The countdown of both tasks, seconds; above the 2 s divert threshold.
const COUNTDOWN: &str = "8";

fn fixtures() -> std::path::PathBuf {
    stack::repo().join("tests/fixtures")
}

/// The app's environment: moto, its files, this checkout's sqsbeat_celery.
fn app_env(cmd: &mut Command, d: &Path, endpoint: &str) {
    cmd.current_dir(fixtures())
        .env("SQS_ENDPOINT", endpoint)
        .env("RECORD_FILE", d.join("record.jsonl"))
        .env("RESULTS_DIR", d.join("results"))
        .env("DIVERT_AFTER", "2")
        .env("COUNTDOWN", COUNTDOWN)
        .env("AWS_REGION", "us-east-1")
        .env("PYTHONPATH", stack::repo().join("python"));
}

fn worker(d: &Path, endpoint: &str) -> Proc {
    let log_path = d.join("worker.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = Command::new(stack::python());
    cmd.args([
        "-m",
        "celery",
        "-A",
        "divert_e2e",
        "worker",
        "-P",
        "solo",
        "-c",
        "1",
        "-Q",
        "diverted",
        "-l",
        "INFO",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-n",
        &format!("intake-{}@%h", std::process::id()),
    ]);
    app_env(&mut cmd, d, endpoint);
    let child = cmd
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start celery worker");
    let mut p = Proc { child };
    stack::wait_for("celery worker", Duration::from_secs(60), || {
        if let Ok(Some(s)) = p.child.try_wait() {
            panic!(
                "worker exited ({s}): {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("ready."))
    });
    p
}

/// Runs `divert_e2e.py ARGS` and parses the JSON it prints.
fn app(d: &Path, endpoint: &str, args: &[&str]) -> Value {
    let mut cmd = Command::new(stack::python());
    cmd.arg("divert_e2e.py").args(args);
    app_env(&mut cmd, d, endpoint);
    let out = stack::output_within(cmd.stdin(Stdio::null()), Duration::from_secs(60));
    assert!(
        out.status.success(),
        "divert_e2e.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Seconds since the epoch of an ISO 8601 instant.
fn epoch(iso: &Value) -> f64 {
    let t = chrono::DateTime::parse_from_rfc3339(iso.as_str().expect("an eta")).unwrap();
    t.timestamp_micros() as f64 / 1e6
}

#[test]
fn diverted_countdown_and_retry_run_once_at_their_eta_with_their_ids() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("results")).unwrap();
    let (_moto, endpoint) = stack::moto(d);
    stack::create_queue(&endpoint, "sqsbeat-intake");
    stack::create_queue(&endpoint, "diverted");
    let _worker = worker(d, &endpoint);
    let schedule = d.join("none.toml");
    std::fs::write(&schedule, "").unwrap();
    let log = std::fs::File::create(d.join("sqsbeat.log")).unwrap();
    let mut beat = Proc {
        child: stack::sqsbeat_command(d, &endpoint, &schedule)
            .env("SQSBEAT_DATABASE_URL", &db.url)
            .env("SQSBEAT_INTAKE_QUEUE", "sqsbeat-intake")
            .env("SQSBEAT_RELEASER_WINDOW", "2s")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sqsbeat"),
    };

    let sent = app(d, &endpoint, &["send", COUNTDOWN]);
    let (remind, flaky) = (
        sent["remind"].as_str().unwrap().to_string(),
        sent["flaky"].as_str().unwrap().to_string(),
    );
    let done = |recs: &[Value]| {
        let ran = |id: &str, retries: i64| {
            recs.iter().any(|r| {
                r["event"] == "executed" && r["id"] == id && r["retries"].as_i64() == Some(retries)
            })
        };
        ran(&remind, 0) && ran(&flaky, 1)
    };
    stack::wait_records(d, Duration::from_secs(90), done);
    // Long enough for a second delivery of either to show.
    std::thread::sleep(Duration::from_secs(4));
    let records = stack::json_lines(&d.join("record.jsonl"));
    let log = || std::fs::read_to_string(d.join("sqsbeat.log")).unwrap_or_default();
    assert!(done(&records), "not both run: {records:?}\n{}", log());
    let by_attempt = |event: &str| {
        let mut out: BTreeMap<(String, i64), Vec<&Value>> = BTreeMap::new();
        for r in records.iter().filter(|r| r["event"] == event) {
            let key = (
                r["id"].as_str().unwrap().to_string(),
                r["retries"].as_i64().unwrap(),
            );
            out.entry(key).or_default().push(r);
        }
        out
    };
    let (runs, receipts) = (by_attempt("executed"), by_attempt("received"));
    assert_eq!(
        runs.keys().cloned().collect::<Vec<_>>(),
        {
            let mut want = vec![(remind.clone(), 0), (flaky.clone(), 0), (flaky.clone(), 1)];
            want.sort();
            want
        },
        "each attempt under its original id, nothing else: {records:?}"
    );
    for ((id, retries), rs) in runs.iter().chain(&receipts) {
        assert_eq!(rs.len(), 1, "{id} attempt {retries}: {rs:?}");
    }
    // The diverted ones reach the worker at their ETA, not before (a
    // worker would hold an early one), run at once, and promptly.
    for key in [(remind.clone(), 0), (flaky.clone(), 1)] {
        let r = runs[&key][0];
        let eta = epoch(&r["eta"]);
        let (received, ran) = (
            receipts[&key][0]["at"].as_f64().unwrap(),
            r["at"].as_f64().unwrap(),
        );
        eprintln!(
            "intake e2e {key:?}: received {:+.3} s, ran {:+.3} s from its ETA",
            received - eta,
            ran - eta
        );
        assert!(
            received >= eta - 0.05,
            "{key:?} delivered {:.3} s before its ETA: {r}",
            eta - received
        );
        assert!(
            ran >= eta,
            "{key:?} ran {:.3} s before its ETA: {r}",
            eta - ran
        );
        assert!(
            ran - eta < 10.0,
            "{key:?} ran {:.3} s after its ETA: {r}",
            ran - eta
        );
        assert_eq!(r["routing_key"], "diverted", "the original routing: {r}");
    }
    let countdown: f64 = COUNTDOWN.parse().unwrap();
    let first = runs[&(remind.clone(), 0)][0];
    assert!(
        epoch(&first["eta"]) - sent["sent_at"].as_f64().unwrap() >= countdown - 0.5,
        "the ETA is the countdown's: {first}"
    );
    // A retry keeps its task's ids as Celery sends them (the root; the
    // parent is the attempt that retried): AsyncResult(id) is the same task.
    let (try0, try1) = (runs[&(flaky.clone(), 0)][0], runs[&(flaky.clone(), 1)][0]);
    assert_eq!(try1["root_id"], try0["root_id"]);
    assert_eq!(try1["parent_id"], flaky.as_str());
    assert!(epoch(&try1["eta"]) - try0["at"].as_f64().unwrap() >= countdown - 0.5);
    let results = app(d, &endpoint, &["results", &remind, &flaky]);
    assert_eq!(results[&remind], 42);
    assert_eq!(results[&flaky], 2);

    // Both went through the jobs table, once each, and were released.
    let rows = rt.block_on(async {
        let s = sqsbeat::store::PgStore::connect(&db.url, "sqsbeat")
            .await
            .unwrap();
        sqlx::query("SELECT id::text AS id, task, status, retries, envelope IS NOT NULL AS held FROM jobs ORDER BY task")
            .fetch_all(s.pool())
            .await
            .unwrap()
    });
    let rows: Vec<(String, String, String, i32, bool)> = rows
        .iter()
        .map(|r| {
            (
                r.get("id"),
                r.get("task"),
                r.get("status"),
                r.get("retries"),
                r.get("held"),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                flaky.clone(),
                "e2e.flaky".into(),
                "released".into(),
                1,
                true
            ),
            (
                remind.clone(),
                "e2e.remind".into(),
                "released".into(),
                0,
                true
            ),
        ],
        "{}",
        log()
    );
    let status = beat
        .terminate(Duration::from_secs(30))
        .expect("sqsbeat stops on SIGTERM");
    assert!(status.success(), "sqsbeat exit {status}:\n{}", log());
}
