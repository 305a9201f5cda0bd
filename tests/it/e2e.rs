//! End to end: `sqsbeat run` → moto (SQS) → a real Celery worker, which
//! judges what executed. No fakes on the path.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqsbeat::wire::celery::fire_task_id;

use crate::stack::{self, json_lines};

/// `sent` events from sqsbeat's JSON log: (entry, slot, task id, late ms).
fn sent(dir: &std::path::Path) -> Vec<(String, DateTime<Utc>, String, i64)> {
    json_lines(&dir.join("sqsbeat.log"))
        .into_iter()
        .filter(|l| l["message"] == "sent")
        .map(|l| {
            (
                l["span"]["entry"].as_str().unwrap().to_string(),
                DateTime::parse_from_rfc3339(l["slot"].as_str().unwrap())
                    .unwrap()
                    .to_utc(),
                l["span"]["task_id"].as_str().unwrap().to_string(),
                l["late_ms"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn real_celery_worker_executes_every_fire_and_drops_expired_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_moto, endpoint) = stack::moto(d);
    let tomorrow = (Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let schedule = d.join("e2e.toml");
    std::fs::write(
        &schedule,
        format!(
            r#"
[defaults]
queue = "e2e"

[entries.every1]
task = "examples.tasks.heartbeat"
every = "1s"
args = [1, "two"]
kwargs = {{ k = "v", n = [1, 2] }}
headers = {{ tenant = "acme" }}

[entries.cron2]
task = "e2e.cron"
cron = "*/2 * * * * *"
kwargs = {{ kind = "cron" }}

[entries.fifo1]
task = "e2e.fifo"
every = "1s"
queue = "e2e.fifo"

[entries.stale]
task = "e2e.stale"
every = "1s"
expires = "2s"

[entries.off]
task = "e2e.disabled"
every = "1s"
enabled = false

[entries.later]
task = "e2e.later"
every = "1s"
start_at = "{tomorrow}"

[entries.over]
task = "e2e.over"
every = "1s"
end_at = "2020-01-01T00:00:00Z"
"#
        ),
    )
    .unwrap();
    stack::config_creating_queues(d);

    // Fire for a while with no worker: messages wait in SQS, and the
    // `stale` ones outlive their 2 s expiry before any worker sees them.
    let mut beat = stack::sqsbeat_run(d, &endpoint, &schedule);
    std::thread::sleep(Duration::from_millis(6500));
    let status = beat
        .terminate(Duration::from_secs(10))
        .expect("sqsbeat stops on SIGTERM");
    assert!(
        status.success(),
        "sqsbeat exit: {status}; log:\n{}",
        std::fs::read_to_string(d.join("sqsbeat.log")).unwrap()
    );
    let sent = sent(d);
    std::thread::sleep(Duration::from_millis(2500));

    let mut by_entry: BTreeMap<&str, Vec<DateTime<Utc>>> = BTreeMap::new();
    for (entry, slot, id, _) in &sent {
        assert_eq!(
            *id,
            fire_task_id(entry, *slot).to_string(),
            "task id is UUIDv5(entry, slot)"
        );
        by_entry.entry(entry.as_str()).or_default().push(*slot);
    }
    let names: BTreeSet<&str> = by_entry.keys().copied().collect();
    assert_eq!(
        names,
        BTreeSet::from(["cron2", "every1", "fifo1", "stale"]),
        "disabled and out-of-window entries never fire"
    );
    // Every slot, none skipped: one per second, or per two for the cron.
    for (entry, step) in [("every1", 1i64), ("fifo1", 1), ("stale", 1), ("cron2", 2)] {
        let slots = &by_entry[entry];
        assert!(slots.len() as i64 >= 5 / step, "{entry}: {slots:?}");
        for w in slots.windows(2) {
            assert_eq!(
                (w[1] - w[0]).num_seconds(),
                step,
                "{entry} skipped or repeated a slot: {slots:?}"
            );
        }
    }

    let _worker = stack::worker(
        d,
        &endpoint,
        "e2e,e2e.fifo",
        "e2e.cron,e2e.fifo,e2e.stale,e2e.disabled,e2e.later,e2e.over",
    );
    let expected: BTreeSet<&str> = sent.iter().map(|s| s.2.as_str()).collect();
    let records = stack::wait_records(d, Duration::from_secs(60), |recs| {
        let seen: BTreeSet<&str> = recs.iter().filter_map(|r| r["id"].as_str()).collect();
        expected.is_subset(&seen)
    });
    let by_id: BTreeMap<&str, &Value> = records
        .iter()
        .map(|r| (r["id"].as_str().unwrap_or(""), r))
        .collect();
    for (entry, slot, id, _) in &sent {
        let r = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("{entry} {slot}: task {id} never reached the worker"));
        if entry == "stale" {
            assert_eq!(
                r["event"], "revoked",
                "{entry}: expired message must be dropped: {r}"
            );
            assert_eq!(r["expired"], true);
            continue;
        }
        assert_eq!(r["event"], "executed", "{entry} {slot}: {r}");
        assert_eq!(r["headers"]["periodic_task_name"], entry.as_str());
        assert_eq!(r["headers"]["celery_beat_task"], true);
        assert_eq!(
            r["headers"]["sqsbeat_scheduled_at"],
            slot.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        );
        match entry.as_str() {
            "every1" => {
                assert_eq!(r["task"], "examples.tasks.heartbeat");
                assert_eq!(r["args"], serde_json::json!([1, "two"]));
                assert_eq!(r["kwargs"], serde_json::json!({"k": "v", "n": [1, 2]}));
                assert_eq!(r["routing_key"], "e2e");
                assert_eq!(r["custom"]["tenant"], "acme");
            }
            "cron2" => {
                assert_eq!(r["task"], "e2e.cron");
                assert_eq!(r["kwargs"], serde_json::json!({"kind": "cron"}));
            }
            "fifo1" => {
                assert_eq!(r["task"], "e2e.fifo");
                assert_eq!(r["routing_key"], "e2e.fifo");
            }
            other => panic!("unexpected entry {other}"),
        }
    }
    let executed: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "executed")
        .collect();
    assert_eq!(
        executed.len(),
        sent.iter().filter(|s| s.0 != "stale").count(),
        "each fire executed exactly once"
    );
    assert!(
        records.iter().all(|r| r["event"] != "unknown"),
        "{records:?}"
    );

    let mut late: Vec<i64> = sent.iter().map(|s| s.3).collect();
    late.sort();
    eprintln!(
        "e2e lateness (slot -> SQS accepted), {} fires: p50 {} ms, p99 {} ms, max {} ms",
        late.len(),
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        late[late.len() - 1]
    );
}
