//! A periodic entry (Celery's `ScheduleEntry`): what to send, where, and when.
//!
//! [`RawEntry`] is the schedule file's shape (serde, every field optional,
//! in [`raw`]); [`Entry`] is the validated model the rest of the program
//! trusts; [`validate()`] (in [`mod@validate`]) turns one into the other.
//! Validation is pure and reports every problem it finds, not just the first.

pub mod django;
pub mod file;
pub mod history;
pub mod merge;
pub mod raw;
pub mod validate;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};

use crate::schedule::Schedule;
use crate::wire::celery::{ArgsShape, BodyEncoding, TaskMessage};
use crate::wire::limits;

pub use raw::{CronField, DEFAULT_KEYS, ENTRY_KEYS, RawCrontab, RawEntry, RawInstant};
pub use validate::validate;

/// Default logical queue, as Celery's `task_default_queue`.
pub const DEFAULT_QUEUE: &str = "celery";
/// The `sqsbeat_trigger` header of a manual run (`sqsbeat entries run`).
pub const MANUAL_TRIGGER: &str = "manual";
/// Default lateness after which a fire counts as missed.
pub const DEFAULT_GRACE: Duration = Duration::minutes(1);
/// The last instant an entry's `start_at`, `end_at` or `anchor` may be:
/// the end of year 9999, the last that RFC 3339 text (the SQLite ledger's
/// form, and how instants travel from the entries table to validation)
/// can write. Beyond it, slots could not be stored or read back, and
/// adding jitter or `expires` ran past the end of chrono's range.
pub const LATEST_INSTANT: DateTime<Utc> =
    match DateTime::from_timestamp(253_402_300_799, 999_999_000) {
        Some(t) => t,
        None => panic!("9999-12-31T23:59:59.999999Z is an instant"),
    };

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
    /// Shared by every entry of the file (or table).
    pub file: SharedName,
    pub line: usize,
}

/// A name many entries repeat (task, queue, file), one copy shared by
/// all: a pointer (8 bytes, half an `Arc<str>`) that reads as the `str`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SharedName(Arc<String>);

impl std::ops::Deref for SharedName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SharedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl std::fmt::Display for SharedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl From<&str> for SharedName {
    /// An unshared copy; [`intern`] shares.
    fn from(s: &str) -> Self {
        SharedName(Arc::new(s.to_string()))
    }
}

impl From<String> for SharedName {
    /// An unshared name; [`intern`] shares.
    fn from(s: String) -> Self {
        SharedName(Arc::new(s))
    }
}

impl serde::Serialize for SharedName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self)
    }
}

impl PartialEq<str> for SharedName {
    fn eq(&self, other: &str) -> bool {
        **self == *other
    }
}

impl PartialEq<&str> for SharedName {
    fn eq(&self, other: &&str) -> bool {
        **self == **other
    }
}

/// A validated periodic entry.
///
/// Compact, as a schedule holds one per entry for as long as it runs (at
/// 100 000 entries, each byte here is 100 kB): task and queue names are
/// shared across entries, args and kwargs are kept as their JSON text and
/// read back for each message, and what few entries set is boxed in
/// [`Extras`], absent when nothing there is set.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub task: SharedName,
    pub schedule: Schedule,
    /// The args array's JSON then the kwargs object's, each `""` for
    /// none: one allocation for both.
    payload: Box<str>,
    /// Where the kwargs start in `payload`.
    kwargs_at: u32,
    pub queue: SharedName,
    pub origin: Origin,
    pub priority: u8,
    pub enabled: bool,
    pub catch_up: CatchUp,
    extras: Option<Box<Extras>>,
}

