//! A periodic entry (Celery's `ScheduleEntry`): what to send, where, and when.
//!
//! `RawEntry` is the schedule file's shape (serde, every field optional);
//! `Entry` is the validated model the rest of the program trusts. Validation
//! is pure and reports every problem it finds, not just the first.

pub mod file;
pub mod merge;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::schedule::duration::{format_duration, parse_duration, parse_instant};
use crate::schedule::{CronSchedule, CrontabFields, IntervalSchedule, Schedule};
use crate::wire::celery::{self, BodyEncoding, RESERVED_HEADERS, TaskMessage};

/// Default logical queue, as Celery's `task_default_queue`.
pub const DEFAULT_QUEUE: &str = "celery";
/// Default lateness after which a fire counts as missed.
pub const DEFAULT_GRACE: Duration = Duration::minutes(1);

/// What to do with fires missed while no leader ran (or `run` was paused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CatchUp {
    /// Fire the most recent missed fire once.
    #[default]
    Latest,
    /// Fire every missed fire, up to a bound.
    All,
    /// Drop missed fires.
    None,
}

impl CatchUp {
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Latest => "latest",
            CatchUp::All => "all",
            CatchUp::None => "none",
        }
    }
}

/// Where an entry was defined, for messages that point back at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

/// A validated periodic entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub task: String,
    pub schedule: Schedule,
    pub args: Vec<Value>,
    pub kwargs: Map<String, Value>,
    pub queue: String,
    pub priority: u8,
    pub headers: Map<String, Value>,
    pub expires: Option<Duration>,
    pub enabled: bool,
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
    pub catch_up: CatchUp,
    pub grace: Duration,
    pub jitter: Option<Duration>,
    /// FIFO queues only: the `MessageGroupId` (default: the entry name).
    pub group_id: Option<String>,
    pub origin: Origin,
}

impl Entry {
    /// The next nominal fire strictly after `after`, inside the entry's
    /// start/end window (both ends inclusive).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<crate::schedule::Fire> {
        let mut from = after;
        if let Some(start) = self.start_at {
            // Fires before the window are not fires: search from just before it.
            let before_start = start - Duration::milliseconds(1);
            if from < before_start {
                from = before_start;
            }
        }
        let fire = self.schedule.next_after(from)?;
        match self.end_at {
            Some(end) if fire.at > end => None,
            _ => Some(fire),
        }
    }

    /// When a nominal fire is actually sent: the nominal instant plus a
    /// jitter that is a pure function of (entry, instant), so every replica
    /// and every restart agrees on it.
    pub fn send_at(&self, nominal: DateTime<Utc>) -> DateTime<Utc> {
        match self.jitter {
            Some(j) if j.num_milliseconds() > 0 => {
                let key = format!("{}\n{}", self.name, nominal.timestamp_millis());
                let ms = fnv1a64(key.as_bytes()) % j.num_milliseconds() as u64;
                nominal + Duration::milliseconds(ms as i64)
            }
            _ => nominal,
        }
    }

    /// The message this entry sends for the fire at `nominal`.
    pub fn message<'a>(
        &'a self,
        id: &'a str,
        nominal: DateTime<Utc>,
        origin: &'a str,
    ) -> TaskMessage<'a> {
        TaskMessage {
            task: &self.task,
            id,
            args: &self.args,
            kwargs: &self.kwargs,
            queue: &self.queue,
            priority: self.priority,
            headers: &self.headers,
            eta: None,
            expires: self.expires.map(|d| nominal + d),
            scheduled_at: nominal,
            periodic_entry: Some(&self.name),
            origin,
        }
    }
}

/// 64-bit FNV-1a: tiny and stable across Rust versions and platforms,
/// unlike `std`'s hasher, which jitter must not depend on.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A crontab table field: Celery accepts numbers as well as strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum CronField {
    Text(String),
    Number(i64),
}

