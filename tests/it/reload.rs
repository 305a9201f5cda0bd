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

/// A schedule file written in place is truncated first: a look in between
/// saw it empty and the reload removed every entry until the next look.
/// The watcher now reads a change only once two looks [`SETTLE`] apart
/// agree.
///
/// [`SETTLE`]: sqsbeat::runtime::reload::SETTLE
#[tokio::test]
async fn a_file_caught_half_written_is_not_read_until_it_settles() {
    use sqsbeat::runtime::reload::{LOOK_EVERY, SETTLE, watch_files};
    use std::sync::Arc;
    use tokio::sync::Notify;
    use tokio::time::{sleep, timeout};

    // PostgreSQL: the watcher then looks only at the files.
    let h = crate::harness::Harness::postgres(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    let full = "[entries.a]\ntask = \"r.a\"\nevery = \"1s\"\n";
    std::fs::write(&file, full).unwrap();
    tokio::time::pause();
    let changed = Arc::new(Notify::new());
    let stop = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn(watch_files(
        sqsbeat::entry::file::SchedulePaths::named(vec![dir.path().to_path_buf()]),
        h.store.clone(),
        changed.clone(),
        stop.clone(),
    ));
    // The watcher takes its first fingerprint.
    sleep(SETTLE / 10).await;

    // The writer has truncated the file and not written it yet at the look.
    std::fs::write(&file, "").unwrap();
    sleep(LOOK_EVERY).await;
    assert!(
        timeout(std::time::Duration::ZERO, changed.notified())
            .await
            .is_err(),
        "an empty file caught mid-write was read"
    );
    // Written: read once it has stayed so for SETTLE.
    std::fs::write(
        &file,
        format!("{full}\n[entries.b]\ntask = \"r.b\"\nevery = \"1s\"\n"),
    )
    .unwrap();
    assert!(
        timeout(3 * SETTLE, changed.notified()).await.is_ok(),
        "the written file was not read"
    );
    stop.cancel();
    watcher.await.unwrap();
}
