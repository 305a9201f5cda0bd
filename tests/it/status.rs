//! `sqsbeat status`: replicas and roles, entries' last and next fires,
//! pending jobs by due bucket, recent failures.

use std::time::{Duration, Instant};

use crate::pg::TestDb;
use crate::stack::{self, cli};

#[test]
fn status_shows_leader_standby_entries_jobs_and_failures() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_moto, endpoint) = stack::moto(d);
    stack::create_queue(&endpoint, "ok-q");
    std::fs::create_dir(d.join("schedules")).unwrap();
    // `lost` targets a queue that does not exist: its fires keep failing.
    std::fs::write(
        d.join("schedules/s.toml"),
        "[entries.tick]\ntask = \"s.tick\"\nevery = \"1s\"\nqueue = \"ok-q\"\n\n[entries.lost]\ntask = \"s.lost\"\nevery = \"1s\"\ngrace = \"1s\"\ncatch_up = \"all\"\nqueue = \"missing-q\"\n",
    )
    .unwrap();
    let schedules = d.join("schedules");
    let mut a = stack::sqsbeat_replica(d, &endpoint, &schedules, "a.log", Some(&db.url));
    let mut b = stack::sqsbeat_replica(d, &endpoint, &schedules, "b.log", Some(&db.url));
    let (code, _, err) = cli(
        d,
        Some(&db.url),
        Some(&endpoint),
        &["schedule", "s.later", "--in", "14d"],
    );
    assert_eq!(code, 0, "{err}");

    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let (code, out, err) = cli(d, Some(&db.url), None, &["status", "--output", "json"]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let roles: Vec<&str> = v["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["role"].as_str())
            .collect();
        let failing = v["recent_failures"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "lost");
        let fired = v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "tick" && e["last_fire"].is_string());
        // `lost` keeps failing, and catches up on all (no newer slot
        // supersedes a failing one): overdue once its oldest unsent slot
        // is past its grace, as the CLI reads the store and as the leader
        // publishes it.
        let overdue = v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "lost" && e["overdue"] == true);
        let published = v["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["role"] == "leader" && r["overdue"] == 1);
        if roles.contains(&"leader")
            && roles.contains(&"standby")
            && failing
            && fired
            && overdue
            && published
        {
            break v;
        }
        assert!(Instant::now() < deadline, "status never complete: {v}");
        std::thread::sleep(Duration::from_millis(500));
    };
    for p in [&mut a, &mut b] {
        assert!(
            p.terminate(Duration::from_secs(10))
                .is_some_and(|s| s.success())
        );
    }
    let leader = status["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["role"] == "leader")
        .unwrap();
    assert!(leader["epoch"].as_i64().unwrap() >= 1);
    let tick = status["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "tick")
        .unwrap();
    assert!(tick["next_fire"].as_str().unwrap() > tick["last_fire"].as_str().unwrap());
    assert_eq!(tick["overdue"], false, "{tick}");
    assert_eq!(status["overdue"], 1);
    assert_eq!(status["pending_jobs"]["7d"], 0);
    assert_eq!(
        status["pending_jobs"]["later"], 1,
        "the 14-day job: {}",
        status["pending_jobs"]
    );
    let lost = status["recent_failures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "lost")
        .unwrap();
    assert!(
        lost["error"].as_str().unwrap().contains("does not exist"),
        "{lost}"
    );
    assert!(lost["attempts"].as_i64().unwrap() >= 1);

    let (code, out, _) = cli(d, Some(&db.url), None, &["status"]);
    assert_eq!(code, 0);
    for section in [
        "REPLICAS",
        "ENTRIES  2, 1 overdue",
        "OVERDUE",
        "PENDING JOBS  1",
        "RECENT FAILURES",
    ] {
        assert!(out.contains(section), "{section}: {out}");
    }
}