impl CronField {
    fn text(&self) -> String {
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
    fn text(&self) -> String {
        match self {
            RawInstant::Text(s) => s.clone(),
            RawInstant::Toml(d) => d.to_string(),
        }
    }
}

/// The keys an entry table may hold (unknown keys are reported by name).
pub const ENTRY_KEYS: &[&str] = &[
    "task", "cron", "crontab", "every", "timezone", "args", "kwargs", "queue", "priority",
    "headers", "expires", "enabled", "start_at", "end_at", "catch_up", "grace", "jitter", "anchor",
    "group_id",
];

/// The keys `[defaults]` may hold: what makes sense to share across entries.
pub const DEFAULT_KEYS: &[&str] = &[
    "timezone", "queue", "priority", "headers", "expires", "enabled", "catch_up", "grace", "jitter",
];

/// One entry table as written. Values stay loosely typed where a precise
/// error beats serde's generic one.
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
}

impl RawEntry {
    /// Fills unset fields from the file's `[defaults]`.
    pub fn with_defaults(mut self, d: &RawEntry) -> RawEntry {
        macro_rules! inherit {
            ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = d.$f.clone(); } )* };
        }
        inherit!(
            timezone, queue, priority, headers, expires, enabled, catch_up, grace, jitter
        );
        self
    }
}

/// Settings from outside the file that validation needs.
#[derive(Debug, Clone)]
pub struct Context {
    /// Zone for entries that name none (config `timezone`, else UTC).
    pub default_tz: Tz,
    pub max_message_bytes: usize,
}

impl Default for Context {
    fn default() -> Self {
        Context {
            default_tz: Tz::UTC,
            max_message_bytes: celery::SQS_MAX_MESSAGE_BYTES,
        }
    }
}

/// One problem with one entry; the loader adds file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key the problem is about, to point at its line when known.
    pub key: Option<&'static str>,
    pub message: String,
    pub warning: bool,
}

impl Problem {
    fn error(key: &'static str, message: impl Into<String>) -> Self {
        Problem {
            key: Some(key),
            message: message.into(),
            warning: false,
        }
    }
    fn warning(key: &'static str, message: impl Into<String>) -> Self {
        Problem {
            key: Some(key),
            message: message.into(),
            warning: true,
        }
    }
}