/// What few entries set. Each field's default is what an entry without it
/// has, and an entry whose extras are all default keeps none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extras {
    pub headers: Map<String, Value>,
    pub expires: Option<Duration>,
    /// `None`: [`DEFAULT_GRACE`].
    pub grace: Option<Duration>,
    pub jitter: Option<Duration>,
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
    /// FIFO queues only: the `MessageGroupId` (default: the entry name).
    pub group_id: Option<String>,
    /// `sentry_monitor = true` on a schedule Sentry Crons can describe.
    pub sentry_monitor: Option<Box<crate::wire::sentry::Monitor>>,
    /// An instant every message of the entry expires at, besides
    /// `expires` (django-celery-beat's `expires`, which is both the end of
    /// the schedule and the messages' expiry).
    pub expires_at: Option<DateTime<Utc>>,
    /// Where the beat starts this entry when the ledger holds no cursor for
    /// it (a new or re-enabled entry); `None`: now. A django-celery-beat row
    /// starts from its last run or last change, as its own scheduler does,
    /// so a row saved just before its slot still fires.
    pub resume_from: Option<DateTime<Utc>>,
    /// The django-celery-beat row this entry was read from, which each
    /// sent fire is written back to.
    pub django: Option<Box<django::Link>>,
}

impl Extras {
    /// Every field as an entry without it has it.
    fn is_default(&self) -> bool {
        *self == Extras::default()
    }
}

/// Headers of an entry that has none.
static NO_HEADERS: LazyLock<Map<String, Value>> = LazyLock::new(Map::new);

/// The one shared copy of a name many entries repeat (task and queue
/// names). Like parsed cron schedules, a bounded process-wide set: past
/// its bound it starts over, which only stops sharing names seen before.
pub fn intern(name: &str) -> SharedName {
    static NAMES: OnceLock<Mutex<HashMap<String, SharedName>>> = OnceLock::new();
    let Ok(mut names) = NAMES.get_or_init(Default::default).lock() else {
        return SharedName::from(name);
    };
    if let Some(known) = names.get(name) {
        return known.clone();
    }
    if names.len() >= 4096 {
        names.clear();
    }
    let new = SharedName::from(name);
    names.insert(name.to_string(), new.clone());
    new
}

/// A JSON array or object as the text an entry keeps, appended to `out`:
/// nothing when it is empty.
fn push_json(out: &mut String, value: &Value) {
    let empty = match value {
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    };
    if !empty {
        // Serializing a Value cannot fail (its keys are strings).
        out.push_str(&serde_json::to_string(value).unwrap_or_default());
    }
}

