//! Two `sqsbeat run` replicas on one database: kill -9 the leader while an
//! entry fires every second; the real worker must have executed every slot,
//! and any duplicate must carry the original's task id.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqsbeat::celery::fire_task_id;

use crate::pg::TestDb;
use crate::stack::{self, Proc, json_lines};

/// Which replica log says it leads now (the newest "became leader").
fn leader_of(d: &std::path::Path, logs: &[String]) -> Option<(usize, i64)> {
    let mut best: Option<(usize, i64)> = None;
    for (i, log) in logs.iter().enumerate() {
        for l in json_lines(&d.join(log)) {
            if l["message"] == "became leader" {
                let epoch = l["epoch"].as_i64().unwrap_or(0);
                if best.is_none_or(|(_, e)| epoch > e) {
                    best = Some((i, epoch));
                }
            }
        }
    }
    best
}

/// Timestamp of the first `sent` in a log after `after`.
fn first_sent_after(d: &std::path::Path, log: &str, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    json_lines(&d.join(log))
        .into_iter()
        .filter(|l| l["message"] == "sent")
        .filter_map(|l| {
            DateTime::parse_from_rfc3339(l["timestamp"].as_str()?)
                .ok()
                .map(|t| t.to_utc())
        })
        .find(|t| *t > after)
}

