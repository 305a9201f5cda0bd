//! django-celery-beat's tables as a source of entries, against the real
//! thing: Django and django-celery-beat from PyPI (the test venv), their
//! migrations applied to a fresh PostgreSQL database, rows created and
//! edited through the ORM (tests/fixtures/django/rows.py). Judged by the
//! Django tables, the ledger, the sink's record and a Celery worker's.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use sqlx::Row;
use sqsbeat::config::DjangoCeleryBeat;
use sqsbeat::entry::file::{Loaded, SchedulePaths};
use sqsbeat::entry::{Context, Entry};
use sqsbeat::runtime::reload;
use sqsbeat::store::django;
use sqsbeat::wire::celery::fire_task_id;

use crate::harness::{Harness, at};
use crate::pg::TestDb;
use crate::stack;

/// A test database with django-celery-beat's tables, migrated by Django.
struct DjangoDb {
    db: TestDb,
    url: String,
}

impl DjangoDb {
    async fn new() -> Self {
        let db = TestDb::new().await;
        rows_py(&db.url, &["migrate"]);
        let url = db.url.clone();
        DjangoDb { db, url }
    }

    fn url(&self) -> &str {
        &self.url
    }

    /// Runs ORM code (tests/fixtures/django/rows.py's helpers in scope);
    /// returns what it put in `out`.
    fn orm(&self, code: &str) -> Value {
        orm(&self.url, code)
    }