impl Entry {
    /// An entry of validated parts; `extras` is kept only if it sets
    /// something.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: String,
        task: SharedName,
        schedule: Schedule,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
        queue: SharedName,
        origin: Origin,
        priority: u8,
        enabled: bool,
        catch_up: CatchUp,
        extras: Extras,
    ) -> Entry {
        let mut payload = String::new();
        push_json(&mut payload, &Value::Array(args));
        // Validation bounds a message at 256 KiB (or the configured
        // size): the payload's length fits a u32 many times over.
        let kwargs_at = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        push_json(&mut payload, &Value::Object(kwargs));
        let mut e = Entry {
            name,
            task,
            schedule,
            payload: payload.into_boxed_str(),
            kwargs_at,
            queue,
            origin,
            priority,
            enabled,
            catch_up,
            extras: None,
        };
        e.set_extras(extras);
        e
    }

    /// The args, read back from their JSON.
    pub fn args(&self) -> Vec<Value> {
        let (args, _) = self.payload_texts();
        if args.is_empty() {
            return Vec::new();
        }
        // The text is serde_json's own writing of an array.
        serde_json::from_str(args).unwrap_or_default()
    }

    /// The args' JSON and the kwargs'.
    fn payload_texts(&self) -> (&str, &str) {
        self.payload
            .split_at_checked(self.kwargs_at as usize)
            .unwrap_or((&self.payload, ""))
    }

    /// The kwargs, read back from their JSON.
    pub fn kwargs(&self) -> Map<String, Value> {
        let (_, kwargs) = self.payload_texts();
        if kwargs.is_empty() {
            return Map::new();
        }
        serde_json::from_str(kwargs).unwrap_or_default()
    }

    pub fn extras(&self) -> Option<&Extras> {
        self.extras.as_deref()
    }

    /// Changes the extras; an entry whose extras are all default keeps
    /// none.
    pub fn set_extras(&mut self, extras: Extras) {
        self.extras = (!extras.is_default()).then(|| Box::new(extras));
    }

    /// Changes some extras (see [`Entry::set_extras`]).
    pub fn update_extras(&mut self, f: impl FnOnce(&mut Extras)) {
        let mut extras = self.extras.take().map(|b| *b).unwrap_or_default();
        f(&mut extras);
        self.set_extras(extras);
    }

    pub fn headers(&self) -> &Map<String, Value> {
        self.extras.as_ref().map_or(&NO_HEADERS, |x| &x.headers)
    }

    pub fn expires(&self) -> Option<Duration> {
        self.extras.as_ref().and_then(|x| x.expires)
    }

    /// Lateness after which a fire counts as missed.
    pub fn grace(&self) -> Duration {
        self.extras
            .as_ref()
            .and_then(|x| x.grace)
            .unwrap_or(DEFAULT_GRACE)
    }

    pub fn jitter(&self) -> Option<Duration> {
        self.extras.as_ref().and_then(|x| x.jitter)
    }

    pub fn start_at(&self) -> Option<DateTime<Utc>> {
        self.extras.as_ref().and_then(|x| x.start_at)
    }

    pub fn end_at(&self) -> Option<DateTime<Utc>> {
        self.extras.as_ref().and_then(|x| x.end_at)
    }

    pub fn group_id(&self) -> Option<&str> {
        self.extras.as_ref().and_then(|x| x.group_id.as_deref())
    }

    pub fn sentry_monitor(&self) -> Option<&crate::wire::sentry::Monitor> {
        self.extras
            .as_ref()
            .and_then(|x| x.sentry_monitor.as_deref())
    }

    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.extras.as_ref().and_then(|x| x.expires_at)
    }

    pub fn resume_from(&self) -> Option<DateTime<Utc>> {
        self.extras.as_ref().and_then(|x| x.resume_from)
    }

    pub fn django(&self) -> Option<&django::Link> {
        self.extras.as_ref().and_then(|x| x.django.as_deref())
    }

    /// Whether two entries define the same thing: everything but where
    /// they were defined and where a new one would resume (which moves
    /// with every run of a django-celery-beat row, and counts only where
    /// the ledger knows nothing of the entry).
    pub fn same_definition(&self, other: &Entry) -> bool {
        let strip = |e: &Entry| {
            let mut e = e.clone();
            e.origin = Origin {
                file: SharedName::from(""),
                line: 0,
            };
            e.update_extras(|x| x.resume_from = None);
            format!("{e:?}")
        };
        strip(self) == strip(other)
    }

    /// The next nominal fire strictly after `after`, inside the entry's
    /// start/end window (both ends inclusive).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<crate::schedule::Fire> {
        let mut from = after;
        if let Some(start) = self.start_at() {
            // Fires before the window are not fires: search from just before it.
            let before_start = start - Duration::milliseconds(1);
            if from < before_start {
                from = before_start;
            }
        }
        let fire = self.schedule.next_after(from)?;
        match self.end_at() {
            Some(end) if fire.at > end => None,
            _ => Some(fire),
        }
    }

    /// When a nominal fire is actually sent: the nominal instant plus a
    /// jitter that is a pure function of (entry, instant), so every replica
    /// and every restart agrees on it. Never past the last instant chrono
    /// holds: validation refuses instants anywhere near it
    /// ([`LATEST_INSTANT`]), but a slot can also follow a stored cursor,
    /// and no row may panic the beat.
    pub fn send_at(&self, nominal: DateTime<Utc>) -> DateTime<Utc> {
        match self.jitter() {
            Some(j) if j.num_milliseconds() > 0 => {
                let key = format!("{}\n{}", self.name, nominal.timestamp_millis());
                let ms = fnv1a64(key.as_bytes()) % j.num_milliseconds() as u64;
                nominal
                    .checked_add_signed(Duration::milliseconds(ms as i64))
                    .unwrap_or(DateTime::<Utc>::MAX_UTC)
            }
            _ => nominal,
        }
    }

    /// When the message of the fire at `nominal` expires, if it does.
    pub fn expiry(&self, nominal: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let after = |d| {
            nominal
                .checked_add_signed(d)
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
        };
        match (self.expires().map(after), self.expires_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The message of a send out of turn at `now` (`sqsbeat entries run`,
    /// `sqsbeat backfill`): the entry's own task, args, kwargs, queue and
    /// headers, as its fires carry them, serving `scheduled_at`, with
    /// `sqsbeat_trigger` set to `trigger` if given. Its expiry counts from
    /// `now` (the entry's `expires` after the send, and never past an
    /// absolute expiry it has): an old slot sent now by request would
    /// otherwise arrive already expired, and the worker would drop it.
    ///
    /// Never Sentry Crons' headers, even on a monitored entry: Sentry's
    /// beat integration checks in scheduled runs only, and a check-in for
    /// a run out of turn would close (or open) a slot of the monitor that
    /// the schedule did not produce, so the monitor would report the wrong
    /// runs as on time, late or missed.
    pub fn message_sent_at<'a>(
        &'a self,
        id: &'a str,
        scheduled_at: DateTime<Utc>,
        now: DateTime<Utc>,
        origin: &'a str,
        trigger: Option<&'a str>,
    ) -> EntryMessage<'a> {
        let mut m = self.message(id, scheduled_at, origin);
        m.expires = self.expiry(now);
        m.trigger = trigger;
        m.sentry = None;
        m
    }

    /// The message this entry sends for the fire at `nominal`: with
    /// Sentry Crons' headers on a monitored entry, so every scheduled fire
    /// carries them, whoever builds its SQS message
    /// ([`crate::beat::ops::outgoing`] only wraps this body).
    pub fn message<'a>(
        &'a self,
        id: &'a str,
        nominal: DateTime<Utc>,
        origin: &'a str,
    ) -> EntryMessage<'a> {
        EntryMessage {
            entry: self,
            id,
            args: self.args(),
            kwargs: self.kwargs(),
            expires: self.expiry(nominal),
            scheduled_at: nominal,
            trigger: None,
            origin,
            sentry: self.sentry_monitor(),
        }
    }
}

