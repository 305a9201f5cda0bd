//! Entries kept in the database: the CLI, name clashes with files, and a
//! running `sqsbeat` picking changes up without a restart.

use std::path::Path;
use std::time::Duration;

use crate::pg::TestDb;
use crate::stack::{self, json_lines};

fn cli(dir: &Path, db: Option<&str>, args: &[&str]) -> (i32, String, String) {
    stack::cli(dir, db, None, args)
}

#[test]
fn entries_cli_adds_validates_lists_toggles_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("schedules")).unwrap();
    std::fs::write(
        d.join("schedules/s.toml"),
        "[entries.from-file]\ntask = \"a.b\"\nevery = \"1m\"\n",
    )
    .unwrap();

    let (code, out, err) = cli(
        d,
        None,
        &[
            "entries",
            "add",
            "nightly",
            "--task",
            "app.tasks.report",
            "--cron",
            "0 3 * * *",
            "--timezone",
            "Europe/London",
            "--kwargs",
            r#"{"a": 1}"#,
            "--header",
            "team=ops",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "added entry 'nightly'");
    let (code, _, err) = cli(
        d,
        None,
        &[
            "entries",
            "add",
            "bad",
            "--task",
            "a.b",
            "--cron",
            "61 * * * *",
        ],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("entry 'bad': invalid cron \"61 * * * *\""),
        "{err}"
    );
    let (code, _, err) = cli(
        d,
        None,
        &[
            "entries",
            "add",
            "bad2",
            "--task",
            "a.b",
            "--every",
            "1m",
            "--args",
            "{not json",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("--args is not valid JSON"), "{err}");
    let (code, _, err) = cli(
        d,
        None,
        &[
            "entries", "add", "nightly", "--task", "a.b", "--every", "1m",
        ],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("already exists in the database; use --replace"),
        "{err}"
    );
    let (code, _, err) = cli(
        d,
        None,
        &[
            "entries",
            "add",
            "from-file",
            "--task",
            "a.b",
            "--every",
            "1m",
        ],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("entry 'from-file' is already defined in schedules/s.toml:1"),
        "{err}"
    );
    let (code, _, err) = cli(
        d,
        None,
        &[
            "entries",
            "add",
            "x",
            "--task",
            "a.b",
            "--every",
            "1m",
            "--cron",
            "* * * * *",
        ],
    );
    assert_eq!(code, 2, "clap refuses two schedules: {err}");

    let (_, out, _) = cli(d, None, &["entries", "list"]);
    assert_eq!(
        out,
        "NAME     TASK              SCHEDULE   QUEUE   ENABLED  PAUSED\nnightly  app.tasks.report  0 3 * * *  celery  yes      no\n"
    );
    let (code, _, _) = cli(d, None, &["entries", "disable", "nightly"]);
    assert_eq!(code, 0);
    let (_, out, _) = cli(d, None, &["entries", "show", "nightly", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            v["enabled"].as_bool(),
            v["timezone"].as_str(),
            v["headers"]["team"].as_str()
        ),
        (Some(false), Some("Europe/London"), Some("ops"))
    );
    assert_eq!(v["kwargs"]["a"], 1);
    let (code, _, _) = cli(d, None, &["entries", "enable", "nightly"]);
    assert_eq!(code, 0);

    // `check` and `next` see database entries too.
    let (code, out, err) = cli(d, None, &["check"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "ok: 2 entries in 1 file(s)");
    let (_, out, _) = cli(
        d,
        None,
        &[
            "next",
            "--entry",
            "nightly",
            "--count",
            "1",
            "--after",
            "2026-07-01T00:00:00Z",
            "--output",
            "json",
        ],
    );
    assert!(
        out.contains(r#""fire_at":"2026-07-01T02:00:00Z""#),
        "03:00 BST: {out}"
    );

    let (code, out, _) = cli(d, None, &["entries", "remove", "nightly"]);
    assert_eq!((code, out.trim()), (0, "removed entry 'nightly'"));
    let (code, _, err) = cli(d, None, &["entries", "remove", "nightly"]);
    assert_eq!(code, 1);
    assert!(err.contains("no database entry named 'nightly'"), "{err}");
}

#[test]
fn check_reports_a_name_defined_in_a_file_and_in_the_database() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("s.toml"),
        "\n[entries.twice]\ntask = \"a.b\"\nevery = \"1m\"\n",
    )
    .unwrap();
    let (code, _, err) = cli(d, Some(&db.url), &["migrate"]);
    assert_eq!(code, 0, "{err}");
    // Plain SQL, as an application would write it.
    rt.block_on(async {
        let s = sqsbeat::store::PgStore::connect(&db.url, "sqsbeat")
            .await
            .unwrap();
        sqlx::query("INSERT INTO entries (name, task, every) VALUES ('twice', 'a.b', '5m')")
            .execute(s.pool())
            .await
            .unwrap();
    });
    let (code, _, err) = cli(d, Some(&db.url), &["check", "s.toml"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("s.toml:2: entry 'twice': also defined in the database entries table"),
        "{err}"
    );
}

fn sent_by(l: &serde_json::Value, entry: &str) -> bool {
    l["message"] == "sent" && l["span"]["entry"] == entry
}

fn live_reload(db: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_moto, endpoint) = stack::moto(d);
    stack::config_creating_queues(d);
    let schedule = d.join("s.toml");
    std::fs::write(
        &schedule,
        "[entries.file-entry]\ntask = \"a.b\"\nevery = \"1h\"\n",
    )
    .unwrap();
    let mut run = stack::sqsbeat_replica(d, &endpoint, &schedule, "run.log", db);
    stack::wait_log(d, "run.log", Duration::from_secs(20), "start", |l| {
        l["message"] == "beat started"
    });

    let (code, _, err) = cli(
        d,
        db,
        &["entries", "add", "dyn", "--task", "a.dyn", "--every", "1s"],
    );
    assert_eq!(code, 0, "{err}");
    let added_at = chrono::Utc::now();
    let reload = stack::wait_log(d, "run.log", Duration::from_secs(5), "reload", |l| {
        l["message"] == "schedule reloaded"
    });
    let reloaded_at = chrono::DateTime::parse_from_rfc3339(reload["timestamp"].as_str().unwrap())
        .unwrap()
        .to_utc();
    stack::wait_log(
        d,
        "run.log",
        Duration::from_secs(5),
        "a fire of the new entry",
        |l| sent_by(l, "dyn"),
    );

    // A broken edit by hand is set aside with an error naming the entry;
    // its last good definition keeps firing.
    let (code, _, _) = cli(
        d,
        db,
        &[
            "entries",
            "add",
            "dyn",
            "--task",
            "a.dyn",
            "--every",
            "1s",
            "--replace",
        ],
    );
    assert_eq!(code, 0);
    match db {
        Some(url) => tokio::runtime::Runtime::new().unwrap().block_on(async {
            let s = sqsbeat::store::PgStore::connect(url, "sqsbeat")
                .await
                .unwrap();
            sqlx::query("UPDATE entries SET cron = '99 * * * *' WHERE name = 'dyn'")
                .execute(s.pool())
                .await
                .unwrap();
        }),
        None => tokio::runtime::Runtime::new().unwrap().block_on(async {
            let s = sqsbeat::store::SqliteStore::open(&d.join("sqsbeat.db"))
                .await
                .unwrap();
            sqlx::query("UPDATE entries SET cron = '99 * * * *' WHERE name = 'dyn'")
                .execute(s.pool())
                .await
                .unwrap();
        }),
    }
    stack::wait_log(d, "run.log", Duration::from_secs(5), "rejection", |l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.contains("entry 'dyn'") && m.contains("this row is not loaded"))
    });
    let fires_before = json_lines(&d.join("run.log"))
        .iter()
        .filter(|l| sent_by(l, "dyn"))
        .count();
    std::thread::sleep(Duration::from_millis(2500));
    let fires_after = json_lines(&d.join("run.log"))
        .iter()
        .filter(|l| sent_by(l, "dyn"))
        .count();
    assert!(
        fires_after > fires_before,
        "the last good schedule keeps running"
    );

    let (code, _, _) = cli(d, db, &["entries", "remove", "dyn"]);
    assert_eq!(code, 0);
    stack::wait_log(d, "run.log", Duration::from_secs(5), "removal", |l| {
        l["message"] == "schedule reloaded"
            && l["removed"].as_str().is_some_and(|r| r.contains("dyn"))
    });
    std::thread::sleep(Duration::from_millis(1500));
    let n1 = json_lines(&d.join("run.log"))
        .iter()
        .filter(|l| sent_by(l, "dyn"))
        .count();
    std::thread::sleep(Duration::from_millis(2000));
    let n2 = json_lines(&d.join("run.log"))
        .iter()
        .filter(|l| sent_by(l, "dyn"))
        .count();
    assert_eq!(n1, n2, "a removed entry stops firing");
    assert!(
        run.terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    eprintln!(
        "entries reload ({}): CLI add returned -> schedule reloaded in {} ms",
        if db.is_some() {
            "postgres NOTIFY"
        } else {
            "sqlite poll"
        },
        (reloaded_at - added_at).num_milliseconds().max(0)
    );
}