    /// (name, enabled, last_run_at, total_run_count) of every task, by name.
    async fn tasks(&self) -> Vec<(String, bool, Option<DateTime<Utc>>, i32)> {
        let pool = sqlx::PgPool::connect(self.url()).await.unwrap();
        let rows = sqlx::query(
            "SELECT name, enabled, last_run_at, total_run_count
               FROM public.django_celery_beat_periodictask ORDER BY name",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        rows.iter()
            .map(|r| {
                (
                    r.get("name"),
                    r.get("enabled"),
                    r.get("last_run_at"),
                    r.get("total_run_count"),
                )
            })
            .collect()
    }

    async fn task(&self, name: &str) -> (bool, Option<DateTime<Utc>>, i32) {
        let all = self.tasks().await;
        let (_, e, l, n) = all
            .into_iter()
            .find(|t| t.0 == name)
            .unwrap_or_else(|| panic!("no task {name}"));
        (e, l, n)
    }
}

fn rows_py(url: &str, args: &[&str]) -> String {
    let script = stack::repo().join("tests/fixtures/django/rows.py");
    let out = Command::new(stack::python())
        .arg(script)
        .args(args)
        .env("DATABASE_URL", url)
        .output()
        .expect("run tests/fixtures/django/rows.py");
    assert!(
        out.status.success(),
        "rows.py {}: {}",
        args.first().unwrap_or(&""),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs ORM code against the database at `url` (see [`DjangoDb::orm`]).
fn orm(url: &str, code: &str) -> Value {
    serde_json::from_str(&rows_py(url, &["exec", code])).unwrap()
}

fn public() -> DjangoCeleryBeat {
    DjangoCeleryBeat {
        schema: "public".into(),
    }
}

/// Every source, as `run` loads it, with `files` as the schedule files.
async fn load(h: &Harness, files: Loaded) -> (Vec<Entry>, Vec<String>) {
    let (loaded, aside) =
        reload::load_sources(&h.store, files, &Context::default(), Some(&public()), &[])
            .await
            .unwrap();
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    (
        loaded.entries,
        aside.iter().map(|d| d.to_string()).collect(),
    )
}

/// The headers of a sent message (base64 envelope, as kombu's).
fn headers(body: &str) -> Value {
    let env = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    let env: Value = serde_json::from_slice(&env).unwrap();
    env["headers"].clone()
}

const T: &str = "2026-11-21T10:00:00Z";

#[tokio::test]
async fn store_reads_rows_the_orm_wrote_and_writes_runs_back_without_bumping_last_update() {
    let dj = DjangoDb::new().await;
    let ids = dj.orm(&format!(
        r#"
tick = task("tick", "app.tick", interval=interval(10), start_time=at("{T}"), kwargs={{"n": 1}},
            headers={{"tenant": "acme"}}, queue="reports", priority=3, expire_seconds=30)
paris = task("paris", "app.paris", crontab=crontab(minute="30", hour="9", tz="Europe/Paris"))
once = task("once", "app.once", clocked=clocked("2026-11-21T10:00:15Z"), one_off=True)
dawn = task("dawn", "app.dawn", solar=solar())
broken = task("broken", "app.broken", interval=interval(1, "minutes"), args="[1,")
forever = task("forever", "app.forever", interval=interval(1, "minutes"))
out = {{"tick": tick.id, "once": once.id, "dawn": dawn.id, "broken": broken.id, "forever": forever.id}}
"#
    ));
    // A value PostgreSQL holds but sqsbeat cannot use, written by hand.
    let pool = sqlx::PgPool::connect(dj.url()).await.unwrap();
    sqlx::query("UPDATE public.django_celery_beat_periodictask SET expires = 'infinity' WHERE name = 'forever'")
        .execute(&pool)
        .await
        .unwrap();
    let dj_url = dj.url.clone();
    let h = Harness::postgres_on(dj.db, at(T)).await;
    let rows = django::list(&h.store, "public").await.unwrap();
    let (rows, unreadable): (Vec<_>, Vec<_>) = rows.into_iter().partition(Result::is_ok);
    let unreadable: Vec<(i64, String)> = unreadable
        .into_iter()
        .filter_map(Result::err)
        .map(|u| (u.id, u.name))
        .collect();
    assert_eq!(
        unreadable,
        [(ids["forever"].as_i64().unwrap(), "forever".to_string())],
        "one unreadable row, named; the others read"
    );
    let rows: Vec<django::PeriodicTaskRow> = rows.into_iter().map(Result::unwrap).collect();
    let tick = rows.iter().find(|r| r.name == "tick").unwrap();
    assert_eq!(tick.id, ids["tick"].as_i64().unwrap());
    assert_eq!(
        (
            tick.task.as_str(),
            tick.kwargs.as_deref(),
            tick.headers.as_deref()
        ),
        (
            "app.tick",
            Some(r#"{"n": 1}"#),
            Some(r#"{"tenant": "acme"}"#)
        )
    );
    assert_eq!(
        (tick.queue.as_deref(), tick.priority, tick.expire_seconds),
        (Some("reports"), Some(3), Some(30))
    );
    assert_eq!(tick.start_time, Some(at(T)));
    assert_eq!(
        tick.interval.as_ref().map(|i| (i.every, i.period.as_str())),
        Some((10, "seconds"))
    );
    let paris = rows.iter().find(|r| r.name == "paris").unwrap();
    assert_eq!(
        paris.crontab.as_ref().map(|c| c.timezone.as_str()),
        Some("Europe/Paris")
    );
    let once = rows.iter().find(|r| r.name == "once").unwrap();
    assert_eq!(
        (once.clocked, once.one_off),
        (Some(at("2026-11-21T10:00:15Z")), true)
    );
    assert!(rows.iter().all(|r| r.date_changed.is_some()));

    // As entries: the solar row and the bad row are set aside, named.
    let (entries, aside) = load(&h, Loaded::default()).await;
    let names: BTreeSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["once", "paris", "tick"]));
    assert_eq!(aside.len(), 3, "{aside:?}");
    let forever = format!(
        "public.django_celery_beat_periodictask id {id}: entry 'forever': cannot read table django_celery_beat_periodictask, column expires, row id {id}: infinity is not an instant sqsbeat can use",
        id = ids["forever"]
    );
    assert!(aside.iter().any(|a| a.starts_with(&forever)), "{aside:?}");
    let dawn = format!(
        "public.django_celery_beat_periodictask id {}: entry 'dawn': solar schedules (sunrise at 40.712800, -74.006000) are not supported",
        ids["dawn"]
    );
    let broken = format!(
        "public.django_celery_beat_periodictask id {}: entry 'broken': args is not valid JSON",
        ids["broken"]
    );
    assert!(aside.iter().any(|a| a.starts_with(&dawn)), "{aside:?}");
    assert!(aside.iter().any(|a| a.starts_with(&broken)), "{aside:?}");

    // An edit through the ORM moves last_update; a write-back does not
    // (else every replica would reload after every fire).
    let before = django::last_update(&h.store, "public").await.unwrap();
    assert!(before.is_some());
    orm(&dj_url, r#"edit("tick", kwargs={"n": 2})"#);
    let edited = django::last_update(&h.store, "public").await.unwrap();
    assert!(edited > before, "{edited:?} after {before:?}");
    let link = |name: &str| {
        entries
            .iter()
            .find(|e| e.name == name)
            .unwrap()
            .django()
            .cloned()
            .unwrap()
    };
    let runs = [
        django::Run {
            link: link("tick"),
            at: at("2026-11-21T10:00:00.2Z"),
        },
        django::Run {
            link: link("tick"),
            at: at("2026-11-21T10:00:10.1Z"),
        },
        django::Run {
            link: link("once"),
            at: at("2026-11-21T10:00:15.1Z"),
        },
    ];
    django::record_runs(&h.store, &runs).await.unwrap();
    assert_eq!(
        django::last_update(&h.store, "public").await.unwrap(),
        edited
    );
    let pool = sqlx::PgPool::connect(&dj_url).await.unwrap();
    let state = |name: &'static str| {
        let pool = pool.clone();
        async move {
            let r = sqlx::query(
                "SELECT enabled, last_run_at, total_run_count FROM public.django_celery_beat_periodictask WHERE name = $1",
            )
            .bind(name)
            .fetch_one(&pool)
            .await
            .unwrap();
            (
                r.get::<bool, _>(0),
                r.get::<Option<DateTime<Utc>>, _>(1),
                r.get::<i32, _>(2),
            )
        }
    };
    assert_eq!(
        state("tick").await,
        (true, Some(at("2026-11-21T10:00:10.1Z")), 2)
    );
    assert_eq!(
        state("once").await,
        (false, Some(at("2026-11-21T10:00:15.1Z")), 0),
        "a sent one-off is disabled, its count reset as django-celery-beat does"
    );
    // A late retry of an older run never moves last_run_at back.
    django::record_runs(&h.store, &runs[..1]).await.unwrap();
    assert_eq!(
        state("tick").await,
        (true, Some(at("2026-11-21T10:00:10.1Z")), 3)
    );
}

#[tokio::test]
async fn django_rows_fire_through_the_ledger_and_are_written_back() {
    let dj = DjangoDb::new().await;
    dj.orm(&format!(
        r#"
task("tick", "app.tick", interval=interval(10), start_time=at("{T}"), kwargs={{"n": 1}})
task("cron", "app.cron", crontab=crontab(minute="*"), start_time=at("{T}"))
task("once", "app.once", interval=interval(20), start_time=at("2026-11-21T10:00:05Z"), one_off=True)
task("clocked", "app.clocked", clocked=clocked("2026-11-21T10:00:15Z"), one_off=True)
task("late", "app.late", clocked=clocked("2026-11-21T09:59:30Z"), one_off=True)
"#
    ));
    let url = dj.url.clone();
    let h = Harness::postgres_on(dj.db, at("2026-11-21T09:59:59.5Z")).await;
    let (entries, aside) = load(&h, Loaded::default()).await;
    assert!(aside.is_empty(), "{aside:?}");
    let driver = h.driver();
    let epoch = h.new_epoch().await;
    let mut term = driver.begin(Arc::new(entries), epoch).await.unwrap();
    let t0 = at(T);
    for s in 0..=70 {
        let t = t0 + Duration::seconds(s);
        h.clock.set(t);
        term.turn(t).await.unwrap();
        term.drain().await;
    }
    drop(term);

    let secs = |xs: &[i64]| -> Vec<DateTime<Utc>> {
        xs.iter().map(|s| t0 + Duration::seconds(*s)).collect()
    };
    let want: BTreeSet<uuid::Uuid> = [
        ("tick", secs(&[0, 10, 20, 30, 40, 50, 60, 70])),
        ("cron", secs(&[0, 60])),
        ("once", secs(&[5])),
        ("clocked", secs(&[15])),
        // Saved after its time (the row's date_changed is today): it still
        // fires once, as django-celery-beat sends a past clocked task.
        ("late", secs(&[-30])),
    ]
    .iter()
    .flat_map(|(name, slots)| slots.iter().map(|s| fire_task_id(name, *s)))
    .collect();
    let sent = h.sink.accepted();
    let got: BTreeSet<uuid::Uuid> = sent.iter().map(|a| a.message.task_id).collect();
    assert_eq!(got, want, "every slot once, with its deterministic id");
    assert_eq!(sent.len(), want.len(), "no slot twice");
    let tick0 = sent
        .iter()
        .find(|a| a.message.task_id == fire_task_id("tick", t0))
        .unwrap();
    let h0 = headers(&tick0.message.body);
    assert_eq!(
        (&h0["periodic_task_name"], &h0["task"]),
        (&Value::from("tick"), &Value::from("app.tick")),
        "{h0}"
    );
    assert_eq!(h0["celery_beat_task"], true);

    // The Django tables show what ran; one-offs are disabled.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let rows: Vec<(String, bool, Option<DateTime<Utc>>, i32)> = sqlx::query_as(
        "SELECT name, enabled, last_run_at, total_run_count FROM public.django_celery_beat_periodictask ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("clocked".into(), false, Some(t0 + Duration::seconds(15)), 0),
            ("cron".into(), true, Some(t0 + Duration::seconds(60)), 2),
            ("late".into(), false, Some(t0), 0),
            ("once".into(), false, Some(t0 + Duration::seconds(5)), 0),
            ("tick".into(), true, Some(t0 + Duration::seconds(70)), 8),
        ]
    );
    let ledger = h.ledger().await;
    assert_eq!(ledger.len(), want.len());
    assert!(ledger.iter().all(|(_, _, outcome, _)| outcome == "sent"));

    // A restart: the rows read again, a new term from the ledger. The
    // one-offs are done; tick goes on at its next slot, nothing twice.
    let (entries, _) = load(&h, Loaded::default()).await;
    assert!(
        entries
            .iter()
            .filter(|e| ["once", "clocked", "late"].contains(&e.name.as_str()))
            .all(|e| !e.enabled)
    );
    let epoch = h.new_epoch().await;
    let mut term = driver.begin(Arc::new(entries), epoch).await.unwrap();
    for s in 71..=80 {
        let t = t0 + Duration::seconds(s);
        h.clock.set(t);
        term.turn(t).await.unwrap();
        term.drain().await;
    }
    let after: Vec<uuid::Uuid> = h.sink.accepted()[sent.len()..]
        .iter()
        .map(|a| a.message.task_id)
        .collect();
    assert_eq!(after, [fire_task_id("tick", t0 + Duration::seconds(80))]);
}

#[tokio::test]
async fn a_solar_row_and_a_bad_row_are_set_aside_while_the_rest_fire_and_run_starts() {
    let dj = DjangoDb::new().await;
    dj.orm(&format!(
        r#"
task("tick", "app.tick", interval=interval(10), start_time=at("{T}"))
task("dawn", "app.dawn", solar=solar())
task("reserved", "app.x", interval=interval(10), headers={{"eta": "soon"}})
task("odd", "app.x", interval=interval(1500, "microseconds"))
"#
    ));
    let url = dj.url().to_string();
    // `run` starts: prepare sets the rows aside instead of refusing.
    let env = |k: &str| match k {
        "SQSBEAT_DATABASE_URL" => Some(url.clone()),
        "SQSBEAT_DJANGO_CELERY_BEAT_ENABLED" => Some("true".into()),
        _ => None,
    };
    let config = sqsbeat::config::parse("none", None, &env).unwrap();
    let paths = SchedulePaths {
        paths: vec![tempfile::tempdir().unwrap().path().join("absent")],
        named: false,
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let prepared = sqsbeat::runtime::prepare(&config, &paths, None, &shutdown)
        .await
        .unwrap()
        .expect("bad rows are set aside, run starts with no schedule file");
    let names: Vec<&str> = prepared.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["tick"]);
    drop(prepared);

    let h = Harness::postgres_on(dj.db, at("2026-11-21T09:59:59.5Z")).await;
    let (entries, aside) = load(&h, Loaded::default()).await;
    let named: BTreeSet<&str> = aside
        .iter()
        .filter_map(|a| a.split("entry '").nth(1)?.split('\'').next())
        .collect();
    assert_eq!(
        named,
        BTreeSet::from(["dawn", "odd", "reserved"]),
        "{aside:?}"
    );
    assert!(
        aside
            .iter()
            .all(|a| a.starts_with("public.django_celery_beat_periodictask id ")),
        "{aside:?}"
    );
    let driver = h.driver();
    let mut term = driver
        .begin(Arc::new(entries), h.new_epoch().await)
        .await
        .unwrap();
    for s in 0..=20 {
        let t = at(T) + Duration::seconds(s);
        h.clock.set(t);
        term.turn(t).await.unwrap();
        term.drain().await;
    }
    let ids: Vec<uuid::Uuid> = h.accepted_ids();
    let slots = [0, 10, 20].map(|s| fire_task_id("tick", at(T) + Duration::seconds(s)));
    assert_eq!(ids, slots);
}

#[tokio::test]
async fn a_django_row_named_like_a_file_entry_is_set_aside_and_the_file_entry_fires() {
    let dj = DjangoDb::new().await;
    let id = dj.orm(&format!(
        r#"out = task("x", "app.from_django", interval=interval(10), start_time=at("{T}")).id"#
    ));
    let h = Harness::postgres_on(dj.db, at("2026-11-21T09:59:59.5Z")).await;
    let files = sqsbeat::entry::file::parse_str(
        "schedules/app.toml",
        "[entries.x]\ntask = \"app.from_file\"\nevery = \"10s\"\n",
        &Context::default(),
    );
    let (entries, aside) = load(&h, files).await;
    assert_eq!(
        aside,
        [format!(
            "public.django_celery_beat_periodictask id {id}: entry 'x': also defined in schedules/app.toml:1; that definition fires and this row is not loaded (rename one of them)"
        )]
    );
    assert_eq!(entries.len(), 1);
    let driver = h.driver();
    let mut term = driver
        .begin(Arc::new(entries), h.new_epoch().await)
        .await
        .unwrap();
    let t = h.at(T);
    term.turn(t).await.unwrap();
    term.drain().await;
    let sent = h.sink.accepted();
    assert_eq!(sent.len(), 1);
    assert_eq!(headers(&sent[0].message.body)["task"], "app.from_file");
}

/// Waits until the published entry set satisfies `done`.
async fn published(
    rx: &mut tokio::sync::watch::Receiver<Arc<Vec<Entry>>>,
    done: impl Fn(&[Entry]) -> bool,
) -> std::time::Instant {
    tokio::time::timeout(StdDuration::from_secs(10), async {
        loop {
            if done(&rx.borrow_and_update()) {
                return std::time::Instant::now();
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("the change reaches the reload within seconds")
}

// Several threads: the watcher and the reload run while the ORM script does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_change_reaches_a_running_reload_within_seconds_without_restart() {
    let dj = DjangoDb::new().await;
    dj.orm(r#"task("tick", "app.tick", interval=interval(10))"#);
    let url = dj.url.clone();
    let h = Harness::postgres_on(dj.db, at(T)).await;
    let (entries, _) = load(&h, Loaded::default()).await;
    let (tx, mut rx) = tokio::sync::watch::channel(Arc::new(entries));
    let changed = Arc::new(tokio::sync::Notify::new());
    let stop = tokio_util::sync::CancellationToken::new();
    let paths = SchedulePaths {
        paths: vec![],
        named: false,
    };
    let watcher = tokio::spawn(reload::watch_django(
        h.store.clone(),
        "public".into(),
        changed.clone(),
        stop.clone(),
    ));
    let reloader = tokio::spawn(reload::reload_schedule(
        h.store.clone(),
        paths,
        Context::default(),
        changed,
        tx,
        Some(public()),
        stop.clone(),
    ));
    // As the admin's change form does: load, set, save; and a new row.
    orm(
        &url,
        r#"
edit("tick", interval=interval(5), kwargs={"n": 2})
task("added", "app.added", crontab=crontab(minute="*/5", tz="Asia/Tokyo"))
"#,
    );
    let saved = std::time::Instant::now();
    let seen = published(&mut rx, |set| {
        set.iter().any(|e| e.name == "added")
            && set
                .iter()
                .any(|e| e.name == "tick" && e.kwargs().get("n") == Some(&Value::from(2)))
    })
    .await;
    eprintln!(
        "django-celery-beat reload: ORM save -> entries published in {:?}",
        seen - saved.min(seen)
    );
    // Disabled in the admin, then deleted.
    orm(&url, r#"edit("tick", enabled=False)"#);
    published(&mut rx, |set| {
        set.iter().any(|e| e.name == "tick" && !e.enabled)
    })
    .await;
    orm(&url, r#"PeriodicTask.objects.get(name="added").delete()"#);
    published(&mut rx, |set| !set.iter().any(|e| e.name == "added")).await;
    stop.cancel();
    let _ = tokio::join!(watcher, reloader);
}

/// django-celery-beat bumps `last_update` in a task's `pre_save`: in
/// autocommit the bump commits before the row does, and the reload it
/// woke could read the row as it was, the change then unseen until the
/// full read 5 minutes later. The watcher wakes the reload once more,
/// `DJANGO_SETTLE` after it saw the bump, with nothing else changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_update_bump_wakes_the_reload_again_once_the_row_has_committed() {
    let dj = DjangoDb::new().await;
    dj.orm(r#"task("tick", "app.tick", interval=interval(10))"#);
    let url = dj.url.clone();
    let h = Harness::postgres_on(dj.db, at(T)).await;
    let changed = Arc::new(tokio::sync::Notify::new());
    let stop = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn(reload::watch_django(
        h.store.clone(),
        "public".into(),
        changed.clone(),
        stop.clone(),
    ));
    let woken = |what: &'static str| {
        let changed = changed.clone();
        async move {
            tokio::time::timeout(StdDuration::from_secs(10), changed.notified())
                .await
                .unwrap_or_else(|_| panic!("{what}"));
            std::time::Instant::now()
        }
    };
    woken("the first reading wakes the reload").await;
    // What pre_save does before the row's own UPDATE.
    let before = std::time::Instant::now();
    orm(&url, "PeriodicTasks.update_changed()");
    woken("the bump wakes the reload").await;
    let again = woken("woken again, long before the full read").await;
    assert!(
        again - before >= reload::DJANGO_SETTLE,
        "a wake-up of its own, {:?} after the bump",
        again - before
    );
    stop.cancel();
    watcher.await.unwrap();
}

/// `sqsbeat run` with PostgreSQL, django-celery-beat enabled and no
/// schedule file at all; JSON logs to `dir/sqsbeat.log`.
fn sqsbeat_django_only(dir: &Path, endpoint: &str, db: &str) -> stack::Proc {
    let log = std::fs::File::create(dir.join("sqsbeat.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sqsbeat"))
        .args(["--log-format", "json", "run"])
        .current_dir(dir)
        .env("SQSBEAT_SQS_ENDPOINT_URL", endpoint)
        .env("SQSBEAT_SQS_REGION", "us-east-1")
        .env("SQSBEAT_SQS_CREATE_MISSING_QUEUES", "true")
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env("SQSBEAT_HTTP_ADDR", "127.0.0.1:0")
        .env_remove("DATABASE_URL")
        .env_remove("SQSBEAT_SCHEDULES_PATHS")
        .env("SQSBEAT_DATABASE_URL", db)
        .env("SQSBEAT_DJANGO_CELERY_BEAT_ENABLED", "true")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start sqsbeat");
    stack::Proc { child }
}

#[test]
fn a_celery_worker_executes_what_django_rows_make_sqsbeat_send() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dj = rt.block_on(DjangoDb::new());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_moto, endpoint) = stack::moto(d);
    let now = Utc::now();
    let start = now + Duration::seconds(4);
    let start = start - Duration::nanoseconds(i64::from(start.timestamp_subsec_nanos()));
    let clocked = start + Duration::seconds(5);
    dj.orm(&format!(
        r#"
task("heartbeat", "examples.tasks.heartbeat", interval=interval(2), start_time=at("{start}"),
     kwargs={{"from": "django"}}, headers={{"tenant": "acme"}}, queue="dj")
task("once", "examples.tasks.settle", clocked=clocked("{clocked}"), one_off=True, queue="dj")
task("dawn", "examples.tasks.warm_cache", solar=solar(), queue="dj")
"#,
        start = start.to_rfc3339(),
        clocked = clocked.to_rfc3339()
    ));
    let _worker = stack::worker(d, &endpoint, "dj", "");
    let mut run = sqsbeat_django_only(d, &endpoint, dj.url());
    stack::wait_log(
        d,
        "sqsbeat.log",
        StdDuration::from_secs(30),
        "a first fire",
        |l| l["message"] == "sent" && l["span"]["entry"] == "heartbeat",
    );

    // A change in the admin while it runs: a new row, and heartbeat off.
    dj.orm(&format!(
        r#"
task("added", "examples.tasks.sync_prices", interval=interval(2), start_time=at("{start}"), queue="dj")
"#,
        start = start.to_rfc3339()
    ));
    let records = stack::wait_records(d, StdDuration::from_secs(40), |recs| {
        let ran = |name: &str| {
            recs.iter()
                .any(|r| r["event"] == "executed" && r["headers"]["periodic_task_name"] == name)
        };
        ran("heartbeat") && ran("once") && ran("added")
    });
    assert!(
        run.terminate(StdDuration::from_secs(20))
            .is_some_and(|s| s.success())
    );
    let names = |recs: &[Value]| -> BTreeSet<String> {
        recs.iter()
            .filter_map(|r| {
                r["headers"]["periodic_task_name"]
                    .as_str()
                    .map(String::from)
            })
            .collect()
    };
    assert_eq!(
        names(&records),
        BTreeSet::from(["added", "heartbeat", "once"].map(String::from)),
        "the row added while running fired; the solar row never did"
    );

    // Every fire the ledger holds as sent ran once, under its
    // deterministic id; the Django table counts them.
    let ledger = rt.block_on(stack::ledger(Some(dj.url()), d));
    let sent: Vec<&(String, DateTime<Utc>, String)> =
        ledger.iter().filter(|(_, _, o)| o == "sent").collect();
    let ids: BTreeSet<String> = sent
        .iter()
        .map(|(e, slot, _)| fire_task_id(e, *slot).to_string())
        .collect();
    let records = stack::wait_executed(d, StdDuration::from_secs(30), &ids);
    let runs = stack::executed_runs(&records, &ids);
    assert_eq!(runs.len(), ids.len(), "every sent fire executed");
    assert!(runs.values().all(|n| *n == 1), "none twice: {runs:?}");
    let heartbeat = records
        .iter()
        .find(|r| r["event"] == "executed" && r["headers"]["periodic_task_name"] == "heartbeat")
        .unwrap();
    assert_eq!(heartbeat["kwargs"], serde_json::json!({"from": "django"}));
    assert_eq!(heartbeat["custom"]["tenant"], "acme");
    assert_eq!(heartbeat["routing_key"], "dj");
    let sent_of = |name: &str| sent.iter().filter(|(e, _, _)| e == name).count() as i32;
    assert_eq!(sent_of("once"), 1);
    assert!(ids.contains(&fire_task_id("once", clocked).to_string()));
    let tasks = rt.block_on(dj.tasks());
    let (enabled, last, n) = rt.block_on(dj.task("once"));
    assert_eq!(
        (enabled, n),
        (false, 0),
        "the one-off is disabled: {tasks:?}"
    );
    assert!(last.is_some_and(|l| l >= clocked), "{tasks:?}");
    for name in ["heartbeat", "added"] {
        let (enabled, last, n) = rt.block_on(dj.task(name));
        assert!(enabled && last.is_some(), "{tasks:?}");
        assert_eq!(n, sent_of(name), "total_run_count of {name}: {tasks:?}");
    }
}

#[tokio::test]
async fn check_reports_the_django_rows_run_would_set_aside() {
    let dj = DjangoDb::new().await;
    let ids = dj.orm(
        r#"
out = {
    "tick": task("tick", "app.tick", interval=interval(10)).id,
    "dawn": task("dawn", "app.dawn", solar=solar()).id,
}
"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cli = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sqsbeat"));
        cmd.args(args)
            .current_dir(d)
            .env_remove("DATABASE_URL")
            .env("SQSBEAT_DATABASE_URL", dj.url())
            .env("SQSBEAT_DJANGO_CELERY_BEAT_ENABLED", "true");
        let out = stack::output_within(&mut cmd, StdDuration::from_secs(60));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(cli(&["migrate"]).0, Some(0));
    let (code, _, err) = cli(&["check"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "public.django_celery_beat_periodictask id {}: entry 'dawn': solar schedules",
            ids["dawn"]
        )),
        "{err}"
    );
    orm(
        dj.url(),
        r#"PeriodicTask.objects.get(name="dawn").delete()"#,
    );
    let (code, out, err) = cli(&["check"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("ok: 1 entries"), "{out}");
    let (code, out, err) = cli(&["next", "--entry", "tick", "--count", "2", "--after", T]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("2026-11-21T10:00:10") && out.contains("2026-11-21T10:00:20"),
        "{out}"
    );
}

/// A trigger on django-celery-beat's table that fails every UPDATE with
/// SQLSTATE `code`: a write-back the database refuses.
async fn refuse_updates(url: &str, code: &str) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION refuse() RETURNS trigger AS $$
         BEGIN RAISE EXCEPTION 'refused for the test' USING ERRCODE = '{code}'; END $$ LANGUAGE plpgsql;
         CREATE TRIGGER refuse BEFORE UPDATE ON public.django_celery_beat_periodictask
           FOR EACH ROW EXECUTE FUNCTION refuse();"
    )))
    .execute(&pool)
    .await
    .unwrap();
}

