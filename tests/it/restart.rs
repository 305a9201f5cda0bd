//! Restarts against one database: each entry resumes from the ledger and
//! follows its catch_up policy for the slots missed while nothing ran; a
//! disabled entry, re-enabled, does not fire for the time it was disabled.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};

use crate::pg::TestDb;
use crate::stack;

fn schedule(toggle_enabled: bool) -> String {
    let entry = |name: &str, extra: &str| {
        format!("[entries.{name}]\ntask = \"r.{name}\"\nevery = \"1s\"\n{extra}\n")
    };
    [
        "[defaults]\nqueue = \"rs\"\ngrace = \"100ms\"\n\n".to_string(),
        entry("all1", "catch_up = \"all\""),
        entry("latest1", "catch_up = \"latest\""),
        entry("none1", "catch_up = \"none\""),
        entry("toggle", &format!("enabled = {toggle_enabled}")),
    ]
    .concat()
}

#[test]
fn restarts_follow_catch_up_and_never_refire_postgres() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new());
    restarts_follow_catch_up(&rt, Some(&db.url));
}

#[test]
fn restarts_follow_catch_up_and_never_refire_sqlite() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    restarts_follow_catch_up(&rt, None);
}

fn restarts_follow_catch_up(rt: &tokio::runtime::Runtime, db_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_moto, endpoint) = stack::moto(d);
    stack::config_creating_queues(d);
    let path = d.join("s.toml");

    // (toggle enabled?) per run; 3 s down between runs.
    let mut windows: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    for (i, enabled) in [true, false, true].into_iter().enumerate() {
        std::fs::write(&path, schedule(enabled)).unwrap();
        let started = Utc::now();
        let mut p = stack::sqsbeat_replica(d, &endpoint, &path, &format!("run{i}.log"), db_url);
        std::thread::sleep(Duration::from_millis(3000));
        let st = p.terminate(Duration::from_secs(10));
        assert!(
            st.is_some_and(|s| s.success()),
            "run {i}: {:?}",
            std::fs::read_to_string(d.join(format!("run{i}.log")))
        );
        windows.push((started, Utc::now()));
        if i < 2 {
            std::thread::sleep(Duration::from_millis(3000));
        }
    }

    let rows = rt.block_on(stack::ledger(db_url, d));
    let mut by_entry: BTreeMap<String, Vec<(DateTime<Utc>, String)>> = BTreeMap::new();
    for (entry, slot, outcome) in rows {
        by_entry.entry(entry).or_default().push((slot, outcome));
    }
    // Slots entirely inside a downtime (older than grace at the restart).
    let down = |t: DateTime<Utc>| {
        windows
            .windows(2)
            .any(|w| t > w[0].1 && t < w[1].0 - chrono::Duration::milliseconds(150))
    };
    for entry in ["all1", "latest1", "none1"] {
        let slots = &by_entry[entry];
        for w in slots.windows(2) {
            assert_eq!(
                (w[1].0 - w[0].0).num_seconds(),
                1,
                "{entry}: every slot decided once, none skipped: {:?} -> {:?}",
                w[0],
                w[1]
            );
        }
        let sent_while_down = slots
            .iter()
            .filter(|(t, o)| down(*t) && o == "sent")
            .count();
        let missed = slots.iter().filter(|(_, o)| o == "missed").count();
        match entry {
            "all1" => assert_eq!(missed, 0, "catch_up = all sends every missed slot"),
            // At most one per restart: none if an on-time slot was due anyway.
            "latest1" => assert!(
                sent_while_down <= 2,
                "catch_up = latest sent {sent_while_down} down-time slots"
            ),
            "none1" => assert_eq!(
                sent_while_down, 0,
                "catch_up = none sends no down-time slot"
            ),
            _ => unreachable!(),
        }
        if entry != "all1" {
            assert!(
                missed >= 4,
                "{entry}: down-time slots are recorded as missed ({missed})"
            );
        }
        assert!(
            slots.iter().all(|(_, o)| o == "sent" || o == "missed"),
            "{entry}: nothing left unconfirmed"
        );
    }
    // The toggle entry: nothing from the end of run 0 until run 2 started.
    let toggle = &by_entry["toggle"];
    let (run0_end, run2_start) = (windows[0].1, windows[2].0);
    let inside: Vec<_> = toggle
        .iter()
        .filter(|(t, _)| *t > run0_end && *t < run2_start)
        .collect();
    assert!(
        inside.is_empty(),
        "a re-enabled entry must not fire for its disabled time: {inside:?}"
    );
    assert!(
        toggle.iter().any(|(t, o)| *t >= run2_start && o == "sent"),
        "it fires again once re-enabled"
    );
}

#[test]
fn a_fire_claimed_but_never_confirmed_is_resent_with_its_task_id() {
    // The state a leader leaves when it dies between claim and confirm.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let slot = (Utc::now() - chrono::Duration::seconds(20))
        .with_nanosecond(0)
        .unwrap();
    let task_id = sqsbeat::wire::celery::fire_task_id("once", slot);
    rt.block_on(async {
        let s = sqsbeat::store::SqliteStore::open(&d.join("sqsbeat.db"))
            .await
            .unwrap();
        let (_lock, epoch) = s.lock_for_run("dead-leader").await.unwrap();
        let store = sqsbeat::store::Store::Sqlite(s);
        let claim = sqsbeat::store::Claim {
            entry: "once".into(),
            slot,
            task_id,
            queue: "rs".into(),
        };
        let cursor = sqsbeat::store::Cursor {
            entry: "once".into(),
            cursor: slot,
            enabled: true,
        };
        store
            .record_decision(epoch, &[claim], &[], &[cursor])
            .await
            .unwrap();
    });
    let (_moto, endpoint) = stack::moto(d);
    stack::config_creating_queues(d);
    let path = d.join("s.toml");
    // catch_up = none and a short grace: only the unconfirmed claim, not
    // the slots missed since, may go out for the past.
    std::fs::write(&path, "[entries.once]\ntask = \"r.once\"\nevery = \"1h\"\nqueue = \"rs\"\ncatch_up = \"none\"\ngrace = \"1s\"\n").unwrap();
    let mut p = stack::sqsbeat_replica(d, &endpoint, &path, "run.log", None);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let sent = loop {
        if let Some(l) = crate::stack::json_lines(&d.join("run.log"))
            .into_iter()
            .find(|l| l["message"] == "sent")
        {
            break l;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            std::fs::read_to_string(d.join("run.log"))
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        p.terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    assert_eq!(
        sent["span"]["task_id"],
        task_id.to_string(),
        "the same task id as the original claim"
    );
    assert_eq!(sent["slot"], slot.to_rfc3339());
    let log = std::fs::read_to_string(d.join("run.log")).unwrap();
    assert!(
        log.contains("re-sending a fire claimed but never confirmed"),
        "{log}"
    );
    let rows = rt.block_on(stack::ledger(None, d));
    let once: Vec<_> = rows.iter().filter(|r| r.0 == "once").collect();
    assert_eq!(once.len(), 1, "{once:?}");
    assert_eq!((once[0].1, once[0].2.as_str()), (slot, "sent"));
}