/// Validates one raw entry. Returns the entry when there are no errors
/// (warnings may still be present), and every problem found.
pub fn validate(
    name: &str,
    raw: RawEntry,
    origin: Origin,
    ctx: &Context,
) -> (Option<Entry>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut err = |key: &'static str, msg: String| problems.push(Problem::error(key, msg));

    if name.trim().is_empty() {
        err("", "entry name is empty".into());
    }
    let task = match raw.task.as_deref().map(str::trim) {
        None | Some("") => {
            err(
                "task",
                "missing `task` (the Celery task name, e.g. \"app.tasks.cleanup\")".into(),
            );
            None
        }
        Some(t) => match check_task_name(t) {
            Ok(()) => Some(t.to_string()),
            Err(m) => {
                err("task", m);
                None
            }
        },
    };

    let tz = match raw.timezone.as_deref() {
        None => Some(ctx.default_tz),
        Some(z) => match z.parse::<Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                err(
                    "timezone",
                    format!(
                        "unknown timezone {z:?}; use an IANA name such as \"UTC\", \"Europe/London\" or \"America/Sao_Paulo\""
                    ),
                );
                None
            }
        },
    };

    let anchor = match raw.anchor.as_ref().map(|a| parse_instant(&a.text())) {
        None => Some(DateTime::UNIX_EPOCH),
        Some(Ok(a)) => Some(a),
        Some(Err(e)) => {
            err("anchor", format!("anchor: {e}"));
            None
        }
    };

    let kinds = [
        raw.cron.is_some(),
        raw.crontab.is_some(),
        raw.every.is_some(),
    ];
    let schedule = match kinds.iter().filter(|k| **k).count() {
        0 => {
            err(
                "",
                "no schedule: set exactly one of `cron`, `crontab` or `every`".into(),
            );
            None
        }
        1 => {
            if let Some(expr) = &raw.cron {
                tz.and_then(|tz| match CronSchedule::parse_cron(expr, tz) {
                    Ok(c) => Some(Schedule::Cron(c)),
                    Err(e) => {
                        err("cron", e.0);
                        None
                    }
                })
            } else if let Some(ct) = &raw.crontab {
                let f = |v: &Option<CronField>| v.as_ref().map_or("*".to_string(), CronField::text);
                let fields = CrontabFields {
                    minute: f(&ct.minute),
                    hour: f(&ct.hour),
                    day_of_week: f(&ct.day_of_week),
                    day_of_month: f(&ct.day_of_month),
                    month_of_year: f(&ct.month_of_year),
                };
                tz.and_then(|tz| match CronSchedule::parse_crontab(&fields, tz) {
                    Ok(c) => Some(Schedule::Cron(c)),
                    Err(e) => {
                        err("crontab", e.0);
                        None
                    }
                })
            } else {
                let every = raw.every.as_deref().unwrap_or_default();
                match parse_duration(every) {
                    Ok(d) if d <= Duration::zero() => {
                        err(
                            "every",
                            format!("every = {every:?} must be greater than zero"),
                        );
                        None
                    }
                    Ok(d) => anchor
                        .map(|anchor| Schedule::Interval(IntervalSchedule { every: d, anchor })),
                    Err(e) => {
                        err("every", format!("every: {e}"));
                        None
                    }
                }
            }
        }
        _ => {
            let set: Vec<&str> = ["cron", "crontab", "every"]
                .into_iter()
                .zip(kinds)
                .filter_map(|(n, k)| k.then_some(n))
                .collect();
            err(
                "cron",
                format!(
                    "set exactly one of `cron`, `crontab` or `every`, not {}",
                    set.join(" and ")
                ),
            );
            None
        }
    };
    let day_warning = match &schedule {
        Some(Schedule::Cron(c)) => day_rule_warning(&raw, c),
        _ => None,
    };
    if raw.anchor.is_some() && raw.every.is_none() {
        err(
            "anchor",
            "`anchor` applies to `every` only; cron fires follow the wall clock".into(),
        );
    }

    let args = match raw.args {
        None => Some(Vec::new()),
        Some(Value::Array(a)) => Some(a),
        Some(other) => {
            err(
                "args",
                format!(
                    "args must be an array (e.g. args = [1, \"two\"]), not {}",
                    json_kind(&other)
                ),
            );
            None
        }
    };
    let kwargs = match raw.kwargs {
        None => Some(Map::new()),
        Some(Value::Object(m)) => Some(m),
        Some(other) => {
            err(
                "kwargs",
                format!(
                    "kwargs must be a table (e.g. kwargs = {{ batch = 100 }}), not {}",
                    json_kind(&other)
                ),
            );
            None
        }
    };
    let headers = match raw.headers {
        None => Some(Map::new()),
        Some(Value::Object(m)) => {
            let reserved: Vec<&String> = m
                .keys()
                .filter(|k| RESERVED_HEADERS.contains(&k.as_str()))
                .collect();
            if reserved.is_empty() {
                Some(m)
            } else {
                err(
                    "headers",
                    format!(
                        "headers may not set {}: Celery's protocol (or sqsbeat) owns them",
                        reserved
                            .iter()
                            .map(|k| format!("{k:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                None
            }
        }
        Some(other) => {
            err(
                "headers",
                format!("headers must be a table, not {}", json_kind(&other)),
            );
            None
        }
    };

    let queue = match raw.queue.as_deref().map(str::trim) {
        None => Some(DEFAULT_QUEUE.to_string()),
        Some("") => {
            err("queue", "queue is empty".into());
            None
        }
        Some(q) => match check_queue_name(q) {
            Ok(()) => Some(q.to_string()),
            Err(m) => {
                err("queue", m);
                None
            }
        },
    };
    let priority = match raw.priority {
        None => Some(0),
        Some(p) if (0..=255).contains(&p) => Some(p as u8),
        Some(p) => {
            err("priority", format!("priority {p} is out of range 0..=255"));
            None
        }
    };

    let mut positive = |key: &'static str, value: &Option<String>| -> Option<Option<Duration>> {
        match value.as_deref().map(parse_duration) {
            None => Some(None),
            Some(Ok(d)) if d > Duration::zero() => Some(Some(d)),
            Some(Ok(_)) => {
                err(key, format!("{key} must be greater than zero"));
                None
            }
            Some(Err(e)) => {
                err(key, format!("{key}: {e}"));
                None
            }
        }
    };
    let expires = positive("expires", &raw.expires);
    let grace = positive("grace", &raw.grace);
    let jitter = positive("jitter", &raw.jitter);

    let catch_up = match raw.catch_up.as_deref() {
        None => Some(CatchUp::default()),
        Some("latest") => Some(CatchUp::Latest),
        Some("all") => Some(CatchUp::All),
        Some("none") => Some(CatchUp::None),
        Some(other) => {
            err(
                "catch_up",
                format!("catch_up = {other:?}: expected \"latest\", \"all\" or \"none\""),
            );
            None
        }
    };

    let mut instant =
        |key: &'static str, value: &Option<RawInstant>| -> Option<Option<DateTime<Utc>>> {
            match value.as_ref().map(|v| parse_instant(&v.text())) {
                None => Some(None),
                Some(Ok(t)) => Some(Some(t)),
                Some(Err(e)) => {
                    err(key, format!("{key}: {e}"));
                    None
                }
            }
        };
    let start_at = instant("start_at", &raw.start_at);
    let end_at = instant("end_at", &raw.end_at);
    if let (Some(Some(s)), Some(Some(e))) = (start_at, end_at)
        && s > e
    {
        err(
            "end_at",
            format!(
                "start_at ({}) is after end_at ({})",
                s.to_rfc3339(),
                e.to_rfc3339()
            ),
        );
    }
    if let (Some(Some(Schedule::Interval(i))), Some(Some(j))) =
        (schedule.as_ref().map(Some), jitter)
        && j >= i.every
    {
        err(
            "jitter",
            format!(
                "jitter ({}) must be shorter than the interval ({}), or fires would overtake each other",
                format_duration(j),
                format_duration(i.every)
            ),
        );
    }
    let group_id = match raw.group_id.as_deref() {
        Some(g) if g.is_empty() || g.len() > 128 => {
            err("group_id", "group_id must be 1 to 128 characters".into());
            None
        }
        other => Some(other.map(str::to_string)),
    };

    // Every field parsed: build the entry, then the checks that need it.
    let (
        Some(task),
        Some(schedule),
        Some(args),
        Some(kwargs),
        Some(headers),
        Some(queue),
        Some(priority),
        Some(expires),
        Some(grace),
        Some(jitter),
        Some(catch_up),
        Some(start_at),
        Some(end_at),
        Some(group_id),
    ) = (
        task, schedule, args, kwargs, headers, queue, priority, expires, grace, jitter, catch_up,
        start_at, end_at, group_id,
    )
    else {
        return (None, problems);
    };
    let entry = Entry {
        name: name.to_string(),
        task,
        schedule,
        args,
        kwargs,
        queue,
        priority,
        headers,
        expires,
        enabled: raw.enabled.unwrap_or(true),
        start_at,
        end_at,
        catch_up,
        grace: grace.unwrap_or(DEFAULT_GRACE),
        jitter,
        group_id,
        origin,
    };

    if message_size_bound(&entry) > ctx.max_message_bytes
        && let size = message_size(&entry)
        && size > ctx.max_message_bytes
    {
        problems.push(Problem::error("args", format!(
            "the task message would be {size} bytes on SQS, over the {} byte limit; pass a reference (an id, a key) instead of the data",
            ctx.max_message_bytes
        )));
        return (None, problems);
    }
    if let Schedule::Cron(c) = &entry.schedule {
        if !c.ever_fires {
            problems.push(Problem::warning(
                "cron",
                format!(
                    "{} never fires: no date matches it (e.g. February 30)",
                    c.expr
                ),
            ));
        }
        problems.extend(day_warning);
    }
    (Some(entry), problems)
}

/// `check` warns where a cron string and a Celery crontab would read the day
/// fields differently: Vixie ORs day-of-month and day-of-week when both are
/// restricted, Celery ANDs them.
fn day_rule_warning(raw: &RawEntry, c: &CronSchedule) -> Option<Problem> {
    let restricted = |f: &str| f != "*" && !f.starts_with('*');
    match (&raw.cron, &raw.crontab) {
        (Some(expr), _) => {
            let fields: Vec<&str> = expr.split_whitespace().collect();
            let (dom, dow) = match fields.len() {
                5 => (fields[2], fields[4]),
                6 => (fields[3], fields[5]),
                _ => return None,
            };
            (restricted(dom) && restricted(dow)).then(|| Problem::warning("cron", format!(
                "{} fires when day-of-month {dom} OR day-of-week {dow} matches (Vixie cron); Celery's crontab() would need both; use a crontab table for that",
                c.expr
            )))
        }
        (None, Some(ct)) => {
            let dom = ct
                .day_of_month
                .as_ref()
                .map(CronField::text)
                .unwrap_or_else(|| "*".into());
            let dow = ct
                .day_of_week
                .as_ref()
                .map(CronField::text)
                .unwrap_or_else(|| "*".into());
            (restricted(&dom) && restricted(&dow)).then(|| Problem::warning("crontab", format!(
                "crontab fires only when day_of_month {dom} AND day_of_week {dow} both match (Celery's rule); a cron string would fire when either matches"
            )))
        }
        _ => None,
    }
}

/// An upper bound on [`message_size`] that builds no message: building one
/// per entry was half the time of loading a 100 000-entry schedule.
///
/// Python's `json.dumps` writes a value in at most 3× its compact
/// serde_json length (`\uXXXX` for 2-3 UTF-8 bytes, a surrogate pair for
/// 4, `", "` for `,`); names appear in a few headers; the fixed part
/// (protocol headers, properties, the capped reprs) is under 16 KiB; the
/// body and then the envelope are base64-encoded (4/3 each).
pub fn message_size_bound(entry: &Entry) -> usize {
    fn compact_len<T: serde::Serialize>(v: &T) -> usize {
        serde_json::to_vec(v).map_or(usize::MAX / 64, |v| v.len())
    }
    let payload =
        compact_len(&entry.args) + compact_len(&entry.kwargs) + compact_len(&entry.headers);
    let names = entry.name.len()
        + entry.task.len()
        + entry.queue.len()
        + entry.group_id.as_ref().map_or(0, String::len);
    ((payload * 3 + names * 6 * 4 + 16_384) * 16).div_ceil(9) + 1024
}

/// The SQS body size of this entry's message, as it will be sent.
pub fn message_size(entry: &Entry) -> usize {
    // A fixed id and instant of the real widths: the size depends on
    // lengths only, and expiry adds its `expiration` property.
    let id = "00000000-0000-0000-0000-000000000000";
    let nominal = DateTime::UNIX_EPOCH + Duration::days(20_000) + Duration::microseconds(123_456);
    let origin = "sqsbeat@a-host-name-of-sixty-four-characters-which-is-the-max-length";
    entry
        .message(id, nominal, origin)
        .sqs_body(nominal, BodyEncoding::Base64)
        .len()
}

/// Celery task names are dotted identifiers; SQS and Celery accept more,
/// but a space or control character is always a mistake.
pub fn check_task_name(t: &str) -> Result<(), String> {
    if t.len() > 512 {
        return Err("task name is longer than 512 characters".into());
    }
    if let Some(c) = t.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "task name {t:?} contains {c:?}; Celery task names look like \"app.tasks.send_report\""
        ));
    }
    Ok(())
}

