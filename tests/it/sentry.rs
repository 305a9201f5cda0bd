//! Sentry Crons end to end: `sqsbeat run` (moto for SQS) fires entries
//! with `sentry_monitor = true`; a real Celery worker running sentry-sdk's
//! Celery integration executes them; a local stand-in for Sentry records
//! what both post. The check-ins must be those celery beat's integration
//! gave: `in_progress` when the fire goes out (sent by sqsbeat), then `ok`
//! or `error` from the worker with the same check-in id, slug and config.

use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sqsbeat::wire::celery::fire_task_id;

use crate::stack::{self, Proc, json_lines};

/// The recorder (tests/fixtures/sentry-crons/recorder.py) on a free port.
fn recorder(dir: &std::path::Path) -> (Proc, u16) {
    let port = stack::free_port();
    let child = Command::new(stack::python())
        .arg(stack::repo().join("tests/fixtures/sentry-crons/recorder.py"))
        .arg(port.to_string())
        .arg(dir.join("sentry.jsonl"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("recorder.log")).unwrap())
        .spawn()
        .expect("start the Sentry recorder");
    let p = Proc { child };
    stack::wait_for("sentry recorder", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (p, port)
}

/// Every check-in recorded: (sender, payload).
fn check_ins(dir: &std::path::Path) -> Vec<(String, Value)> {
    json_lines(&dir.join("sentry.jsonl"))
        .into_iter()
        .flat_map(|env| {
            let sender = if env["auth"]
                .as_str()
                .unwrap_or("")
                .contains("sentry_client=sqsbeat/")
            {
                "sqsbeat"
            } else {
                "worker"
            };
            env["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|i| i["type"] == "check_in")
                .map(move |i| (sender.to_string(), i["payload"].clone()))
        })
        .collect()
}

#[test]
fn a_worker_with_sentry_sdk_closes_the_check_ins_of_sqsbeats_fires() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_moto, endpoint) = stack::moto(d);
    let (_recorder, port) = recorder(d);
    let dsn = format!("http://publickey@127.0.0.1:{port}/42");
    stack::config_creating_queues(d);
    let mut worker = stack::worker_with(
        d,
        &endpoint,
        "crons",
        "crons.ok,crons.fail",
        &[("SENTRY_DSN", &dsn), ("FAIL_TASKS", "crons.fail")],
    );
    // Every minute, on a grid that starts a few seconds from now: Sentry
    // Crons takes intervals of whole minutes only.
    let anchor: DateTime<Utc> = Utc::now() + chrono::Duration::seconds(4);
    let anchor_text = anchor.to_rfc3339_opts(SecondsFormat::Millis, true);
    let schedule = d.join("crons.toml");
    std::fs::write(
        &schedule,
        format!(
            r#"
[defaults]
queue = "crons"
sentry_monitor = true
timezone = "Europe/Paris"

[entries."Nightly: report"]
task = "crons.ok"
every = "1m"
anchor = "{anchor_text}"

[entries.failing]
task = "crons.fail"
every = "1m"
anchor = "{anchor_text}"

[entries.unmonitored]
task = "crons.ok"
every = "1m"
anchor = "{anchor_text}"
sentry_monitor = false
"#
        ),
    )
    .unwrap();
    let mut cmd = stack::sqsbeat_command(d, &endpoint, &schedule);
    cmd.env("SQSBEAT_SENTRY_DSN", &dsn);
    let mut beat = Proc {
        child: cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("sqsbeat.log")).unwrap())
            .spawn()
            .unwrap(),
    };
    let by = |sender: &str, slug: &str, status: &str| {
        check_ins(d)
            .into_iter()
            .find(|(s, c)| s == sender && c["monitor_slug"] == slug && c["status"] == status)
            .map(|(_, c)| c)
    };
    stack::wait_for("every check-in", Duration::from_secs(60), || {
        by("worker", "Nightly: report", "ok").is_some()
            && by("worker", "failing", "error").is_some()
    });
    assert!(beat.terminate(Duration::from_secs(10)).is_some());
    assert!(worker.terminate(Duration::from_secs(10)).is_some());

    let config = json!({"schedule": {"type": "interval", "value": 1, "unit": "minute"},
                        "timezone": "Europe/Paris"});
    for (slug, closed) in [("Nightly: report", "ok"), ("failing", "error")] {
        let id = fire_task_id(slug, anchor).simple().to_string();
        let started = by("sqsbeat", slug, "in_progress")
            .unwrap_or_else(|| panic!("no in_progress check-in for {slug}: {:?}", check_ins(d)));
        let ended = by("worker", slug, closed).unwrap();
        assert_eq!(started["check_in_id"], id, "the fire's task id, as hex");
        assert_eq!(
            ended["check_in_id"], id,
            "the worker closes the same check-in"
        );
        assert_eq!(started["monitor_config"], config);
        assert_eq!(ended["monitor_config"], config, "from the fire's headers");
        assert_eq!(started["environment"], "production");
        assert!(
            ended["duration"].as_f64().is_some_and(|s| s >= 0.0),
            "the start timestamp header gives a duration: {ended}"
        );
    }
    assert!(
        check_ins(d)
            .iter()
            .all(|(_, c)| c["monitor_slug"] != "unmonitored"),
        "sentry_monitor = false sends nothing"
    );
}

