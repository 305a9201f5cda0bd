//! Hot reload of the TOML schedules: on file change and on SIGHUP; a bad
//! file is rejected and the last good schedule keeps running.

use std::time::Duration;

use crate::stack::{self, json_lines};

fn wait_for(d: &std::path::Path, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
    stack::wait_log(d, "run.log", Duration::from_secs(10), what, pred);
}

fn sent(d: &std::path::Path, entry: &str) -> usize {
    json_lines(&d.join("run.log"))
        .iter()
        .filter(|l| l["message"] == "sent" && l["span"]["entry"] == entry)
        .count()
}

#[test]
fn schedule_files_reload_on_change_and_sighup_and_keep_the_last_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_moto, endpoint) = stack::moto(d);
    stack::config_creating_queues(d);
    std::fs::create_dir(d.join("schedules")).unwrap();
    let file = d.join("schedules/s.toml");
    std::fs::write(&file, "[entries.a]\ntask = \"r.a\"\nevery = \"1s\"\n").unwrap();
    let mut run = stack::sqsbeat_replica(d, &endpoint, &d.join("schedules"), "run.log", None);
    wait_for(d, "a firing", |l| {
        l["message"] == "sent" && l["span"]["entry"] == "a"
    });

    // Add an entry, change one: the file watcher reloads.
    std::fs::write(&file, "[entries.a]\ntask = \"r.a\"\nevery = \"1s\"\nkwargs = { v = 2 }\n\n[entries.b]\ntask = \"r.b\"\nevery = \"1s\"\n").unwrap();
    wait_for(d, "the reload diff", |l| {
        l["message"] == "schedule reloaded"
            && l["added"].as_str() == Some("[\"b\"]")
            && l["changed"].as_str() == Some("[\"a\"]")
    });
    wait_for(d, "b firing", |l| {
        l["message"] == "sent" && l["span"]["entry"] == "b"
    });

    // A broken file is rejected; a and b keep firing.
    std::fs::write(
        &file,
        "[entries.a]\ntask = \"r.a\"\ncron = \"not a cron\"\n",
    )
    .unwrap();
    wait_for(d, "the rejection", |l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.contains("schedule reload rejected"))
    });
    let (a0, b0) = (sent(d, "a"), sent(d, "b"));
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        sent(d, "a") > a0 && sent(d, "b") > b0,
        "the last good schedule keeps running"
    );

    // SIGHUP reloads too (the file is fixed, without b now).
    std::fs::write(
        &file,
        "[entries.a]\ntask = \"r.a\"\nevery = \"1s\"\nkwargs = { v = 2 }\n",
    )
    .unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &run.child.id().to_string()])
        .status();
    wait_for(d, "SIGHUP", |l| {
        l["message"] == "SIGHUP: reloading the schedule"
    });
    wait_for(d, "b removed", |l| {
        l["message"] == "schedule reloaded" && l["removed"].as_str() == Some("[\"b\"]")
    });
    assert!(
        run.terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );

    // The changed entry kept its ledger: every slot of `a` once, no gap.
    let slots: Vec<String> = json_lines(&d.join("run.log"))
        .into_iter()
        .filter(|l| l["message"] == "sent" && l["span"]["entry"] == "a")
        .filter_map(|l| l["slot"].as_str().map(String::from))
        .collect();
    let mut sorted = slots.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        slots.len(),
        "no slot of a sent twice across reloads"
    );
    let times: Vec<chrono::DateTime<chrono::Utc>> = sorted
        .iter()
        .map(|s| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc())
        .collect();
    for w in times.windows(2) {
        assert_eq!(
            (w[1] - w[0]).num_seconds(),
            1,
            "a slot of a was skipped across a reload: {w:?}"
        );
    }
}