#[test]
fn a_running_sqsbeat_picks_up_entries_changes_sqlite() {
    live_reload(None);
}

#[test]
fn a_running_sqsbeat_picks_up_entries_changes_postgres() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new());
    live_reload(Some(&db.url));
}

#[tokio::test]
async fn a_row_named_like_a_file_entry_never_stops_run() {
    // Regression: `INSERT INTO sqsbeat.entries` of a name a schedule file
    // also defines made every restart exit 1 (a sidecar crash loop).
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let schedules = dir.path().join("schedules");
    std::fs::create_dir(&schedules).unwrap();
    std::fs::write(
        schedules.join("app.toml"),
        "[entries.x]\ntask = \"app.file\"\nevery = \"1m\"\n",
    )
    .unwrap();
    let env = |k: &str| (k == "SQSBEAT_DATABASE_PATH").then(|| db.display().to_string());
    let config = sqsbeat::config::parse("none", None, &env).unwrap();
    let store = sqsbeat::store::Store::open(&config, sqsbeat::store::Access::Write)
        .await
        .unwrap();
    let row = sqsbeat::store::entries::EntryRow {
        name: "x".into(),
        task: "app.row".into(),
        every: Some("5m".into()),
        args: serde_json::json!([]),
        kwargs: serde_json::json!({}),
        headers: serde_json::json!({}),
        enabled: true,
        ..Default::default()
    };
    assert!(
        sqsbeat::store::entries::insert(&store, &row, false)
            .await
            .unwrap()
    );
    drop(store);
    let paths = sqsbeat::entry::file::SchedulePaths {
        paths: vec![schedules],
        named: true,
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let prepared = sqsbeat::runtime::prepare(&config, &paths, None, &shutdown)
        .await
        .unwrap()
        .expect("the clashing row is set aside, run starts");
    let x: Vec<_> = prepared.entries.iter().filter(|e| e.name == "x").collect();
    assert_eq!(x.len(), 1);
    assert_eq!(&*x[0].task, "app.file", "the file's definition fires");
}

/// The table is read a page at a time: every row of a table longer than a
/// page loads, in name order, and a row that does not validate is reported
/// on whichever page it falls, the others loading around it.
async fn a_table_longer_than_a_page_loads_every_row(h: crate::harness::Harness) {
    let names: Vec<String> = (0..4_500).map(|i| format!("r{i:05}")).collect();
    for n in &names {
        let row = sqsbeat::store::entries::EntryRow {
            name: n.clone(),
            task: "app.t".into(),
            every: Some(if n == "r02001" { "soon" } else { "1m" }.into()),
            args: serde_json::json!([]),
            kwargs: serde_json::json!({}),
            headers: serde_json::json!({}),
            enabled: true,
            ..Default::default()
        };
        assert!(
            sqsbeat::store::entries::insert(&h.store, &row, false)
                .await
                .unwrap()
        );
    }
    let ctx = sqsbeat::entry::Context::default();
    let loaded = sqsbeat::runtime::reload::load_table(&h.store, &ctx)
        .await
        .unwrap();
    let loaded_names: Vec<&str> = loaded.entries.iter().map(|e| e.name.as_str()).collect();
    let expected: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| *n != "r02001")
        .collect();
    assert_eq!(loaded_names, expected);
    assert_eq!(loaded.names.len(), 4_500);
    assert_eq!(loaded.diagnostics.len(), 1, "{:?}", loaded.diagnostics);
    assert_eq!(loaded.diagnostics[0].entry.as_deref(), Some("r02001"));
}

