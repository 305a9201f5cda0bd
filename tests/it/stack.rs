//! Real processes for end-to-end tests: moto's SQS server, a Celery worker
//! (examples/worker.py) that records what it executed, and `sqsbeat run`.
//! Every process is killed when its guard drops, also when a test fails.

use std::io::{BufRead, BufReader};

use chrono::{DateTime, Utc};
use sqlx::Row;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (and reaped) on drop.
pub struct Proc {
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv Python with moto and celery (scripts/test sets it up).
pub fn python() -> PathBuf {
    let p = std::env::var_os("SQSBEAT_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "end-to-end tests need the Python venv with moto and celery: run `scripts/test` (or scripts/setup-python) first; looked for {}",
        p.display()
    );
    p
}

/// A loopback port free now, never one this process handed out before:
/// tests run eight at once, and a port is only bound when the child a test
/// starts binds it, so the kernel may offer the same one to two tests.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

pub fn wait_for(what: &str, within: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} not ready within {within:?}");
}

/// moto's SQS server on a free loopback port.
pub fn moto(dir: &Path) -> (Proc, String) {
    let port = free_port();
    let log = std::fs::File::create(dir.join("moto.log")).unwrap();
    let child = Command::new(python())
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start moto");
    let p = Proc { child };
    wait_for("moto", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (p, format!("http://127.0.0.1:{port}"))
}

/// A Celery worker consuming `queues`, recording outcomes to `dir/record.jsonl`.
pub fn worker(dir: &Path, endpoint: &str, queues: &str, task_names: &str) -> Proc {
    worker_with(dir, endpoint, queues, task_names, &[])
}

/// [`worker`] with more environment (`SENTRY_DSN`, `FAIL_TASKS`).
pub fn worker_with(
    dir: &Path,
    endpoint: &str,
    queues: &str,
    task_names: &str,
    env: &[(&str, &str)],
) -> Proc {
    let log_path = dir.join("worker.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(python())
        .args([
            "-m", "celery", "-A", "worker", "worker", "-P", "solo", "-c", "1", "-Q", queues, "-l",
            "INFO",
        ])
        .args([
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            &format!("e2e-{}@%h", std::process::id()),
        ])
        .current_dir(repo().join("examples"))
        .env("SQS_ENDPOINT", endpoint)
        .env("RECORD_FILE", dir.join("record.jsonl"))
        .env("TASK_NAMES", task_names)
        .env("AWS_REGION", "us-east-1")
        .envs(env.iter().copied())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start celery worker");
    let mut p = Proc { child };
    wait_for("celery worker", Duration::from_secs(60), || {
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

/// `sqsbeat run` with JSON logs to `dir/sqsbeat.log`.
pub fn sqsbeat_run(dir: &Path, endpoint: &str, schedule: &Path) -> Proc {
    sqsbeat_replica(dir, endpoint, schedule, "sqsbeat.log", None)
}

/// One `sqsbeat run` replica logging to `dir/log`, with a database if given.
pub fn sqsbeat_replica(
    dir: &Path,
    endpoint: &str,
    schedule: &Path,
    log: &str,
    database_url: Option<&str>,
) -> Proc {
    let log = std::fs::File::create(dir.join(log)).unwrap();
    let mut cmd = sqsbeat_command(dir, endpoint, schedule);
    match database_url {
        Some(url) => cmd.env("SQSBEAT_DATABASE_URL", url),
        None => cmd
            .env_remove("SQSBEAT_DATABASE_URL")
            .env_remove("DATABASE_URL"),
    };
    let child = cmd
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start sqsbeat");
    Proc { child }
}

/// The `sqsbeat run` command line with emulator credentials, not started.
pub fn sqsbeat_command(dir: &Path, endpoint: &str, schedule: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sqsbeat"));
    cmd.args(["--log-format", "json", "run"])
        .arg(schedule)
        .current_dir(dir)
        .env("SQSBEAT_SQS_ENDPOINT_URL", endpoint)
        .env("SQSBEAT_SQS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        // An ephemeral port: many replicas run at once in the suite.
        .env("SQSBEAT_HTTP_ADDR", "127.0.0.1:0")
        // No database unless a test asks for one (sqsbeat_replica): the
        // suite's DATABASE_URL is for tests that make their own database.
        .env_remove("DATABASE_URL")
        .env_remove("SQSBEAT_DATABASE_URL");
    cmd
}

/// Runs a command to completion, failing the test if it takes too long.
pub fn output_within(cmd: &mut Command, within: Duration) -> std::process::Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(within) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("command did not finish within {within:?}");
        }
    }
}

/// Creates a queue through moto with boto3 (not through sqsbeat).
pub fn create_queue(endpoint: &str, name: &str) {
    let code = format!(
        "import boto3; boto3.client('sqs', endpoint_url='{endpoint}', region_name='us-east-1', aws_access_key_id='x', aws_secret_access_key='y').create_queue(QueueName='{name}')"
    );
    let st = Command::new(python()).args(["-c", &code]).status().unwrap();
    assert!(st.success(), "create queue {name}");
}

/// JSON lines of a file (missing file: none).
pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    let Ok(f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

/// Waits until `done(records)` holds, re-reading the worker's record file.
pub fn wait_records(
    dir: &Path,
    within: Duration,
    mut done: impl FnMut(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + within;
    loop {
        let recs = json_lines(&dir.join("record.jsonl"));
        if done(&recs) || Instant::now() > deadline {
            return recs;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the worker has executed every task id in `expected` (or
/// `within` passes) and returns its records.
pub fn wait_executed(
    dir: &Path,
    within: Duration,
    expected: &std::collections::BTreeSet<String>,
) -> Vec<serde_json::Value> {
    wait_records(dir, within, |recs| {
        let ran: std::collections::BTreeSet<&str> = recs
            .iter()
            .filter(|r| r["event"] == "executed")
            .filter_map(|r| r["id"].as_str())
            .collect();
        expected.iter().all(|id| ran.contains(id.as_str()))
    })
}

/// What the worker did with one set of task ids.
#[derive(Debug, Clone, Copy)]
pub struct Tally {
    pub expected: usize,
    pub executed: usize,
    pub lost: usize,
    pub twice: usize,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} expected, {} executed, {} lost, {} executed twice (same task id)",
            self.expected, self.executed, self.lost, self.twice
        )
    }
}

/// Waits for the worker to execute every fire and job, then tallies each.
/// Any executed id outside `claimed` fails the test (`executed_runs`), so a
/// duplicate can only carry the original's task id.
pub fn judge(
    dir: &Path,
    within: Duration,
    fires: &std::collections::BTreeSet<String>,
    jobs: &std::collections::BTreeSet<String>,
    claimed: &std::collections::BTreeSet<String>,
) -> (Tally, Tally) {
    let expected = fires.union(jobs).cloned().collect();
    let records = wait_executed(dir, within, &expected);
    let runs = executed_runs(&records, claimed);
    let tally = |ids: &std::collections::BTreeSet<String>| {
        let executed = ids.iter().filter(|id| runs.contains_key(*id)).count();
        Tally {
            expected: ids.len(),
            executed,
            lost: ids.len() - executed,
            twice: ids
                .iter()
                .filter(|id| runs.get(*id).is_some_and(|n| *n > 1))
                .count(),
        }
    };
    (tally(fires), tally(jobs))
}

/// Rows of the jobs table not `released`, as (id, status).
pub async fn unreleased_jobs(url: &str) -> Vec<(uuid::Uuid, String)> {
    let s = sqsbeat::store::PgStore::connect(url, "sqsbeat")
        .await
        .unwrap();
    sqlx::query_as("SELECT id, status FROM jobs WHERE status <> 'released'")
        .fetch_all(s.pool())
        .await
        .unwrap()
}

/// Inserts `n` one-off jobs straight into the jobs table, as an
/// application may, due at `first` and every `every` after.
pub async fn insert_jobs(
    url: &str,
    task: &str,
    queue: &str,
    first: DateTime<Utc>,
    every: chrono::Duration,
    n: usize,
) -> Vec<uuid::Uuid> {
    let s = sqsbeat::store::PgStore::connect(url, "sqsbeat")
        .await
        .unwrap();
    let mut ids = Vec::with_capacity(n);
    for k in 0..n {
        let id = uuid::Uuid::new_v4();
        sqlx::query("INSERT INTO jobs (id, task, queue, due_at) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(task)
            .bind(queue)
            .bind(first + every * k as i32)
            .execute(s.pool())
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

/// Runs one `sqsbeat` command in `dir` with emulator credentials: the
/// given database (else the SQLite default) and SQS endpoint (else a closed
/// port). Returns (exit code, stdout, stderr).
pub fn cli(
    dir: &Path,
    db: Option<&str>,
    endpoint: Option<&str>,
    args: &[&str],
) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sqsbeat"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("SQSBEAT_DATABASE_URL")
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("SQSBEAT_SQS_REGION", "us-east-1")
        .env("SQSBEAT_SQS_CREATE_MISSING_QUEUES", "true")
        .env(
            "SQSBEAT_SQS_ENDPOINT_URL",
            endpoint.unwrap_or("http://127.0.0.1:9"),
        );
    if let Some(url) = db {
        cmd.env("SQSBEAT_DATABASE_URL", url);
    }
    let out = output_within(&mut cmd, Duration::from_secs(60));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits until a line of the JSON log `dir/log` satisfies `pred`; fails the
/// test with the log if none does within `within`.
pub fn wait_log(
    d: &Path,
    log: &str,
    within: Duration,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        if let Some(l) = json_lines(&d.join(log)).into_iter().find(|l| pred(l)) {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not seen within {within:?}: {}",
            std::fs::read_to_string(d.join(log)).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes a `sqsbeat.toml` that creates missing queues (moto starts empty).
pub fn config_creating_queues(dir: &Path) {
    std::fs::write(
        dir.join("sqsbeat.toml"),
        "[sqs]\ncreate_missing_queues = true\n",
    )
    .unwrap();
}

/// The ledger as (entry, slot, outcome), from either backend.
pub async fn ledger(
    db_url: Option<&str>,
    dir: &std::path::Path,
) -> Vec<(String, DateTime<Utc>, String)> {
    match db_url {
        Some(url) => {
            let s = sqsbeat::store::PgStore::connect(url, "sqsbeat")
                .await
                .unwrap();
            let rows = sqlx::query("SELECT entry, slot, outcome FROM ledger ORDER BY entry, slot")
                .fetch_all(s.pool())
                .await
                .unwrap();
            rows.iter()
                .map(|r| (r.get("entry"), r.get("slot"), r.get("outcome")))
                .collect()
        }
        None => {
            let s = sqsbeat::store::SqliteStore::open(&dir.join("sqsbeat.db"))
                .await
                .unwrap();
            let rows = sqlx::query("SELECT entry, slot, outcome FROM ledger ORDER BY entry, slot")
                .fetch_all(s.pool())
                .await
                .unwrap();
            rows.iter()
                .map(|r| {
                    let slot: String = r.get("slot");
                    (
                        r.get("entry"),
                        DateTime::parse_from_rfc3339(&slot).unwrap().to_utc(),
                        r.get("outcome"),
                    )
                })
                .collect()
        }
    }
}

/// How many times the worker executed each task id, failing the test on an
/// execution of an id outside `claimed`.
pub fn executed_runs(
    records: &[serde_json::Value],
    claimed: &std::collections::BTreeSet<String>,
) -> std::collections::BTreeMap<String, usize> {
    let mut runs = std::collections::BTreeMap::new();
    for r in records.iter().filter(|r| r["event"] == "executed") {
        let id = r["id"].as_str().unwrap().to_string();
        assert!(
            claimed.contains(&id),
            "executed a task no slot claimed: {r}"
        );
        *runs.entry(id).or_default() += 1;
    }
    runs
}
