//! Restarts against one database: each entry resumes from the ledger and
//! follows its catch_up policy for the slots missed while nothing ran; a
//! disabled entry, re-enabled, does not fire for the time it was disabled.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

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
