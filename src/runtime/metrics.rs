//! Prometheus metrics (prometheus-client): one registry, filled by the
//! beat, the sink and the releaser, rendered by `/metrics`.
//!
//! Series per entry are bounded: only the first `[metrics] per_entry_limit`
//! entries by name have series of their own (fires sent and failed, last
//! sent, next fire); the fires of the others are counted under
//! `entry="_other"`. That keeps `sum(sqsbeat_fires_sent_total)` the total
//! of every fire, which is what a Prometheus user sums (a label-less total
//! beside the per-entry series would be counted twice by the same `sum`),
//! and it is how OpenTelemetry's cardinality limit folds overflow into one
//! series. 100 000 entries made 200 000 series; a scrape that size is what
//! Prometheus' `sample_limit` exists to refuse.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EntryQueue {
    pub entry: String,
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: String,
}

/// `forward` or `back`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Direction {
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationCode {
    pub operation: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DueBucket {
    pub due: String,
}

/// What became of something: an intake message (`stored`, `duplicate`,
/// `malformed`), a Sentry check-in (`sent`, `failed`, `dropped`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Build {
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EntryLabel {
    pub entry: String,
}

/// The `entry` label of the fires of entries beyond the per-entry limit.
pub const OTHER: &str = "_other";

/// Which entries have series of their own, and the fire counters' label
/// sets created so far (prometheus-client cannot list them).
#[derive(Debug, Default)]
struct PerEntry {
    limit: usize,
    tracked: HashSet<String>,
    fire_labels: HashSet<EntryQueue>,
}

/// An entry's instants, for its gauges.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryTimes {
    pub entry: String,
    pub last_sent: Option<chrono::DateTime<chrono::Utc>>,
    pub next_fire: Option<chrono::DateTime<chrono::Utc>>,
}

/// What the leader last found overdue: the count and the first names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overdue {
    pub count: usize,
    /// At most [`OVERDUE_NAMES`], by name.
    pub names: Vec<String>,
}

/// Most overdue entries named in the heartbeat and on the status page.
pub const OVERDUE_NAMES: usize = 50;

type F64Gauge = Gauge<f64, AtomicU64>;

/// Every metric sqsbeat exports.
pub struct Metrics {
    registry: Registry,
    pub fires_sent: Family<EntryQueue, Counter>,
    pub fires_failed: Family<EntryQueue, Counter>,
    pub fire_lateness: Histogram,
    pub fires_missed: Family<Reason, Counter>,
    pub sqs_request_seconds: Family<Operation, Histogram>,
    pub sqs_errors: Family<OperationCode, Counter>,
    pub jobs_released: Counter,
    pub jobs_release_failed: Counter,
    pub jobs_failed: Counter,
    pub clock_steps: Family<Direction, Counter>,
    pub releaser_lag: Histogram,
    pub pending_jobs: Family<DueBucket, Gauge>,
    pub leader: Gauge,
    pub epoch: Gauge,
    pub reloads: Counter,
    pub reload_errors: Counter,
    pub entry_rows_invalid: Gauge,
    pub clock_skew: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub intake_messages: Family<Outcome, Counter>,
    pub intake_delete_failures: Counter,
    pub entries: Gauge,
    pub entries_overdue: Gauge,
    pub entry_last_sent: Family<EntryLabel, F64Gauge>,
    pub entry_next_fire: Family<EntryLabel, F64Gauge>,
    pub sentry_check_ins: Family<Outcome, Counter>,
    per_entry: RwLock<PerEntry>,
    overdue: Mutex<Option<Overdue>>,
}

fn seconds_buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ]
    .into_iter()
}

