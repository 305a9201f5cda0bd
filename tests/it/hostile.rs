//! Rows written into the entries and jobs tables by hand or by another
//! application, past every check the CLI makes: wrong JSON types, NULLs, a
//! payload over SQS's limit, a cron that never fires, a time zone that does
//! not exist, reserved headers, out-of-range numbers. `run` must neither
//! crash nor spin: a bad entry row is set aside with an error naming it
//! (the good entries keep firing, at start-up too), a bad job row is marked
//! failed with the reason, and no good job is dropped.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use sqlx::Row;

use crate::pg::TestDb;
use crate::stack::{self, json_lines};

/// Entry rows no check let through: (name, the SQL values after the name).
const BAD_ENTRIES: &[(&str, &str)] = &[
    (
        "mars",
        "'e2e.x', NULL, NULL, '1m', 'Mars/Olympus_Mons', '[]', '{}'",
    ),
    (
        "obj_args",
        "'e2e.x', NULL, NULL, '1m', NULL, '{\"a\": 1}', '{}'",
    ),
    (
        "list_kwargs",
        "'e2e.x', NULL, NULL, '1m', NULL, '[]', '[1, 2]'",
    ),
    (
        "text_crontab",
        "'e2e.x', NULL, '\"hello\"', NULL, NULL, '[]', '{}'",
    ),
    ("no_schedule", "'e2e.x', NULL, NULL, NULL, NULL, '[]', '{}'"),
    (
        "two_schedules",
        "'e2e.x', '* * * * *', NULL, '1m', NULL, '[]', '{}'",
    ),
    ("negative", "'e2e.x', NULL, NULL, '-5s', NULL, '[]', '{}'"),
    (
        "bad_cron",
        "'e2e.x', '61 * * * *', NULL, NULL, NULL, '[]', '{}'",
    ),
    (
        "spaced_task",
        "'e2e tasks x', NULL, NULL, '1m', NULL, '[]', '{}'",
    ),
    ("null_args", "'e2e.x', NULL, NULL, '1m', NULL, 'null', '{}'"),
    (
        "huge",
        "'e2e.x', NULL, NULL, '1m', NULL, jsonb_build_array(repeat('x', 2000000)), '{}'",
    ),
];

async fn exec(url: &str, q: &str) {
    let s = sqsbeat::store::PgStore::connect(url, "sqsbeat")
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(q.to_string()))
        .execute(s.pool())
        .await
        .unwrap_or_else(|e| panic!("{q}: {e}"));
}

fn set_aside(d: &std::path::Path, log: &str) -> BTreeSet<String> {
    json_lines(&d.join(log))
        .iter()
        .filter_map(|l| l["message"].as_str().map(String::from))
        .filter(|m| m.contains("this row is not loaded"))
        .filter_map(|m| {
            let rest = m.split("entry '").nth(1)?;
            Some(rest.split('\'').next()?.to_string())
        })
        .collect()
}