#[test]
fn kill_9_of_the_leader_loses_no_fire() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_moto, endpoint) = stack::moto(d);
    let schedule = d.join("s.toml");
    std::fs::write(&schedule, "[entries.tick]\ntask = \"e2e.tick\"\nevery = \"1s\"\nqueue = \"fo\"\ncatch_up = \"all\"\ngrace = \"30s\"\n").unwrap();
    stack::config_creating_queues(d);
    let _worker = stack::worker(d, &endpoint, "fo", "e2e.tick");

    let mut logs: Vec<String> = Vec::new();
    let mut procs: Vec<Option<Proc>> = Vec::new();
    let spawn = |logs: &mut Vec<String>, procs: &mut Vec<Option<Proc>>| {
        let log = format!("replica-{}.log", logs.len());
        procs.push(Some(stack::sqsbeat_replica(
            d,
            &endpoint,
            &schedule,
            &log,
            Some(&db.url),
        )));
        logs.push(log);
    };
    spawn(&mut logs, &mut procs);
    spawn(&mut logs, &mut procs);

    // Three in the test suite; SQSBEAT_FAILOVER_KILLS=20 for a measurement.
    let kills: usize = std::env::var("SQSBEAT_FAILOVER_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(3);
    let mut failovers = Vec::new();
    for _ in 0..kills {
        std::thread::sleep(Duration::from_millis(2500));
        let (idx, epoch) = leader_of(d, &logs).expect("a leader");
        let killed_at = Utc::now();
        let mut p = procs[idx].take().expect("leader process alive");
        p.child.kill().unwrap(); // SIGKILL
        p.child.wait().unwrap();
        spawn(&mut logs, &mut procs);
        // The new leader: a newer epoch, and its first send after the kill.
        let deadline = Instant::now() + Duration::from_secs(15);
        let took = loop {
            if let Some((i, e)) = leader_of(d, &logs)
                && e > epoch
                && let Some(t) = first_sent_after(d, &logs[i], killed_at)
            {
                break (t - killed_at).num_milliseconds();
            }
            assert!(
                Instant::now() < deadline,
                "no new leader fired within 15 s of the kill"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        failovers.push(took);
    }
    std::thread::sleep(Duration::from_millis(2000));
    for (i, p) in procs.iter_mut().enumerate() {
        if let Some(p) = p {
            let st = p.terminate(Duration::from_secs(10));
            let log = std::fs::read_to_string(d.join(&logs[i])).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(8).collect();
            assert!(
                st.is_some_and(|s| s.success()),
                "replica {i} did not stop cleanly ({st:?}); log tail: {tail:#?}"
            );
        }
    }

    // The ledger: every second from the first slot to the last, each sent.
    let rows = rt.block_on(async {
        let s = sqsbeat::store::PgStore::connect(&db.url, "sqsbeat")
            .await
            .unwrap();
        sqlx::query("SELECT slot, outcome, task_id FROM ledger WHERE entry = 'tick' ORDER BY slot")
            .fetch_all(s.pool())
            .await
            .unwrap()
    });
    let slots: Vec<(DateTime<Utc>, String, uuid::Uuid)> = rows
        .iter()
        .map(|r| (r.get("slot"), r.get("outcome"), r.get("task_id")))
        .collect();
    assert!(slots.len() >= 8, "{slots:?}");
    for w in slots.windows(2) {
        assert_eq!(
            (w[1].0 - w[0].0).num_seconds(),
            1,
            "a slot is missing from the ledger: {:?} -> {:?}",
            w[0].0,
            w[1].0
        );
    }
    for (slot, outcome, id) in &slots {
        assert_eq!(outcome, "sent", "{slot}");
        assert_eq!(*id, fire_task_id("tick", *slot));
    }

    // The worker: every slot's task executed; duplicates only by task id.
    let expected: BTreeSet<String> = slots.iter().map(|s| s.2.to_string()).collect();
    let records = stack::wait_records(d, Duration::from_secs(60), |recs| {
        let seen: BTreeSet<String> = recs
            .iter()
            .filter(|r| r["event"] == "executed")
            .filter_map(|r| r["id"].as_str().map(String::from))
            .collect();
        expected.is_subset(&seen)
    });
    let runs = stack::executed_runs(&records, &expected);
    let lost: Vec<&String> = expected
        .iter()
        .filter(|id| !runs.contains_key(*id))
        .collect();
    let duplicated = runs.values().filter(|n| **n > 1).count();
    failovers.sort();
    eprintln!(
        "failover: {kills} kills, leader SIGKILL -> first fire by the new leader: {:?} ms; {} slots, {} lost, {} executed twice (same task id)",
        failovers,
        slots.len(),
        lost.len(),
        duplicated
    );
    assert!(lost.is_empty(), "lost: {lost:?}");
}

#[test]
fn a_frozen_leader_is_replaced_and_cannot_fire_after_waking() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_moto, endpoint) = stack::moto(d);
    let schedule = d.join("s.toml");
    std::fs::write(&schedule, "[entries.tick]\ntask = \"e2e.tick\"\nevery = \"1s\"\nqueue = \"fz\"\ncatch_up = \"all\"\ngrace = \"30s\"\n").unwrap();
    stack::config_creating_queues(d);
    let logs = ["a.log".to_string(), "b.log".to_string()];
    let mut procs: Vec<Proc> = logs
        .iter()
        .map(|l| stack::sqsbeat_replica(d, &endpoint, &schedule, l, Some(&db.url)))
        .collect();
    std::thread::sleep(Duration::from_millis(2500));
    let (idx, epoch) = leader_of(d, &logs).expect("a leader");
    let pid = procs[idx].child.id().to_string();
    let frozen_at = Utc::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );

    // The server ends the frozen session (idle_session_timeout) and the
    // standby takes the lock.
    let deadline = Instant::now() + Duration::from_secs(15);
    let took = loop {
        if let Some((i, e)) = leader_of(d, &logs)
            && e > epoch
        {
            assert_ne!(i, idx);
            break (Utc::now() - frozen_at).num_milliseconds();
        }
        assert!(
            Instant::now() < deadline,
            "no takeover within 15 s of SIGSTOP"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        std::process::Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(Duration::from_millis(3000));
    for p in procs.iter_mut() {
        assert!(
            p.terminate(Duration::from_secs(10))
                .is_some_and(|s| s.success())
        );
    }

    // After waking, the ex-leader sent nothing for a slot after its freeze.
    let late_sends: Vec<String> = json_lines(&d.join(&logs[idx]))
        .into_iter()
        .filter(|l| l["message"] == "sent")
        .filter_map(|l| l["slot"].as_str().map(String::from))
        .filter(|s| {
            DateTime::parse_from_rfc3339(s).unwrap().to_utc()
                > frozen_at + chrono::Duration::seconds(1)
        })
        .collect();
    assert!(
        late_sends.is_empty(),
        "the frozen ex-leader sent fires it no longer owned: {late_sends:?}"
    );
    let ex_log = std::fs::read_to_string(d.join(&logs[idx])).unwrap();
    assert!(
        ex_log.contains("stopped firing"),
        "the ex-leader says it stopped: {ex_log}"
    );
    // And no slot was lost across the freeze.
    let slots: Vec<(DateTime<Utc>, String)> = rt
        .block_on(stack::ledger(Some(&db.url), d))
        .into_iter()
        .filter(|(entry, _, _)| entry == "tick")
        .map(|(_, slot, outcome)| (slot, outcome))
        .collect();
    for w in slots.windows(2) {
        assert_eq!(
            (w[1].0 - w[0].0).num_seconds(),
            1,
            "{:?} -> {:?}",
            w[0],
            w[1]
        );
    }
    assert!(slots.iter().all(|(_, o)| o == "sent"), "{slots:?}");
    eprintln!(
        "frozen leader: SIGSTOP -> new leader elected in {took} ms; {} slots, all sent",
        slots.len()
    );
}