/// The kombu headers of an accepted message.
fn kombu_headers(body: &str) -> Value {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    serde_json::from_slice::<Value>(&raw).unwrap()["headers"].clone()
}

/// Sentry's beat integration checks in scheduled runs only: a fire of a
/// monitored entry carries the monitor's headers, while a manual run and
/// a backfilled slot carry none, or the worker would report check-ins the
/// schedule never opened and the monitor would judge the wrong runs.
#[tokio::test]
async fn only_scheduled_fires_carry_the_sentry_monitor_headers() {
    use std::sync::Arc;

    use crate::harness::{Harness, at, entries};
    use sqsbeat::beat::ops::{self, BackfillRequest};
    use sqsbeat::store::history::Audit;

    let h = Harness::sqlite(at("2026-11-21T10:00:30Z")).await;
    let set = Arc::new(entries(
        "[entries.m]\ntask = \"t.m\"\ncron = \"* * * * *\"\nsentry_monitor = true\n",
    ));
    let driver = h.driver();
    let epoch = h.new_epoch().await;
    let mut term = driver.begin(set.clone(), epoch).await.unwrap();
    term.turn(h.at("2026-11-21T10:01:00Z")).await.unwrap();
    term.drain().await;
    drop(term);
    let audit = Audit {
        at: at("2026-11-21T10:01:30Z"),
        actor: "ops@test".into(),
    };
    let run = ops::run_now(&h.store, &h.sink, &h.opts, &set[0], &audit)
        .await
        .unwrap();
    assert!(run.outcome.is_ok());
    // 10:00, before the beat's first slot, is backfill's to send.
    let req = BackfillRequest {
        from: at("2026-11-21T10:00:00Z"),
        to: at("2026-11-21T10:00:00Z"),
        limit: 10,
        earliest: at("2026-11-01T00:00:00Z"),
        dry_run: false,
    };
    let filled = ops::backfill(&h.store, &h.sink, &h.opts, &set[0], &req, &audit)
        .await
        .unwrap();
    assert_eq!(filled.sent, [at("2026-11-21T10:00:00Z")]);

    let headers: Vec<Value> = h
        .sink
        .accepted()
        .iter()
        .map(|a| kombu_headers(&a.message.body))
        .collect();
    assert_eq!(headers.len(), 3);
    let fire = &headers[0];
    assert_eq!(fire["sentry-monitor-slug"], "m");
    assert_eq!(fire["headers"]["sentry-monitor-slug"], "m");
    assert_eq!(fire["sqsbeat_trigger"], Value::Null);
    for (h, trigger) in headers[1..].iter().zip(["manual", "backfill"]) {
        assert_eq!(h["sqsbeat_trigger"], trigger);
        let keys: Vec<&String> = h.as_object().unwrap().keys().collect();
        assert!(
            keys.iter()
                .all(|k| !k.starts_with("sentry-monitor-") && k.as_str() != "headers"),
            "{trigger}: {keys:?}"
        );
    }
}
