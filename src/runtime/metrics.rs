//! Prometheus metrics (prometheus-client): one registry, filled by the
//! beat, the sink and the releaser, rendered by `/metrics`.

use std::sync::OnceLock;

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

/// What became of an intake message: `stored`, `duplicate`, `malformed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Build {
    pub version: String,
}

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
}

fn seconds_buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ]
    .into_iter()
}

impl Metrics {
    fn new() -> Self {
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

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}