#[tokio::test]
async fn a_table_longer_than_a_page_loads_every_row_sqlite() {
    a_table_longer_than_a_page_loads_every_row(
        crate::harness::Harness::sqlite(Default::default()).await,
    )
    .await
}

#[tokio::test]
async fn a_table_longer_than_a_page_loads_every_row_postgres() {
    a_table_longer_than_a_page_loads_every_row(
        crate::harness::Harness::postgres(Default::default()).await,
    )
    .await
}

/// SQLite reads a page as one JSON value only when every row of it reads
/// plainly; a row written by hand with a wrong type (a text priority, args
/// that are not UTF-8) sends its page down the row-by-row read. Both such
/// rows here open or close a page: each is reported, and every other row
/// of every page loads, none twice.
#[tokio::test]
async fn hand_written_rows_that_do_not_read_plainly_on_page_edges_lose_no_other_row_sqlite() {
    let h = crate::harness::Harness::sqlite(Default::default()).await;
    h.exec(
        "",
        "INSERT INTO entries (name, task, every, args, kwargs, headers, enabled)
           WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < 4499)
           SELECT printf('r%05d', i), 'app.t', '1m', '[]', '{}', '{}', 1 FROM c;
         UPDATE entries SET priority = 'high' WHERE name = 'r02000';
         UPDATE entries SET args = CAST(X'5B80' AS TEXT) WHERE name = 'r03999';",
    )
    .await;
    let ctx = sqsbeat::entry::Context::default();
    let loaded = sqsbeat::runtime::reload::load_table(&h.store, &ctx)
        .await
        .unwrap();
    let loaded_names: Vec<&str> = loaded.entries.iter().map(|e| e.name.as_str()).collect();
    let expected: Vec<String> = (0..4_500)
        .map(|i| format!("r{i:05}"))
        .filter(|n| n != "r02000" && n != "r03999")
        .collect();
    assert_eq!(loaded_names, expected);
    let bad: Vec<Option<&str>> = loaded
        .diagnostics
        .iter()
        .map(|d| d.entry.as_deref())
        .collect();
    assert_eq!(
        bad,
        [Some("r02000"), Some("r03999")],
        "{:?}",
        loaded.diagnostics
    );
}