async fn accept_updates(url: &str) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::raw_sql(
        "DROP TRIGGER refuse ON public.django_celery_beat_periodictask; DROP FUNCTION refuse();",
    )
    .execute(&pool)
    .await
    .unwrap();
}

/// Regression: write-backs that failed were kept and sent again each turn,
/// all of them, forever, even when the database user lacks the UPDATE
/// privilege, which no retry can fix. A refusal for want of a privilege
/// (42501) is logged and not retried; once it is granted, the next fires
/// are written back.
#[tokio::test]
async fn a_write_back_refused_for_want_of_a_privilege_is_not_retried() {
    let dj = DjangoDb::new().await;
    dj.orm(&format!(
        r#"task("tick", "app.tick", interval=interval(10), start_time=at("{T}"))"#
    ));
    let url = dj.url.clone();
    let h = Harness::postgres_on(dj.db, at("2026-11-21T09:59:59.5Z")).await;
    let (entries, _) = load(&h, Loaded::default()).await;
    let driver = h.driver();
    let epoch = h.new_epoch().await;
    let mut term = driver.begin(Arc::new(entries), epoch).await.unwrap();
    refuse_updates(&url, "42501").await;
    let t0 = at(T);
    for s in [0, 10, 20] {
        let t = t0 + Duration::seconds(s);
        h.clock.set(t);
        term.turn(t).await.unwrap();
        term.drain().await;
    }
    // The privilege is granted: the next fire is written back, the three
    // refused ones are not retried.
    accept_updates(&url).await;
    let t = t0 + Duration::seconds(30);
    h.clock.set(t);
    term.turn(t).await.unwrap();
    term.drain().await;
    let t = t0 + Duration::seconds(35);
    h.clock.set(t);
    term.turn(t).await.unwrap();
    term.drain().await;
    assert_eq!(h.sink.accepted().len(), 4, "every fire was sent");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let (last, n): (Option<DateTime<Utc>>, i32) = sqlx::query_as(
        "SELECT last_run_at, total_run_count FROM public.django_celery_beat_periodictask WHERE name = 'tick'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((last, n), (Some(t0 + Duration::seconds(30)), 1));
}

/// Regression: a write-back retried after a failure disabled a one-off row
/// that someone had saved after its fire (enabled again, for one more
/// run). It now disables only a row not changed since; a one-off nobody
/// touched is still disabled by the retry.
#[tokio::test]
async fn a_retried_write_back_leaves_a_one_off_saved_after_its_fire_as_saved() {
    let dj = DjangoDb::new().await;
    dj.orm(
        r#"
task("again", "app.again", clocked=clocked("2026-11-21T10:00:15Z"), one_off=True)
task("once", "app.once", clocked=clocked("2026-11-21T10:00:15Z"), one_off=True)
"#,
    );
    let url = dj.url.clone();
    let h = Harness::postgres_on(dj.db, at("2026-11-21T10:00:14.5Z")).await;
    let (entries, _) = load(&h, Loaded::default()).await;
    let driver = h.driver();
    let epoch = h.new_epoch().await;
    let mut term = driver.begin(Arc::new(entries), epoch).await.unwrap();
    refuse_updates(&url, "57P01").await;
    let fire = h.at("2026-11-21T10:00:15Z");
    term.turn(fire).await.unwrap();
    term.drain().await;
    assert_eq!(h.sink.accepted().len(), 2);
    // The database is back; an admin saves `again`, enabled, for one more
    // run, before the write-back is retried.
    accept_updates(&url).await;
    orm(&url, r#"edit("again", enabled=True)"#);
    term.turn(h.at("2026-11-21T10:00:16Z")).await.unwrap();
    term.drain().await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let rows: Vec<(String, bool, Option<DateTime<Utc>>, i32)> = sqlx::query_as(
        "SELECT name, enabled, last_run_at, total_run_count FROM public.django_celery_beat_periodictask ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("again".into(), true, Some(fire), 0),
            ("once".into(), false, Some(fire), 0),
        ]
    );
}
