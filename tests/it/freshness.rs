//! Freshness and the per-entry series limit, in-process: `/metrics` stays
//! bounded however many entries the beat runs; a paused entry is never
//! overdue, and the status shows its pause and its last manual run.

use std::sync::Arc;

use serde_json::json;
use sqsbeat::beat::ops;
use sqsbeat::entry::Entry;
use sqsbeat::runtime::status::{self, Page};
use sqsbeat::store::history::Audit;
use sqsbeat::store::pauses;

use crate::harness::{Harness, at, entries};

/// 100 000 entries used to make 200 000 `fires_sent_total` /
/// `fires_failed_total` series. The driver gets a registry of its own: the
/// process's is shared with the other tests of this binary, and a term
/// another test begins meanwhile drops the series of entries not in its
/// schedule (this test's totals read 0 with eight tests at once).
#[tokio::test]
async fn metrics_stay_under_the_series_limit_at_100_000_entries() {
    const N: usize = 100_000;
    const QUEUE: &str = "q-series-limit";
    let h = Harness::sqlite(at("2026-11-21T10:00:30Z")).await;
    let one = entries(&format!(
        "[entries.x]\ntask = \"t.t\"\nevery = \"1m\"\nqueue = \"{QUEUE}\"\n"
    ))
    .remove(0);
    let many: Vec<_> = (0..N)
        .map(|i| {
            let mut e = one.clone();
            e.name = format!("e{i:06}");
            e
        })
        .collect();
    let registry: &'static sqsbeat::runtime::metrics::Metrics = Box::leak(Box::default());
    let driver = sqsbeat::beat::driver::Driver {
        metrics: registry,
        ..h.driver()
    };
    let epoch = h.new_epoch().await;
    let mut term = driver.begin(Arc::new(many), epoch).await.unwrap();
    term.turn(h.at("2026-11-21T10:01:00.001Z")).await.unwrap();
    term.drain().await;
    assert_eq!(h.sink.accepted().len(), N, "the tick decided every entry");
    // The next freshness check exports last and next fires.
    term.turn(h.at("2026-11-21T10:01:10Z")).await.unwrap();

    let text = registry.render();
    let samples: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    let limit = sqsbeat::config::DEFAULT_PER_ENTRY_LIMIT;
    assert!(
        samples.len() < 4 * limit + 1_000,
        "{} series on /metrics",
        samples.len()
    );
    let ours: Vec<&str> = samples
        .iter()
        .copied()
        .filter(|l| l.starts_with("sqsbeat_fires_sent_total{") && l.contains(QUEUE))
        .collect();
    assert!(ours.len() <= limit + 1, "{} fires_sent series", ours.len());
    let total: f64 = ours
        .iter()
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum();
    assert_eq!(total as usize, N, "the totals count every fire");
    assert!(
        ours.iter().any(|l| l.contains("entry=\"_other\"")),
        "entries beyond the limit count under _other"
    );
    for metric in [
        "sqsbeat_entry_last_sent_timestamp_seconds{",
        "sqsbeat_entry_next_fire_timestamp_seconds{",
    ] {
        let n = samples
            .iter()
            .filter(|l| l.starts_with(metric) && l.contains("entry=\"e"))
            .count();
        assert!(n <= limit, "{n} {metric} series");
    }
    assert!(
        samples
            .iter()
            .any(|l| l.starts_with("sqsbeat_entries_overdue "))
    );
}

fn by(t: &str) -> Audit {
    Audit {
        at: at(t),
        actor: "ops@test".into(),
    }
}

/// A paused entry is held on purpose, not stuck: reported overdue it would
/// alert whoever paused it for as long as the pause lasts. Judged from the
/// store's facts with no leader deciding (the beat's own view is unit
/// tested in `beat::tick`), and in the JSON `/api/status` answers.
async fn a_paused_entry_is_not_overdue_and_the_status_shows_its_pause(h: Harness) {
    let set = entries(
        "[entries.a]\ntask = \"t.a\"\nevery = \"1m\"\n[entries.b]\ntask = \"t.b\"\nevery = \"1m\"\n",
    );
    let driver = h.driver();
    let epoch = h.new_epoch().await;
    let mut term = driver.begin(Arc::new(set.clone()), epoch).await.unwrap();
    term.turn(h.at("2026-11-21T10:01:00Z")).await.unwrap();
    term.drain().await;
    drop(term);
    pauses::pause(
        &h.store,
        "a",
        None,
        Some("deploy freeze"),
        &by("2026-11-21T10:01:30Z"),
    )
    .await
    .unwrap();
    let run = ops::run_now(
        &h.store,
        &h.sink,
        &h.opts,
        &set[0],
        &by("2026-11-21T10:01:40Z"),
    )
    .await
    .unwrap();
    assert!(run.outcome.is_ok());

    // No leader decides from 10:01 on: b is stuck behind 10:02, a is paused.
    let now = at("2026-11-21T10:05:00Z");
    let all: Vec<&Entry> = set.iter().collect();
    let st = status::entry_statuses(&h.store, &all, now).await.unwrap();
    let (a, b) = (&st[0], &st[1]);
    assert_eq!(
        (a.name.as_str(), a.overdue, a.overdue_slot.as_deref()),
        ("a", false, None)
    );
    assert_eq!(a.next_fire, None, "paused until resumed");
    assert_eq!(
        (b.overdue, b.overdue_slot.as_deref()),
        (true, Some("2026-11-21T10:02:00Z"))
    );
    let snap = status::snapshot(
        &h.store,
        &set,
        &Page::default(),
        Vec::new(),
        json!(null),
        now,
    )
    .await
    .unwrap();
    let item = &snap["entries"]["items"][0];
    assert_eq!(item["name"], "a");
    assert_eq!(item["overdue"], false);
    assert_eq!(
        item["paused"],
        json!({"since": "2026-11-21T10:01:30Z", "until": null, "reason": "deploy freeze", "by": "ops@test"})
    );
    assert_eq!(item["last_manual_run"]["at"], "2026-11-21T10:01:40Z");
    assert_eq!(item["last_manual_run"]["task_id"], run.task_id.to_string());
    assert_eq!(item["last_manual_run"]["outcome"], "sent");
    assert_eq!(snap["entries"]["items"][1]["paused"], json!(null));

    // Resumed at 10:03:30: 10:02 and 10:03 were the pause's (missed as
    // paused once decided), so 10:04 is a's oldest outstanding slot.
    pauses::resume(&h.store, "a", &by("2026-11-21T10:03:30Z"))
        .await
        .unwrap();
    let st = status::entry_statuses(&h.store, &all, now).await.unwrap();
    assert_eq!(
        (st[0].overdue, st[0].paused.is_none()),
        (false, true),
        "10:04 is within its grace"
    );
    let later = at("2026-11-21T10:05:30Z");
    let st = status::entry_statuses(&h.store, &all, later).await.unwrap();
    assert_eq!(st[0].overdue_slot.as_deref(), Some("2026-11-21T10:04:00Z"));
}

#[tokio::test]
async fn a_paused_entry_is_not_overdue_and_the_status_shows_its_pause_sqlite() {
    a_paused_entry_is_not_overdue_and_the_status_shows_its_pause(
        Harness::sqlite(at("2026-11-21T10:00:30Z")).await,
    )
    .await;
}

#[tokio::test]
async fn a_paused_entry_is_not_overdue_and_the_status_shows_its_pause_postgres() {
    a_paused_entry_is_not_overdue_and_the_status_shows_its_pause(
        Harness::postgres(at("2026-11-21T10:00:30Z")).await,
    )
    .await;
}
