//! The host's wall clock stepping under a running sqsbeat, through
//! libfaketime (the monotonic clock left alone, as a real step leaves it):
//! forward by 60 s, then back by 20 s. Forward, the skipped slots are late
//! and each entry's catch_up decides, every one recorded; back, no decided
//! slot fires again, firing resumes at the next slot after the last one
//! decided, and both steps are logged.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqsbeat::wire::celery::fire_task_id;

use crate::stack::{self, json_lines};

/// libfaketime's preload library (Debian: package `faketime`).
pub(crate) fn libfaketime() -> PathBuf {
    let candidates = std::env::var("SQSBEAT_LIBFAKETIME")
        .into_iter()
        .map(PathBuf::from)
        .chain(
            [
                "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
                "/usr/lib/faketime/libfaketime.so.1",
                "/usr/local/lib/faketime/libfaketime.so.1",
            ]
            .map(PathBuf::from),
        );
    candidates.into_iter().find(|p| p.exists()).expect(
        "the clock test needs libfaketime: `apt-get install faketime` (scripts/test installs it when run as root), or set SQSBEAT_LIBFAKETIME",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn clock_steps_fire_nothing_twice_and_leave_no_silent_gap() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_moto, endpoint) = stack::moto(d);
    stack::create_queue(&endpoint, "clk");
    let _worker = stack::worker(d, &endpoint, "clk", "e2e.all,e2e.latest");
    let schedule = d.join("s.toml");
    std::fs::write(
        &schedule,
        "[defaults]\nqueue = \"clk\"\ngrace = \"2s\"\n\n[entries.all]\ntask = \"e2e.all\"\nevery = \"1s\"\ncatch_up = \"all\"\n\n[entries.latest]\ntask = \"e2e.latest\"\nevery = \"1s\"\ncatch_up = \"latest\"\n",
    )
    .unwrap();
    let offset = d.join("offset");
    std::fs::write(&offset, "+0").unwrap();
    let mut cmd = stack::sqsbeat_command(d, &endpoint, &schedule);
    cmd.env("LD_PRELOAD", libfaketime())
        .env("FAKETIME_TIMESTAMP_FILE", &offset)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("sqsbeat.log")).unwrap());
    let mut beat = stack::Proc {
        child: cmd.spawn().expect("start sqsbeat"),
    };
    let log = || json_lines(&d.join("sqsbeat.log"));
    let sent_slots = || -> Vec<(String, DateTime<Utc>)> {
        log()
            .into_iter()
            .filter(|l| l["message"] == "sent")
            .map(|l| {
                let slot = DateTime::parse_from_rfc3339(l["slot"].as_str().unwrap())
                    .unwrap()
                    .to_utc();
                (l["entry"].as_str().unwrap_or_default().to_string(), slot)
            })
            .collect()
    };
    stack::wait_for("first fires", Duration::from_secs(30), || {
        sent_slots().len() >= 4
    });
    tokio::time::sleep(Duration::from_secs(2)).await;

    std::fs::write(&offset, "+60").unwrap();
    stack::wait_log(
        d,
        "sqsbeat.log",
        Duration::from_secs(10),
        "the forward step",
        |l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("wall clock jumped forward"))
        },
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before_back = sent_slots();
    let last_decided = before_back.iter().map(|s| s.1).max().unwrap();

    std::fs::write(&offset, "+40").unwrap();
    let back = stack::wait_log(
        d,
        "sqsbeat.log",
        Duration::from_secs(10),
        "the back step",
        |l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("wall clock stepped back"))
        },
    );
    let step = back["step_s"].as_f64().unwrap();
    assert!((-21.5..=-18.5).contains(&step), "step_s {step}");
    // For the 20 s the clock needs to reach the decided slots again,
    // nothing is sent (each would be a duplicate); then firing resumes.
    tokio::time::sleep(Duration::from_secs(16)).await;
    let after_gap = sent_slots();
    let n_back = before_back.len();
    let during_gap: Vec<_> = after_gap[n_back.min(after_gap.len())..].to_vec();
    assert!(
        during_gap.iter().all(|s| s.1 > last_decided),
        "a slot decided before the back step was sent again: {during_gap:?}"
    );
    stack::wait_for("fires after the back step", Duration::from_secs(15), || {
        sent_slots().iter().any(|s| s.1 > last_decided)
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        beat.terminate(Duration::from_secs(20))
            .is_some_and(|s| s.success()),
        "sqsbeat stops cleanly"
    );

    // The ledger: each entry's slots consecutive, each decided once, none
    // left undecided; the 60 s skip is sent by `all` and missed by
    // `latest`, with the reason.
    let ledger = stack::ledger(None, d).await;
    for entry in ["all", "latest"] {
        let rows: Vec<_> = ledger.iter().filter(|r| r.0 == entry).collect();
        // At least the 60 s skipped forward, and slots on either side.
        assert!(rows.len() > 62, "{entry}: {} slots", rows.len());
        for w in rows.windows(2) {
            assert_eq!(
                (w[1].1 - w[0].1).num_milliseconds(),
                1000,
                "{entry}: gap between {} and {}",
                w[0].1,
                w[1].1
            );
        }
    }
    let count = |entry: &str, outcome: &str| {
        ledger
            .iter()
            .filter(|r| r.0 == entry && r.2 == outcome)
            .count()
    };
    assert_eq!(count("all", "missed"), 0);
    assert!(count("latest", "missed") >= 55, "{ledger:?}");
    assert_eq!(
        ledger.iter().filter(|r| r.2 == "claimed").count(),
        0,
        "undecided claims left"
    );

    // The worker ran each sent fire exactly once.
    let sent: BTreeSet<String> = ledger
        .iter()
        .filter(|r| r.2 == "sent")
        .map(|r| fire_task_id(&r.0, r.1).to_string())
        .collect();
    let records = stack::wait_executed(d, Duration::from_secs(60), &sent);
    let runs = stack::executed_runs(&records, &sent);
    let lost = sent.iter().filter(|id| !runs.contains_key(*id)).count();
    let twice = runs.values().filter(|n| **n > 1).count();
    eprintln!(
        "clock steps: +60 s then -20 s; {} slots, {} sent, {} missed by catch_up, {} executed, {} lost, {} executed twice",
        ledger.len(),
        sent.len(),
        ledger.iter().filter(|r| r.2 == "missed").count(),
        runs.len(),
        lost,
        twice
    );
    assert_eq!(lost, 0);
    assert_eq!(twice, 0, "a fire ran twice across a clock step");
}

