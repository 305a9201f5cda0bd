//! An entry as written: the schedule file's (and the entries table's)
//! shape, every field optional and loosely typed where a precise error
//! beats serde's generic one. [`super::validate()`] turns it into an
//! [`super::Entry`].

use serde::Deserialize;
use serde_json::Value;

/// A crontab table field: Celery accepts numbers as well as strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum CronField {
    Text(String),
    Number(i64),
}

impl CronField {
    pub(crate) fn text(&self) -> String {
        match self {
            CronField::Text(s) => s.clone(),
            CronField::Number(n) => n.to_string(),
        }
    }
}

/// A Celery-style `crontab` table; missing fields are `*`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCrontab {
    pub minute: Option<CronField>,
    pub hour: Option<CronField>,
    pub day_of_week: Option<CronField>,
    pub day_of_month: Option<CronField>,
    pub month_of_year: Option<CronField>,
}

/// A TOML datetime or a string; both must carry an offset.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawInstant {
    Text(String),
    Toml(toml::value::Datetime),
}

impl RawInstant {
    pub(crate) fn text(&self) -> String {
        match self {
            RawInstant::Text(s) => s.clone(),
            RawInstant::Toml(d) => d.to_string(),
        }
    }
}

/// The keys an entry table may hold (unknown keys are reported by name).
pub const ENTRY_KEYS: &[&str] = &[
    "task",
    "cron",
    "crontab",
    "every",
    "timezone",
    "args",
    "kwargs",
    "queue",
    "priority",
    "headers",
    "expires",
    "enabled",
    "start_at",
    "end_at",
    "catch_up",
    "grace",
    "jitter",
    "anchor",
    "group_id",
    "sentry_monitor",
];

/// The keys `[defaults]` may hold: what makes sense to share across entries.
pub const DEFAULT_KEYS: &[&str] = &[
    "timezone",
    "queue",
    "priority",
    "headers",
    "expires",
    "enabled",
    "catch_up",
    "grace",
    "jitter",
    "sentry_monitor",
];

/// One entry table as written.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawEntry {
    pub task: Option<String>,
    pub cron: Option<String>,
    pub crontab: Option<RawCrontab>,
    pub every: Option<String>,
    pub timezone: Option<String>,
    pub args: Option<Value>,
    pub kwargs: Option<Value>,
    pub queue: Option<String>,
    pub priority: Option<i64>,
    pub headers: Option<Value>,
    pub expires: Option<String>,
    pub enabled: Option<bool>,
    pub start_at: Option<RawInstant>,
    pub end_at: Option<RawInstant>,
    pub catch_up: Option<String>,
    pub grace: Option<String>,
    pub jitter: Option<String>,
    pub anchor: Option<RawInstant>,
    pub group_id: Option<String>,
    /// Fires carry Sentry Crons' headers (see [`crate::wire::sentry`]).
    pub sentry_monitor: Option<bool>,
}

impl RawEntry {
    /// Fills unset fields from the file's `[defaults]`.
    pub fn with_defaults(mut self, d: &RawEntry) -> RawEntry {
        macro_rules! inherit {
            ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = d.$f.clone(); } )* };
        }
        inherit!(
            timezone,
            queue,
            priority,
            headers,
            expires,
            enabled,
            catch_up,
            grace,
            jitter,
            sentry_monitor
        );
        self
    }
}
