//! Freshness and the per-entry series limit, in-process: `/metrics` stays
//! bounded however many entries the beat runs.

use std::sync::Arc;

use crate::harness::{Harness, at, entries};

/// 100 000 entries used to make 200 000 `fires_sent_total` /
/// `fires_failed_total` series. The registry is the process's, shared
/// with the other tests of this binary, so the test judges bounds and
/// sums, which hold whatever those do meanwhile; the per-entry series'
/// values are unit-tested on a registry of their own
/// (`runtime::metrics::tests`).
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
    let driver = h.driver();
    let epoch = h.new_epoch().await;
    let mut term = driver.begin(Arc::new(many), epoch).await.unwrap();
    term.turn(h.at("2026-11-21T10:01:00.001Z")).await.unwrap();
    term.drain().await;
    assert_eq!(h.sink.accepted().len(), N, "the tick decided every entry");
    // The next freshness check exports last and next fires.
    term.turn(h.at("2026-11-21T10:01:10Z")).await.unwrap();

    let text = sqsbeat::runtime::metrics::get().render();
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