/// Regression: one host's clock jumping a year ahead for a few seconds made
/// every replica silent for a year (cursors only move forward). Now the
/// replica checks its clock against PostgreSQL's: it stops leading and
/// decides nothing while they disagree, and no cursor or slot ends up ahead
/// of the true time.
#[tokio::test(flavor = "multi_thread")]
async fn a_host_clock_a_year_ahead_decides_nothing_and_leaves_no_cursor_ahead_postgres() {
    let db = crate::pg::TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_moto, endpoint) = stack::moto(d);
    stack::create_queue(&endpoint, "clk");
    let schedule = d.join("s.toml");
    std::fs::write(
        &schedule,
        "[entries.tick]\ntask = \"e2e.tick\"\nevery = \"1s\"\nqueue = \"clk\"\n",
    )
    .unwrap();
    let offset = d.join("offset");
    std::fs::write(&offset, "+0").unwrap();
    let mut cmd = stack::sqsbeat_command(d, &endpoint, &schedule);
    cmd.env("SQSBEAT_DATABASE_URL", &db.url)
        .env("LD_PRELOAD", libfaketime())
        .env("FAKETIME_TIMESTAMP_FILE", &offset)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("sqsbeat.log")).unwrap());
    let mut beat = stack::Proc {
        child: cmd.spawn().expect("start sqsbeat"),
    };
    let sent_count = || async {
        stack::ledger(Some(&db.url), d)
            .await
            .iter()
            .filter(|r| r.2 == "sent")
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sent_count().await < 3 {
        assert!(std::time::Instant::now() < deadline, "no fires at first");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::write(&offset, "+365d").unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    std::fs::write(&offset, "+0").unwrap();
    let returned = Utc::now();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let resumed = stack::ledger(Some(&db.url), d)
            .await
            .iter()
            .any(|r| r.2 == "sent" && r.1 > returned);
        if resumed {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "firing did not resume after the clock came back: {}",
            std::fs::read_to_string(d.join("sqsbeat.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        beat.terminate(Duration::from_secs(20))
            .is_some_and(|s| s.success())
    );
    let now = Utc::now();
    let ledger = stack::ledger(Some(&db.url), d).await;
    let latest = ledger.iter().map(|r| r.1).max().unwrap();
    assert!(latest <= now, "a slot ahead of the true time: {latest}");
    let s = sqsbeat::store::PgStore::connect(&db.url, "sqsbeat")
        .await
        .unwrap();
    let cursor: DateTime<Utc> = sqlx::query_scalar("SELECT max(cursor) FROM entry_state")
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert!(cursor <= now, "a cursor ahead of the true time: {cursor}");
}
