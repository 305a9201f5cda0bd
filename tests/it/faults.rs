//! Fault suite, short form: SQS misbehaving in each way the sink must
//! survive (server errors, throttling, partial batches, slow calls, calls
//! past the SDK's attempt timeout, dropped connections) while two entries
//! fire every second. A real Celery worker behind moto judges what ran:
//! nothing lost, nothing marked sent that SQS did not accept, and every
//! duplicate carries the original task id.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use sqsbeat::wire::celery::fire_task_id;

use crate::stack::{self, Proc};

/// Starts tests/fixtures/sqs_fault_proxy.py in front of `upstream`.
fn fault_proxy(d: &std::path::Path, upstream: &str) -> (Proc, String, std::path::PathBuf) {
    let port = stack::free_port();
    let mode = d.join("mode");
    std::fs::write(&mode, "pass").unwrap();
    let log = std::fs::File::create(d.join("proxy.out")).unwrap();
    let child = Command::new(stack::python())
        .arg(stack::repo().join("tests/fixtures/sqs_fault_proxy.py"))
        .arg(port.to_string())
        .arg(upstream)
        .arg(&mode)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("start the fault proxy");
    let p = Proc { child };
    stack::wait_for("fault proxy", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (p, format!("http://127.0.0.1:{port}"), mode)
}

#[tokio::test(flavor = "multi_thread")]
async fn sqs_faults_lose_no_fire_and_resend_only_with_the_original_id() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_moto, moto_url) = stack::moto(d);
    stack::create_queue(&moto_url, "faults");
    let (_proxy, proxy_url, mode) = fault_proxy(d, &moto_url);
    let _worker = stack::worker(d, &moto_url, "faults", "e2e.a,e2e.b");
    let schedule = d.join("s.toml");
    std::fs::write(
        &schedule,
        // catch_up = all: every failed fire is retried until sent, so the
        // test can demand that none is lost (under `latest` an older failing
        // fire gives way to a newer one, tested in tick.rs).
        "[defaults]\nqueue = \"faults\"\ncatch_up = \"all\"\n\n[entries.a]\ntask = \"e2e.a\"\nevery = \"1s\"\n\n[entries.b]\ntask = \"e2e.b\"\nevery = \"1s\"\n",
    )
    .unwrap();
    let mut beat = stack::sqsbeat_run(d, &proxy_url, &schedule);

    // Both entries fire at the same instants, so each tick sends a batch of
    // two and `partial` fails one of them.
    let phases = [
        ("pass", 3),
        ("5xx", 3),
        ("throttle", 3),
        ("partial", 4),
        ("slow:2", 3),
        // Past the SDK's 10 s attempt timeout: SQS gets the message after
        // sqsbeat gave up on the call, so the retry is a duplicate.
        ("slow:11", 12),
        ("down", 3),
        ("pass", 0),
    ];
    for (m, secs) in phases {
        std::fs::write(&mode, m).unwrap();
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
    let recovered_at = Utc::now();

    // Every slot decided before recovery ends up sent (retries back off up
    // to 60 s, so allow for a few rounds).
    let deadline = Instant::now() + Duration::from_secs(150);
    let ledger = loop {
        let rows = stack::ledger(None, d).await;
        let pending = rows
            .iter()
            .filter(|(_, slot, outcome)| *slot <= recovered_at && outcome != "sent")
            .count();
        if pending == 0 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    beat.terminate(Duration::from_secs(40))
        .expect("stops on SIGTERM");
    let log = std::fs::read_to_string(d.join("sqsbeat.log")).unwrap();

    // No gap: each entry's slots are consecutive seconds, none missed.
    for entry in ["a", "b"] {
        let slots: Vec<_> = ledger
            .iter()
            .filter(|r| r.0 == entry)
            .map(|r| r.1)
            .collect();
        assert!(slots.len() > 25, "{entry}: only {} slots", slots.len());
        for w in slots.windows(2) {
            assert_eq!(
                (w[1] - w[0]).num_milliseconds(),
                1000,
                "{entry}: a slot is missing between {} and {}",
                w[0],
                w[1]
            );
        }
    }
    let missed: Vec<_> = ledger.iter().filter(|r| r.2 == "missed").collect();
    assert!(missed.is_empty(), "missed: {missed:?}");
    let unsent: Vec<_> = ledger
        .iter()
        .filter(|r| r.1 <= recovered_at && r.2 != "sent")
        .collect();
    assert!(unsent.is_empty(), "never sent: {unsent:?}\n{log}");

    // The worker's record: every sent id ran, nothing else ran, and a
    // duplicate can only be a re-send (same id).
    let sent: BTreeSet<String> = ledger
        .iter()
        .filter(|r| r.2 == "sent")
        .map(|r| fire_task_id(&r.0, r.1).to_string())
        .collect();
    let records = stack::wait_executed(d, Duration::from_secs(60), &sent);
    let claimed: BTreeSet<String> = ledger
        .iter()
        .map(|r| fire_task_id(&r.0, r.1).to_string())
        .collect();
    let runs = stack::executed_runs(&records, &claimed);
    let lost: Vec<&String> = sent.iter().filter(|id| !runs.contains_key(*id)).collect();
    let duplicated = runs.values().filter(|n| **n > 1).count();

    // Each fault was really exercised.
    let requests = std::fs::read_to_string(d.join("mode.log")).unwrap();
    for m in ["5xx", "throttle", "slow:2", "slow:11", "down"] {
        assert!(
            requests.lines().any(|l| l.split(' ').nth(1) == Some(m)),
            "no request met {m}:\n{requests}"
        );
    }
    assert!(
        requests
            .lines()
            .any(|l| l.contains(" partial SendMessageBatch ")
                && !l.ends_with(" 1")
                && !l.ends_with(" 0")),
        "no batch of two met `partial`:\n{requests}"
    );
    let failures = log.matches("send failed; will retry").count();
    eprintln!(
        "sqs faults: {} slots, {} sent, {} executed, {} lost, {} executed twice (same task id), {} failed sends retried",
        ledger.len(),
        sent.len(),
        runs.len(),
        lost.len(),
        duplicated,
        failures
    );
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(failures > 0, "no send failure was logged:\n{log}");
}

/// SIGTERM to the leader while a burst of fires is in flight (each SQS call
/// held 2 s by the proxy): it decides nothing new, lets the sends finish
/// and confirms them, exits 0, and only then frees leadership; the standby
/// takes over at the next burst. The ledger is left with no claim open.
#[test]
fn sigterm_during_a_burst_finishes_in_flight_sends_and_a_standby_takes_over() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(crate::pg::TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_moto, moto_url) = stack::moto(d);
    stack::create_queue(&moto_url, "burst");
    let (_proxy, proxy_url, mode) = fault_proxy(d, &moto_url);
    let _worker = stack::worker(d, &moto_url, "burst", "e2e.burst");
    // 40 entries on the same 10 s slots: each slot is a burst of four
    // SendMessageBatch calls.
    let mut toml = String::from("[defaults]\nqueue = \"burst\"\n");
    for i in 0..40 {
        toml.push_str(&format!(
            "\n[entries.b{i:02}]\ntask = \"e2e.burst\"\nevery = \"10s\"\n"
        ));
    }
    let schedule = d.join("s.toml");
    std::fs::write(&schedule, toml).unwrap();
    let logs = ["a.log", "b.log"];
    let mut replicas: Vec<Proc> = logs
        .iter()
        .map(|l| stack::sqsbeat_replica(d, &proxy_url, &schedule, l, Some(&db.url)))
        .collect();
    let leader = || {
        logs.iter().position(|l| {
            stack::json_lines(&d.join(l))
                .iter()
                .any(|x| x["message"] == "became leader")
        })
    };
    stack::wait_for("a leader", Duration::from_secs(30), || leader().is_some());
    let a = leader().unwrap();
    let b = 1 - a;
    // Let the first slot go out unhindered, then hold calls for the next.
    stack::wait_log(d, logs[a], Duration::from_secs(20), "a first burst", |l| {
        l["message"] == "sent"
    });
    let next_slot = {
        let now = Utc::now().timestamp();
        now - now.rem_euclid(10) + 10
    };
    let slot = chrono::DateTime::from_timestamp(next_slot, 0).unwrap();
    while Utc::now() < slot - chrono::Duration::seconds(1) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(&mode, "slow:2").unwrap();
    while Utc::now() < slot + chrono::Duration::milliseconds(500) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let term_at = Utc::now();
    let status = replicas[a].terminate(Duration::from_secs(40));
    std::fs::write(&mode, "pass").unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "the leader did not exit cleanly on SIGTERM: {status:?}"
    );
    let a_log = stack::json_lines(&d.join(logs[a]));
    let waited = a_log
        .iter()
        .find(|l| l["message"] == "waiting for in-flight sends")
        .unwrap_or_else(|| panic!("SIGTERM did not land mid-burst: {a_log:#?}"));
    let slot_text = slot.to_rfc3339();
    let sent_by_a: Vec<&serde_json::Value> = a_log
        .iter()
        .filter(|l| l["message"] == "sent" && l["slot"].as_str() == Some(slot_text.as_str()))
        .collect();
    assert_eq!(
        sent_by_a.len(),
        40,
        "the burst in flight at SIGTERM ({waited}) was not all sent by the leader"
    );
    // The standby leads after, and fires the next burst.
    let next_text = (slot + chrono::Duration::seconds(10)).to_rfc3339();
    stack::wait_log(
        d,
        logs[b],
        Duration::from_secs(30),
        "the standby's burst",
        |l| l["message"] == "sent" && l["slot"].as_str() == Some(next_text.as_str()),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        replicas[b]
            .terminate(Duration::from_secs(30))
            .is_some_and(|s| s.success())
    );

    let ledger = rt.block_on(stack::ledger(Some(&db.url), d));
    let open: Vec<_> = ledger.iter().filter(|r| r.2 != "sent").collect();
    assert!(open.is_empty(), "claims left open or missed: {open:?}");
    for i in 0..40 {
        let name = format!("b{i:02}");
        let slots: Vec<_> = ledger.iter().filter(|r| r.0 == name).map(|r| r.1).collect();
        assert!(
            slots.contains(&slot),
            "{name}: slot {slot} not in the ledger"
        );
        for w in slots.windows(2) {
            assert_eq!((w[1] - w[0]).num_seconds(), 10, "{name}: {slots:?}");
        }
    }
    let sent: BTreeSet<String> = ledger
        .iter()
        .map(|r| fire_task_id(&r.0, r.1).to_string())
        .collect();
    let records = stack::wait_executed(d, Duration::from_secs(90), &sent);
    let runs = stack::executed_runs(&records, &sent);
    let lost = sent.iter().filter(|id| !runs.contains_key(*id)).count();
    let twice = runs.values().filter(|n| **n > 1).count();
    let standby_led = stack::json_lines(&d.join(logs[b]))
        .iter()
        .filter(|l| l["message"] == "became leader")
        .filter_map(|l| l["timestamp"].as_str().map(String::from))
        .next()
        .unwrap_or_default();
    eprintln!(
        "sigterm during a burst: SIGTERM at {}, {} in-flight fires sent and confirmed before exit, standby leader at {}; {} fires, {} executed, {} lost, {} executed twice (same task id)",
        term_at.format("%T%.3f"),
        sent_by_a.len(),
        standby_led,
        sent.len(),
        runs.len(),
        lost,
        twice
    );
    assert_eq!(lost, 0);
}