impl Metrics {
    /// A registry of its own; the process's is [`get`].
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("sqsbeat");
        let fires_sent = Family::<EntryQueue, Counter>::default();
        r.register(
            "fires_sent",
            "Periodic fires accepted by SQS",
            fires_sent.clone(),
        );
        let fires_failed = Family::<EntryQueue, Counter>::default();
        r.register(
            "fires_failed",
            "Failed attempts to send a periodic fire (each is retried)",
            fires_failed.clone(),
        );
        let fire_lateness = Histogram::new(seconds_buckets());
        r.register(
            "fire_lateness_seconds",
            "Scheduled send instant to SQS accepting the fire",
            fire_lateness.clone(),
        );
        let fires_missed = Family::<Reason, Counter>::default();
        r.register("fires_missed", "Slots decided without sending, by reason (expired, catch_up_latest, catch_up_none, bound)", fires_missed.clone());
        let sqs_request_seconds = Family::<Operation, Histogram>::new_with_constructor(|| {
            Histogram::new(seconds_buckets())
        });
        r.register(
            "sqs_request_seconds",
            "SQS request latency by operation",
            sqs_request_seconds.clone(),
        );
        let sqs_errors = Family::<OperationCode, Counter>::default();
        r.register(
            "sqs_errors",
            "SQS errors by operation and error code",
            sqs_errors.clone(),
        );
        let jobs_released = Counter::default();
        r.register(
            "jobs_released",
            "One-off jobs handed to SQS",
            jobs_released.clone(),
        );
        let jobs_release_failed = Counter::default();
        r.register(
            "jobs_release_failed",
            "Failed attempts to release a one-off job (each is retried)",
            jobs_release_failed.clone(),
        );
        let releaser_lag = Histogram::new(seconds_buckets());
        r.register(
            "releaser_lag_seconds",
            "Window opening of a job to its release",
            releaser_lag.clone(),
        );
        let pending_jobs = Family::<DueBucket, Gauge>::default();
        r.register(
            "pending_jobs",
            "Pending one-off jobs by how soon they are due",
            pending_jobs.clone(),
        );
        let leader = Gauge::default();
        r.register(
            "leader",
            "1 while this replica leads (fires periodic entries)",
            leader.clone(),
        );
        let epoch = Gauge::default();
        r.register(
            "leader_epoch",
            "Fencing epoch of this replica's leadership (0 when standby)",
            epoch.clone(),
        );
        let jobs_failed = Counter::default();
        r.register(
            "jobs_failed",
            "One-off jobs marked failed instead of sent (not a valid job, or expired before release)",
            jobs_failed.clone(),
        );
        let clock_steps = Family::<Direction, Counter>::default();
        r.register(
            "clock_steps",
            "Steps of the host's wall clock seen by the beat (forward or back, over 1 s)",
            clock_steps.clone(),
        );
        let reloads = Counter::default();
        r.register(
            "schedule_reloads",
            "Schedule reloads applied",
            reloads.clone(),
        );
        let reload_errors = Counter::default();
        r.register(
            "schedule_reload_errors",
            "Schedule reloads rejected or failed",
            reload_errors.clone(),
        );
        let entry_rows_invalid = Gauge::default();
        r.register(
            "entry_rows_invalid",
            "Rows of the entries table and of django-celery-beat's table not loaded: they do not validate or their name is taken (the log says why)",
            entry_rows_invalid.clone(),
        );
        let clock_skew = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        r.register(
            "clock_skew_seconds",
            "Host clock minus the database's, last measured (PostgreSQL only); beyond 2 s this replica neither leads nor releases",
            clock_skew.clone(),
        );
        let intake_messages = Family::<Outcome, Counter>::default();
        r.register(
            "intake_messages",
            "Messages read from the intake queue: stored (a new job, or a Celery retry replacing one), duplicate (stored already), malformed (each receive of one)",
            intake_messages.clone(),
        );
        let intake_delete_failures = Counter::default();
        r.register(
            "intake_delete_failures",
            "Stored intake messages SQS did not delete (each comes back and is a duplicate)",
            intake_delete_failures.clone(),
        );
        let build = Family::<Build, Gauge>::default();
        build
            .get_or_create(&Build {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        r.register("build_info", "sqsbeat's version", build);
        let entries = Gauge::default();
        r.register(
            "entries",
            "Entries in the schedule this replica's beat runs (leader)",
            entries.clone(),
        );
        let entries_overdue = Gauge::default();
        r.register(
            "entries_overdue",
            "Enabled entries, not paused, with a slot due more than its grace ago that was neither sent nor recorded missed (leader; 0 on standbys)",
            entries_overdue.clone(),
        );
        let entry_last_sent = Family::<EntryLabel, F64Gauge>::default();
        r.register(
            "entry_last_sent_timestamp_seconds",
            "Slot of the entry's last fire SQS accepted, Unix time (leader; entries within [metrics] per_entry_limit)",
            entry_last_sent.clone(),
        );
        let entry_next_fire = Family::<EntryLabel, F64Gauge>::default();
        r.register(
            "entry_next_fire_timestamp_seconds",
            "When the entry's next slot is sent, Unix time (leader; entries within [metrics] per_entry_limit)",
            entry_next_fire.clone(),
        );
        let sentry_check_ins = Family::<Outcome, Counter>::default();
        r.register(
            "sentry_check_ins",
            "Sentry Crons in_progress check-ins: sent, failed, or dropped (queue full)",
            sentry_check_ins.clone(),
        );
        Metrics {
            registry: r,
            fires_sent,
            fires_failed,
            fire_lateness,
            fires_missed,
            sqs_request_seconds,
            sqs_errors,
            jobs_released,
            jobs_release_failed,
            jobs_failed,
            clock_steps,
            releaser_lag,
            pending_jobs,
            leader,
            epoch,
            reloads,
            reload_errors,
            entry_rows_invalid,
            clock_skew,
            intake_messages,
            intake_delete_failures,
            entries,
            entries_overdue,
            entry_last_sent,
            entry_next_fire,
            sentry_check_ins,
            per_entry: RwLock::new(PerEntry {
                limit: crate::config::DEFAULT_PER_ENTRY_LIMIT,
                ..PerEntry::default()
            }),
            overdue: Mutex::new(None),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Metrics {
    /// `[metrics] per_entry_limit`, set once at start-up.
    pub fn set_per_entry_limit(&self, limit: usize) {
        if let Ok(mut p) = self.per_entry.write() {
            p.limit = limit;
        }
    }

    /// Gives series of their own to the first entries by name, up to the
    /// limit, and drops the series of entries no longer in the schedule,
    /// no longer within the limit, or sending to another queue. Returns
    /// the names tracked.
    pub fn track_entries(&self, entries: &[crate::entry::Entry]) -> HashSet<String> {
        self.entries
            .set(i64::try_from(entries.len()).unwrap_or(i64::MAX));
        let Ok(mut p) = self.per_entry.write() else {
            return HashSet::new();
        };
        let mut names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        if names.len() > p.limit {
            // Only the first `limit` need ordering.
            names.select_nth_unstable(p.limit);
            names.truncate(p.limit);
        }
        let tracked: HashSet<String> = names.into_iter().map(str::to_string).collect();
        let current: HashSet<EntryQueue> = entries
            .iter()
            .map(|e| EntryQueue {
                entry: if tracked.contains(&e.name) {
                    e.name.clone()
                } else {
                    OTHER.to_string()
                },
                queue: e.queue.to_string(),
            })
            .collect();
        let (sent, failed) = (&self.fires_sent, &self.fires_failed);
        p.fire_labels.retain(|l| {
            let keep = current.contains(l);
            if !keep {
                sent.remove(l);
                failed.remove(l);
            }
            keep
        });
        for gone in p.tracked.difference(&tracked) {
            let l = EntryLabel {
                entry: gone.clone(),
            };
            self.entry_last_sent.remove(&l);
            self.entry_next_fire.remove(&l);
        }
        p.tracked = tracked.clone();
        tracked
    }

    /// The fire counters' label set for an entry's fire.
    fn fire_label(&self, entry: &str, queue: &str) -> EntryQueue {
        let (label, known) = match self.per_entry.read() {
            Ok(p) => {
                let own = p.tracked.contains(entry);
                let label = EntryQueue {
                    entry: if own { entry } else { OTHER }.to_string(),
                    queue: queue.to_string(),
                };
                let known = p.fire_labels.contains(&label);
                (label, known)
            }
            Err(_) => (
                EntryQueue {
                    entry: OTHER.to_string(),
                    queue: queue.to_string(),
                },
                true,
            ),
        };
        if !known && let Ok(mut p) = self.per_entry.write() {
            p.fire_labels.insert(label.clone());
        }
        label
    }

    /// A fire of `entry` SQS accepted.
    pub fn fire_sent(&self, entry: &str, queue: &str) {
        self.fires_sent
            .get_or_create(&self.fire_label(entry, queue))
            .inc();
    }

    /// A failed attempt to send a fire of `entry`.
    pub fn fire_failed(&self, entry: &str, queue: &str) {
        self.fires_failed
            .get_or_create(&self.fire_label(entry, queue))
            .inc();
    }

    /// The leader's freshness check: the overdue gauge, and the instants
    /// of the tracked entries (an entry without an instant loses its
    /// series).
    pub fn export_freshness(&self, overdue: Overdue, times: &[EntryTimes]) {
        self.entries_overdue
            .set(i64::try_from(overdue.count).unwrap_or(i64::MAX));
        let secs = |t: chrono::DateTime<chrono::Utc>| t.timestamp_millis() as f64 / 1000.0;
        for t in times {
            let l = EntryLabel {
                entry: t.entry.clone(),
            };
            for (family, at) in [
                (&self.entry_last_sent, t.last_sent),
                (&self.entry_next_fire, t.next_fire),
            ] {
                match at {
                    Some(at) => {
                        family.get_or_create(&l).set(secs(at));
                    }
                    None => {
                        family.remove(&l);
                    }
                }
            }
        }
        if let Ok(mut o) = self.overdue.lock() {
            *o = Some(overdue);
        }
    }

    /// This replica stopped leading: what it computed is no longer true.
    pub fn clear_freshness(&self) {
        self.entries_overdue.set(0);
        self.entry_last_sent.clear();
        self.entry_next_fire.clear();
        if let Ok(mut o) = self.overdue.lock() {
            *o = None;
        }
    }

    /// The leader's last freshness check; `None` on a standby.
    pub fn overdue(&self) -> Option<Overdue> {
        self.overdue.lock().ok().and_then(|o| o.clone())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(names: &[(&str, &str)]) -> Vec<crate::entry::Entry> {
        let toml: String = names
            .iter()
            .map(|(n, q)| {
                format!("[entries.{n}]\ntask = \"t.t\"\nevery = \"1m\"\nqueue = \"{q}\"\n")
            })
            .collect();
        let loaded =
            crate::entry::file::parse_str("t.toml", &toml, &crate::entry::Context::default());
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        loaded.entries
    }

    fn series(m: &Metrics, metric: &str) -> Vec<String> {
        let mut out: Vec<String> = m
            .render()
            .lines()
            .filter(|l| l.starts_with(metric))
            .map(str::to_string)
            .collect();
        out.sort();
        out
    }

    #[test]
    fn entries_beyond_the_limit_count_under_other_and_removed_ones_lose_their_series() {
        let m = Metrics::new();
        m.set_per_entry_limit(2);
        let all = entries(&[("c", "q"), ("a", "q"), ("b", "q")]);
        let tracked = m.track_entries(&all);
        assert_eq!(tracked, HashSet::from(["a".to_string(), "b".to_string()]));
        for e in ["a", "b", "c", "c"] {
            m.fire_sent(e, "q");
        }
        m.fire_failed("c", "q");
        assert_eq!(
            series(&m, "sqsbeat_fires_sent_total"),
            [
                "sqsbeat_fires_sent_total{entry=\"_other\",queue=\"q\"} 2",
                "sqsbeat_fires_sent_total{entry=\"a\",queue=\"q\"} 1",
                "sqsbeat_fires_sent_total{entry=\"b\",queue=\"q\"} 1",
            ]
        );
        let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        m.export_freshness(
            Overdue {
                count: 1,
                names: vec!["b".into()],
            },
            &[
                EntryTimes {
                    entry: "a".into(),
                    last_sent: Some(t("2026-11-21T10:00:00Z")),
                    next_fire: Some(t("2026-11-21T10:01:00.5Z")),
                },
                EntryTimes {
                    entry: "b".into(),
                    last_sent: None,
                    next_fire: Some(t("2026-11-21T10:01:00Z")),
                },
            ],
        );
        assert_eq!(
            series(&m, "sqsbeat_entries_overdue"),
            ["sqsbeat_entries_overdue 1"]
        );
        assert_eq!(
            series(&m, "sqsbeat_entry_last_sent_timestamp_seconds"),
            ["sqsbeat_entry_last_sent_timestamp_seconds{entry=\"a\"} 1795255200.0"]
        );
        assert_eq!(
            series(&m, "sqsbeat_entry_next_fire_timestamp_seconds").len(),
            2
        );
        // b is removed and c moves queue: their series go, a's stay.
        m.track_entries(&entries(&[("a", "q"), ("c", "other")]));
        assert_eq!(
            series(&m, "sqsbeat_fires_sent_total"),
            ["sqsbeat_fires_sent_total{entry=\"a\",queue=\"q\"} 1"]
        );
        assert!(series(&m, "sqsbeat_fires_failed_total").is_empty());
        assert_eq!(
            series(&m, "sqsbeat_entry_next_fire_timestamp_seconds"),
            ["sqsbeat_entry_next_fire_timestamp_seconds{entry=\"a\"} 1795255260.5"]
        );
        m.clear_freshness();
        assert!(m.overdue().is_none());
        assert!(series(&m, "sqsbeat_entry_next_fire_timestamp_seconds").is_empty());
    }
}