/// Waits until every row in `want` is reported as set aside in `log`.
fn wait_set_aside(d: &std::path::Path, log: &str, want: &BTreeSet<String>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !want.is_subset(&set_aside(d, log)) {
        if std::time::Instant::now() > deadline {
            let seen = set_aside(d, log);
            let missing: Vec<&String> = want.difference(&seen).collect();
            let errors: Vec<String> = json_lines(&d.join(log))
                .iter()
                .filter(|l| l["level"] == "ERROR" || l["level"] == "WARN")
                .map(|l| l.to_string())
                .collect();
            panic!("rows not reported as set aside: {missing:?}; errors logged: {errors:#?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sent_by(d: &std::path::Path, log: &str, entry: &str) -> usize {
    json_lines(&d.join(log))
        .iter()
        .filter(|l| l["message"] == "sent")
        .filter(|l| l["span"]["entry"] == entry)
        .count()
}

#[test]
fn hostile_rows_are_set_aside_or_failed_never_crash_spin_or_drop() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_moto, endpoint) = stack::moto(d);
    stack::config_creating_queues(d);
    let _worker = stack::worker(d, &endpoint, "celery,hostile", "e2e.good,e2e.job");
    let schedule = d.join("s.toml");
    std::fs::write(
        &schedule,
        "[entries.file_good]\ntask = \"e2e.good\"\nevery = \"1s\"\nqueue = \"hostile\"\n",
    )
    .unwrap();
    let mut run = stack::sqsbeat_replica(d, &endpoint, &schedule, "run1.log", Some(&db.url));
    stack::wait_log(
        d,
        "run1.log",
        Duration::from_secs(30),
        "a first fire",
        |l| l["message"] == "sent",
    );
    rt.block_on(exec(
        &db.url,
        "INSERT INTO entries (name, task, every, queue) VALUES ('db_good', 'e2e.good', '1s', 'hostile')",
    ));
    stack::wait_log(
        d,
        "run1.log",
        Duration::from_secs(10),
        "db_good loaded",
        |l| l["message"] == "schedule reloaded",
    );

    // Every bad entry row at once, then a bad edit of the good row.
    for (name, values) in BAD_ENTRIES {
        rt.block_on(exec(
            &db.url,
            &format!("INSERT INTO entries (name, task, cron, crontab, every, timezone, args, kwargs) VALUES ('{name}', {values})"),
        ));
    }
    // A cron no date matches is valid but never fires: loaded, warned
    // about, and never woken for (no spin).
    rt.block_on(exec(
        &db.url,
        "INSERT INTO entries (name, task, cron) VALUES ('never', 'e2e.x', '0 0 30 2 *')",
    ));
    rt.block_on(exec(
        &db.url,
        "UPDATE entries SET catch_up = 'sometimes' WHERE name = 'db_good'",
    ));
    let want: BTreeSet<String> = BAD_ENTRIES
        .iter()
        .map(|(n, _)| n.to_string())
        .chain(["db_good".to_string()])
        .collect();
    wait_set_aside(d, "run1.log", &want);
    stack::wait_log(
        d,
        "run1.log",
        Duration::from_secs(5),
        "the never-fires warning",
        |l| {
            l["level"] == "WARN"
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("entry 'never'") && m.contains("never fires"))
        },
    );

    // Bad jobs beside good ones, due now.
    let due = (Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    // Each bad job is one INSERT: a running releaser takes a new row at once.
    let bad_jobs: &[(&str, &str, &str)] = &[
        ("empty task", "task", "''"),
        ("spaced task", "task", "'e2e job x'"),
        ("bad queue", "queue", "'no spaces allowed!'"),
        (
            "huge args",
            "args",
            "jsonb_build_array(repeat('x', 2000000))",
        ),
        ("reserved header", "headers", "'{\"id\": \"forged\"}'"),
        ("priority", "priority", "1000"),
        (
            "expires before due",
            "expires_at",
            "now() - interval '1 hour'",
        ),
    ];
    let mut failed_ids = Vec::new();
    for (what, column, value) in bad_jobs {
        let id = uuid::Uuid::new_v4();
        let (task, queue) = match *column {
            "task" => (*value, "'hostile'"),
            "queue" => ("'e2e.job'", *value),
            _ => ("'e2e.job'", "'hostile'"),
        };
        let extra = match *column {
            "task" | "queue" => String::new(),
            c => format!(", {c}"),
        };
        let extra_value = match *column {
            "task" | "queue" => String::new(),
            _ => format!(", {value}"),
        };
        rt.block_on(exec(
            &db.url,
            &format!("INSERT INTO jobs (id, task, queue, due_at{extra}) VALUES ('{id}', {task}, {queue}, '{due}'{extra_value})"),
        ));
        failed_ids.push((id, *what));
    }
    let good_jobs: Vec<uuid::Uuid> = (0..3).map(|_| uuid::Uuid::new_v4()).collect();
    for (k, id) in good_jobs.iter().enumerate() {
        // The first one is due in 1970: late, but a job, and sent.
        let at = if k == 0 {
            "1970-01-01T00:00:00Z".to_string()
        } else {
            due.clone()
        };
        rt.block_on(exec(
            &db.url,
            &format!("INSERT INTO jobs (id, task, queue, due_at) VALUES ('{id}', 'e2e.job', 'hostile', '{at}')"),
        ));
    }

    // The good entries keep firing through all of it.
    let before = (
        sent_by(d, "run1.log", "file_good"),
        sent_by(d, "run1.log", "db_good"),
    );
    std::thread::sleep(Duration::from_secs(5));
    let after = (
        sent_by(d, "run1.log", "file_good"),
        sent_by(d, "run1.log", "db_good"),
    );
    assert!(
        after.0 >= before.0 + 3,
        "the file entry stopped firing: {before:?} -> {after:?}"
    );
    assert!(
        after.1 >= before.1 + 3,
        "db_good's last good definition stopped firing: {before:?} -> {after:?}"
    );
    // No spin: with nothing changing, the log stays quiet but for fires.
    let lines = |log: &str| {
        json_lines(&d.join(log))
            .iter()
            .filter(|l| l["message"] != "sent")
            .count()
    };
    let quiet_from = lines("run1.log");
    std::thread::sleep(Duration::from_secs(3));
    let quiet_to = lines("run1.log");
    assert!(
        quiet_to - quiet_from < 10,
        "{} log lines in 3 s with nothing changing",
        quiet_to - quiet_from
    );
    assert!(
        run.child.try_wait().unwrap().is_none(),
        "run exited with the bad rows in place"
    );
    assert!(
        run.terminate(Duration::from_secs(20))
            .is_some_and(|s| s.success())
    );

    // A restart with every bad row still there: it starts, reports each,
    // and fires the good ones (db_good, invalid now, has no last good
    // definition in a new process: set aside).
    let mut run2 = stack::sqsbeat_replica(d, &endpoint, &schedule, "run2.log", Some(&db.url));
    wait_set_aside(d, "run2.log", &want);
    stack::wait_for(
        "file_good fires after restart",
        Duration::from_secs(15),
        || sent_by(d, "run2.log", "file_good") >= 2,
    );
    assert!(
        run2.terminate(Duration::from_secs(20))
            .is_some_and(|s| s.success())
    );

    // `check` refuses the table with every problem, named.
    let (code, out, err) = stack::cli(d, Some(&db.url), None, &["check", "s.toml"]);
    assert_ne!(code, 0, "check passes a table with bad rows:\n{out}{err}");
    for name in &want {
        assert!(
            err.contains(&format!("entry '{name}'")),
            "check does not name {name}:\n{err}"
        );
    }

    // Jobs: each bad one failed with its reason; each good one released
    // and executed; none left pending.
    let rows = rt.block_on(async {
        let s = sqsbeat::store::PgStore::connect(&db.url, "sqsbeat")
            .await
            .unwrap();
        sqlx::query("SELECT id, status, last_error FROM jobs")
            .fetch_all(s.pool())
            .await
            .unwrap()
    });
    let status = |id: &uuid::Uuid| -> (String, Option<String>) {
        let r = rows
            .iter()
            .find(|r| r.get::<uuid::Uuid, _>("id") == *id)
            .unwrap();
        (r.get("status"), r.get("last_error"))
    };
    for (id, what) in &failed_ids {
        let (st, why) = status(id);
        assert_eq!(st, "failed", "{what}: {st} {why:?}");
        assert!(
            why.as_deref().is_some_and(|w| !w.is_empty()),
            "{what}: no reason"
        );
        eprintln!("hostile job ({what}): failed: {}", why.unwrap());
    }
    for id in &good_jobs {
        assert_eq!(status(id).0, "released", "{id}");
    }
    let good: BTreeSet<String> = good_jobs.iter().map(|j| j.to_string()).collect();
    let records = stack::wait_executed(d, Duration::from_secs(60), &good);
    let ran: BTreeSet<String> = records
        .iter()
        .filter(|r| r["event"] == "executed" && r["task"] == "e2e.job")
        .filter_map(|r| r["id"].as_str().map(String::from))
        .collect();
    assert_eq!(ran, good, "exactly the good jobs ran");
    eprintln!(
        "hostile rows: {} bad entry rows set aside (run kept firing, restarted with them in place), {} bad jobs failed with a reason, {} good jobs executed",
        want.len(),
        failed_ids.len(),
        good.len()
    );
}