/// Logical queue names must mangle to a valid SQS name (kombu's rules).
pub fn check_queue_name(q: &str) -> Result<(), String> {
    if let Some(c) = q
        .chars()
        .find(|c| !c.is_ascii() || c.is_ascii_whitespace() || c.is_ascii_control())
    {
        return Err(format!(
            "queue {q:?} contains {c:?}; SQS queue names are ASCII letters, digits, '-' and '_' (kombu turns '.' into '-')"
        ));
    }
    if q.len() > 80 {
        return Err(format!("queue {q:?} is longer than SQS's 80 characters"));
    }
    Ok(())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            file: "t.toml".into(),
            line: 1,
        }
    }

    /// The cheap bound stands in for building the message at load time, so
    /// it must never be below the real size, whatever the payload holds.
    #[test]
    fn message_size_bound_is_never_below_the_real_size() {
        let strings = [
            String::new(),
            "plain ascii".into(),
            "quote \" backslash \\ tab \t nl \n bell \u{7}".into(),
            "é ü ñ 漢字 ".repeat(50),
            "😀🚀 astral ".repeat(40),
            "\u{2028}\u{2029}\u{0}".repeat(100),
            "x".repeat(5000),
        ];
        for s in &strings {
            for expires in [None, Some("1h".to_string())] {
                let raw = RawEntry {
                    task: Some("app.tasks.t".into()),
                    every: Some("1m".into()),
                    args: Some(serde_json::json!([s, [s, {"k": s}], 1.5, null, true])),
                    kwargs: Some(serde_json::json!({ "a": s, s.clone(): [s] })),
                    headers: Some(serde_json::json!({ "h": s })),
                    expires,
                    ..Default::default()
                };
                let (e, p) = validate(
                    &format!("n-{}", s.len()),
                    raw,
                    origin(),
                    &Context::default(),
                );
                let e = e.unwrap_or_else(|| panic!("{p:?}"));
                let (bound, real) = (message_size_bound(&e), message_size(&e));
                assert!(bound >= real, "bound {bound} < real {real} for {s:?}");
            }
        }
    }

    #[test]
    fn jitter_is_deterministic_and_bounded() {
        let raw = RawEntry {
            task: Some("a.b".into()),
            every: Some("1m".into()),
            jitter: Some("10s".into()),
            ..Default::default()
        };
        let (e, p) = validate("e", raw, origin(), &Context::default());
        assert!(p.is_empty(), "{p:?}");
        let e = e.unwrap();
        let t = DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .to_utc();
        let a = e.send_at(t);
        assert_eq!(a, e.send_at(t));
        assert!(a >= t && a < t + Duration::seconds(10));
        let spread: std::collections::HashSet<_> = (0..50)
            .map(|i| e.send_at(t + Duration::minutes(i)) - (t + Duration::minutes(i)))
            .collect();
        assert!(spread.len() > 10, "jitter should vary by instant");
    }

    #[test]
    fn window_bounds_fires() {
        let raw = RawEntry {
            task: Some("a.b".into()),
            every: Some("1h".into()),
            start_at: Some(RawInstant::Text("2026-12-01T00:00:00Z".into())),
            end_at: Some(RawInstant::Text("2026-12-01T02:00:00Z".into())),
            ..Default::default()
        };
        let (e, _) = validate("e", raw, origin(), &Context::default());
        let e = e.unwrap();
        let t0 = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let f1 = e.next_after(t0).unwrap().at;
        assert_eq!(
            f1.to_rfc3339(),
            "2026-12-01T00:00:00+00:00",
            "start is inclusive"
        );
        let f3 = e.next_after(e.next_after(f1).unwrap().at).unwrap().at;
        assert_eq!(
            f3.to_rfc3339(),
            "2026-12-01T02:00:00+00:00",
            "end is inclusive"
        );
        assert!(e.next_after(f3).is_none());
    }

    #[test]
    fn every_problem_is_reported() {
        let raw = RawEntry {
            task: Some("has space".into()),
            cron: Some("* * *".into()),
            every: Some("0s".into()),
            timezone: Some("Mars/Olympus".into()),
            args: Some(Value::String("x".into())),
            catch_up: Some("sometimes".into()),
            ..Default::default()
        };
        let (e, p) = validate("e", raw, origin(), &Context::default());
        assert!(e.is_none());
        let text: Vec<String> = p.iter().map(|p| p.message.clone()).collect();
        for needle in [
            "task name",
            "unknown timezone",
            "exactly one of",
            "args must be an array",
            "catch_up",
        ] {
            assert!(
                text.iter().any(|t| t.contains(needle)),
                "missing {needle:?} in {text:?}"
            );
        }
    }
}