/// The message of one fire of an entry: the entry's args and kwargs read
/// back from their JSON, and what else varies by fire; it gives the
/// [`TaskMessage`] that builds the bytes.
#[derive(Debug, Clone)]
pub struct EntryMessage<'a> {
    entry: &'a Entry,
    id: &'a str,
    args: Vec<Value>,
    kwargs: Map<String, Value>,
    pub expires: Option<DateTime<Utc>>,
    pub scheduled_at: DateTime<Utc>,
    pub trigger: Option<&'a str>,
    origin: &'a str,
    pub sentry: Option<&'a crate::wire::sentry::Monitor>,
}

impl EntryMessage<'_> {
    pub fn task_message(&self) -> TaskMessage<'_> {
        let e = self.entry;
        TaskMessage {
            task: &e.task,
            id: self.id,
            args: &self.args,
            kwargs: &self.kwargs,
            queue: &e.queue,
            priority: e.priority,
            headers: e.headers(),
            eta: None,
            expires: self.expires,
            scheduled_at: self.scheduled_at,
            periodic_entry: Some(&e.name),
            trigger: self.trigger,
            origin: self.origin,
            args_shape: ArgsShape::List,
            sentry: self.sentry,
        }
    }

    /// The SQS `MessageBody` (see [`TaskMessage::sqs_body`]).
    pub fn sqs_body(&self, now: DateTime<Utc>, encoding: BodyEncoding) -> String {
        self.task_message().sqs_body(now, encoding)
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
            max_message_bytes: limits::SQS_MAX_MESSAGE_BYTES,
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

/// An upper bound on [`message_size`] that builds no message: building one
/// per entry was half the time of loading a 100 000-entry schedule.
pub fn message_size_bound(entry: &Entry) -> usize {
    payload_size_bound(entry, &entry.args(), &entry.kwargs())
}

/// [`message_size_bound`] of an entry whose args and kwargs are at hand.
fn payload_size_bound(entry: &Entry, args: &[Value], kwargs: &Map<String, Value>) -> usize {
    let names = entry.name.len()
        + entry.task.len()
        + entry.queue.len()
        + entry.group_id().map_or(0, str::len);
    limits::message_size_bound(args, kwargs, entry.headers(), names)
}

/// The SQS body size of this entry's message, as it will be sent.
pub fn message_size(entry: &Entry) -> usize {
    // An instant of the real width (with microseconds): expiry adds its
    // `expiration` property, whose length depends on it.
    let nominal = DateTime::UNIX_EPOCH + Duration::days(20_000) + Duration::microseconds(123_456);
    entry
        .message(limits::PROBE_TASK_ID, nominal, limits::PROBE_ORIGIN)
        .sqs_body(nominal, BodyEncoding::Base64)
        .len()
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

    /// Regression: a slot near the end of chrono's range (after a cursor
    /// stored there, say) plus jitter or `expires` overflowed and panicked
    /// the beat.
    #[test]
    fn send_at_and_expiry_near_the_end_of_time_do_not_overflow() {
        let raw = RawEntry {
            task: Some("app.tasks.t".into()),
            every: Some("1m".into()),
            jitter: Some("30s".into()),
            expires: Some("1h".into()),
            ..Default::default()
        };
        let (e, p) = validate::validate("late", raw, origin(), &Context::default());
        let e = e.unwrap_or_else(|| panic!("{p:?}"));
        let end = DateTime::<Utc>::MAX_UTC;
        for ms in 1..=20 {
            let nominal = end - Duration::milliseconds(ms);
            let send = e.send_at(nominal);
            assert!(send >= nominal && send <= end, "{send}");
            assert_eq!(e.expiry(nominal), Some(end));
        }
    }

    /// An instant past year 9999 (reachable through an offset) is refused
    /// at load, named, instead of leading the beat to the end of time.
    #[test]
    fn an_instant_after_year_9999_is_refused_at_load() {
        let raw = |key: &str, text: &str| {
            let mut r = RawEntry {
                task: Some("app.tasks.t".into()),
                every: Some("1m".into()),
                jitter: Some("30s".into()),
                ..Default::default()
            };
            let t = Some(RawInstant::Text(text.into()));
            match key {
                "anchor" => r.anchor = t,
                "start_at" => r.start_at = t,
                _ => r.end_at = t,
            }
            r
        };
        for key in ["anchor", "start_at", "end_at"] {
            let (e, p) = validate::validate(
                "far",
                raw(key, "9999-12-31T23:00:00-05:00"),
                origin(),
                &Context::default(),
            );
            assert!(e.is_none(), "{key}");
            assert_eq!(p.len(), 1, "{p:?}");
            assert_eq!(p[0].key, Some(key));
            assert_eq!(
                p[0].message,
                format!(
                    "{key} +10000-01-01T04:00:00+00:00 is after 9999-12-31T23:59:59.999999Z, the last instant sqsbeat can store; use an earlier one"
                )
            );
            let (e, p) = validate::validate(
                "far",
                raw(key, "9999-12-31T23:59:59Z"),
                origin(),
                &Context::default(),
            );
            assert!(e.is_some(), "{key}: {p:?}");
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
        // Python writes 1e15 as 1000000000000000.0: 4 characters become 18.
        let floats: Value =
            serde_json::from_str(&format!("[{}]", vec!["1e15"; 20_000].join(","))).unwrap();
        for s in &strings {
            for expires in [None, Some("1h".to_string())] {
                let raw = RawEntry {
                    task: Some("app.tasks.t".into()),
                    every: Some("1m".into()),
                    args: Some(serde_json::json!([s, [s, {"k": s}], 1.5, null, true, floats])),
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

    /// An entry keeps args and kwargs as JSON text: its messages must be
    /// the bytes the values themselves give (big integers, float text,
    /// key order, escapes, nesting).
    #[test]
    fn messages_from_the_kept_json_are_the_values_own() {
        let args = serde_json::json!([
            18446744073709551616_u128,
            1.50,
            "é \" \\ 😀",
            {"z": 1, "a": [null, true, {"y": "x"}]},
            []
        ]);
        let kwargs: Value = serde_json::from_str(
            r#"{"zeta": 1e400, "alpha": -0, "m": {"b": 2, "a": 1}, "": "", "list": [1E5]}"#,
        )
        .unwrap();
        let raw = RawEntry {
            task: Some("app.tasks.t".into()),
            every: Some("1m".into()),
            args: Some(args.clone()),
            kwargs: Some(kwargs.clone()),
            headers: Some(serde_json::json!({"tenant": "acme"})),
            expires: Some("1h".into()),
            ..Default::default()
        };
        let (e, p) = validate("exact", raw, origin(), &Context::default());
        let e = e.unwrap_or_else(|| panic!("{p:?}"));
        assert_eq!(Value::Array(e.args()), args);
        assert_eq!(Value::Object(e.kwargs()), kwargs);
        let t = DateTime::parse_from_rfc3339("2026-11-21T10:00:00.123456Z")
            .unwrap()
            .to_utc();
        let (Value::Array(a), Value::Object(k)) = (args, kwargs) else {
            unreachable!()
        };
        let want = TaskMessage {
            task: "app.tasks.t",
            id: "id",
            args: &a,
            kwargs: &k,
            queue: DEFAULT_QUEUE,
            priority: 0,
            headers: e.headers(),
            eta: None,
            expires: Some(t + Duration::hours(1)),
            scheduled_at: t,
            periodic_entry: Some("exact"),
            trigger: None,
            origin: "o",
            args_shape: ArgsShape::List,
            sentry: None,
        };
        for enc in [BodyEncoding::Base64, BodyEncoding::RawJson] {
            let got = e.message("id", t, "o").sqs_body(t, enc);
            assert_eq!(got, want.sqs_body(t, enc));
        }
        // No args or kwargs: empty text, and `[]` and `{}` in the message.
        let bare = RawEntry {
            task: Some("app.tasks.t".into()),
            every: Some("1m".into()),
            ..Default::default()
        };
        let (e, _) = validate("bare", bare, origin(), &Context::default());
        let e = e.unwrap();
        let body = e.message("id", t, "o").task_message().task_body_json();
        assert!(body.starts_with("[[], {}, {"), "{body}");
    }

    /// What the compact entry is for: a large schedule holds one per
    /// entry. Names repeated across entries are one copy, and an entry
    /// with nothing rare set keeps no extras.
    #[test]
    fn entries_stay_small_and_share_their_names() {
        assert!(size_of::<Entry>() <= 120, "{}", size_of::<Entry>());
        let raw = |grace: Option<&str>| RawEntry {
            task: Some("app.tasks.shared".into()),
            queue: Some("shared-queue".into()),
            every: Some("1m".into()),
            grace: grace.map(str::to_string),
            kwargs: Some(serde_json::json!({"n": 1})),
            ..Default::default()
        };
        let (a, _) = validate("a", raw(None), origin(), &Context::default());
        let (b, _) = validate("b", raw(Some("1m")), origin(), &Context::default());
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(Arc::ptr_eq(&a.task.0, &b.task.0) && Arc::ptr_eq(&a.queue.0, &b.queue.0));
        // The default grace written out is the default.
        assert!(a.extras().is_none() && b.extras().is_none());
        assert_eq!(b.grace(), DEFAULT_GRACE);
        let (c, _) = validate("c", raw(Some("2m")), origin(), &Context::default());
        let c = c.unwrap();
        assert_eq!(c.grace(), Duration::minutes(2));
        assert!(c.extras().is_some());
        // Extras set back to their defaults are dropped again.
        let mut d = c.clone();
        d.update_extras(|x| x.grace = None);
        assert!(d.extras().is_none());
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
}
