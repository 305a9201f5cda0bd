//! Raw entry → [`Entry`]: one small parser per field, a collector that
//! records each problem, then the checks that need several fields. Every
//! problem is reported, not just the first; the entry comes back only when
//! none is an error.

use chrono::{DateTime, Duration, SubsecRound, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};

use super::raw::{CronField, RawCrontab, RawEntry, RawInstant};
use super::{CatchUp, Context, DEFAULT_GRACE, DEFAULT_QUEUE, Entry, Extras, Origin, Problem};
use crate::schedule::duration::{format_duration, parse_duration, parse_instant};
use crate::schedule::{CronSchedule, CrontabFields, IntervalSchedule, Schedule};
use crate::wire::limits;
use crate::wire::queue::is_fifo;
use crate::wire::sentry::{self, Monitor, MonitorSchedule};

/// Validates one raw entry. Returns the entry when there are no errors
/// (warnings may still be present), and every problem found.
pub fn validate(
    name: &str,
    mut raw: RawEntry,
    origin: Origin,
    ctx: &Context,
) -> (Option<Entry>, Vec<Problem>) {
    let mut p = Problems::default();
    p.check(entry_name(name));
    let task = p.field(task(&raw));
    let tz = p.field(timezone(&raw, ctx.default_tz));
    let anchor = p.field(anchor(&raw));
    let schedule = p.field(schedule(&raw, tz, anchor)).flatten();
    p.check(anchor_applies(&raw));
    let args = p.field(args(raw.args.take()));
    let kwargs = p.field(kwargs(raw.kwargs.take()));
    let headers = p.field(headers(raw.headers.take()));
    let queue = p.field(queue(&raw));
    let priority = p.field(priority(&raw));
    let expires = p.field(positive("expires", &raw.expires));
    let grace = p.field(positive("grace", &raw.grace));
    let jitter = p.field(positive("jitter", &raw.jitter));
    let catch_up = p.field(catch_up(&raw));
    let start_at = p.field(instant("start_at", &raw.start_at));
    let end_at = p.field(instant("end_at", &raw.end_at));
    if let (Some(Some(start)), Some(Some(end))) = (start_at, end_at) {
        p.check(window(start, end));
    }
    if let (Some(s), Some(Some(j))) = (&schedule, jitter) {
        p.check(jitter_within_schedule(j, s));
    }
    if let (Some(Some(j)), Some(Some(x))) = (jitter, expires) {
        p.check(jitter_within_expires(j, x));
    }
    let group_id = p.field(group_id(&raw));
    if let (Some(queue), Some(None)) = (&queue, &group_id) {
        p.check(name_as_group_id(name, queue));
    }
    let sentry_monitor = match (raw.sentry_monitor, tz) {
        (Some(true), Some(tz)) => {
            p.check(sentry_headers_free(headers.as_ref()));
            sentry_monitor(name, &raw, tz).map_err(|w| p.0.push(w)).ok()
        }
        _ => None,
    };
    let fields = Fields {
        task,
        schedule,
        args,
        kwargs,
        headers,
        queue,
        priority,
        expires,
        grace,
        jitter,
        catch_up,
        start_at,
        end_at,
        group_id,
        sentry_monitor,
    };
    // A cross-field error leaves every field parsed: it must still stop
    // the entry.
    let entry = fields.entry(name, raw.enabled, origin);
    let Some((entry, bound)) = entry.filter(|_| p.0.iter().all(|p| p.warning)) else {
        return (None, p.0);
    };
    if let Err(e) = message_size(&entry, bound, ctx.max_message_bytes) {
        p.0.push(e);
        return (None, p.0);
    }
    if let Schedule::Cron(c) = &entry.schedule {
        p.0.extend(never_fires_warning(c));
        p.0.extend(day_rule_warning(&raw, c));
    }
    (Some(entry), p.0)
}

/// The collector: a field's problem is recorded and its value becomes
/// `None`, so later checks see which fields parsed.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn field<T>(&mut self, parsed: Result<T, Problem>) -> Option<T> {
        parsed.map_err(|e| self.0.push(e)).ok()
    }

    fn check(&mut self, checked: Result<(), Problem>) {
        if let Err(e) = checked {
            self.0.push(e);
        }
    }
}

/// Every field as parsed; `None` where the field had an error.
struct Fields {
    task: Option<String>,
    schedule: Option<Schedule>,
    args: Option<Vec<Value>>,
    kwargs: Option<Map<String, Value>>,
    headers: Option<Map<String, Value>>,
    queue: Option<String>,
    priority: Option<u8>,
    expires: Option<Option<Duration>>,
    grace: Option<Option<Duration>>,
    jitter: Option<Option<Duration>>,
    catch_up: Option<CatchUp>,
    start_at: Option<Option<DateTime<Utc>>>,
    end_at: Option<Option<DateTime<Utc>>>,
    group_id: Option<Option<String>>,
    sentry_monitor: Option<Monitor>,
}

impl Fields {
    /// The entry, when every field parsed, and a bound on its message's
    /// size (see [`super::message_size_bound`]), taken while its args and
    /// kwargs are still values.
    fn entry(self, name: &str, enabled: Option<bool>, origin: Origin) -> Option<(Entry, usize)> {
        let (task, queue) = (self.task?, self.queue?);
        let (args, kwargs, headers) = (self.args?, self.kwargs?, self.headers?);
        let group_id = self.group_id?;
        let names =
            name.len() + task.len() + queue.len() + group_id.as_ref().map_or(0, String::len);
        let bound = limits::message_size_bound(&args, &kwargs, &headers, names);
        let extras = Extras {
            headers,
            expires: self.expires?,
            // The default is kept as none, so that an entry that writes it
            // out is the same as one that does not.
            grace: self.grace?.filter(|g| *g != DEFAULT_GRACE),
            jitter: self.jitter?,
            start_at: self.start_at?,
            end_at: self.end_at?,
            group_id,
            sentry_monitor: self.sentry_monitor.map(Box::new),
            expires_at: None,
            resume_from: None,
            django: None,
        };
        let entry = Entry::new(
            name.to_string(),
            super::intern(&task),
            self.schedule?,
            args,
            kwargs,
            super::intern(&queue),
            origin,
            self.priority?,
            enabled.unwrap_or(true),
            self.catch_up?,
            extras,
        );
        Some((entry, bound))
    }
}

/// The Sentry Crons monitor of a `sentry_monitor` entry. A schedule Sentry
/// cannot describe is a warning, not an error: celery beat's integration
/// leaves such an entry unmonitored too, and `[defaults] sentry_monitor`
/// must not stop a schedule with a per-second entry.
fn sentry_monitor(name: &str, raw: &RawEntry, tz: Tz) -> Result<Monitor, Problem> {
    let warn = |e: String| Problem::warning("sentry_monitor", format!("sentry_monitor: {e}"));
    let result = match (&raw.cron, &raw.crontab, &raw.every) {
        (Some(expr), None, None) => {
            let pattern = crate::schedule::expand_macro(expr).map_err(|e| warn(e.0))?;
            Monitor::new(name, MonitorSchedule::Cron(&pattern), tz)
        }
        (None, Some(ct), None) => {
            let f = crontab_fields(ct);
            Monitor::new(
                name,
                MonitorSchedule::Crontab {
                    minute: &f.minute,
                    hour: &f.hour,
                    day_of_week: &f.day_of_week,
                    day_of_month: &f.day_of_month,
                    month_of_year: &f.month_of_year,
                },
                tz,
            )
        }
        (None, None, Some(every)) => match parse_duration(every) {
            Ok(d) => Monitor::new(name, MonitorSchedule::Every(d), tz),
            // The schedule's own problem is reported.
            Err(e) => return Err(warn(e.to_string())),
        },
        _ => return Err(warn("no schedule".into())),
    };
    result.map_err(|e| warn(e.to_string()))
}

/// A monitored entry's own headers may not shadow Sentry's.
fn sentry_headers_free(headers: Option<&Map<String, Value>>) -> Result<(), Problem> {
    let taken: Vec<&str> = headers
        .into_iter()
        .flat_map(|h| h.keys())
        .map(String::as_str)
        .filter(|k| sentry::is_own_header(k))
        .collect();
    if taken.is_empty() {
        return Ok(());
    }
    Err(Problem::error(
        "headers",
        format!(
            "headers {} are set by sentry_monitor; rename or remove them, or turn sentry_monitor off",
            taken.join(", ")
        ),
    ))
}

fn entry_name(name: &str) -> Result<(), Problem> {
    if name.trim().is_empty() {
        return Err(Problem::error("", "entry name is empty"));
    }
    Ok(())
}

fn task(raw: &RawEntry) -> Result<String, Problem> {
    match raw.task.as_deref().map(str::trim) {
        None | Some("") => Err(Problem::error(
            "task",
            "missing `task` (the Celery task name, e.g. \"app.tasks.cleanup\")",
        )),
        Some(t) => limits::check_task_name(t)
            .map(|()| t.to_string())
            .map_err(|e| Problem::error("task", e.to_string())),
    }
}

fn timezone(raw: &RawEntry, default: Tz) -> Result<Tz, Problem> {
    match raw.timezone.as_deref() {
        None => Ok(default),
        Some(z) => z.parse::<Tz>().map_err(|_| {
            Problem::error(
                "timezone",
                format!(
                    "unknown timezone {z:?}; use an IANA name such as \"UTC\", \"Europe/London\" or \"America/Sao_Paulo\""
                ),
            )
        }),
    }
}

fn anchor(raw: &RawEntry) -> Result<DateTime<Utc>, Problem> {
    match &raw.anchor {
        None => Ok(DateTime::UNIX_EPOCH),
        Some(a) => parse_instant(&a.text())
            .map_err(|e| Problem::error("anchor", format!("anchor: {e}")))
            .and_then(|t| storable("anchor", t))
            .map(whole_micros),
    }
}

/// An instant the ledger can store and the beat can add jitter and
/// `expires` to: not after [`super::LATEST_INSTANT`] (an offset can carry
/// `9999-12-31T23:00:00-05:00` into year 10000).
fn storable(key: &'static str, t: DateTime<Utc>) -> Result<DateTime<Utc>, Problem> {
    if t > super::LATEST_INSTANT {
        return Err(Problem::error(
            key,
            format!(
                "{key} {} is after 9999-12-31T23:59:59.999999Z, the last instant sqsbeat can store; use an earlier one",
                t.to_rfc3339()
            ),
        ));
    }
    Ok(t)
}

/// The ledger keeps instants to the microsecond (PostgreSQL's precision),
/// and the beat matches the slots it claimed against the ones it computed:
/// a finer anchor made every slot "claimed but not ours", never sent.
fn whole_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

fn anchor_applies(raw: &RawEntry) -> Result<(), Problem> {
    if raw.anchor.is_some() && raw.every.is_none() {
        return Err(Problem::error(
            "anchor",
            "`anchor` applies to `every` only; cron fires follow the wall clock",
        ));
    }
    Ok(())
}

/// The schedule. `Ok(None)`: it depends on a field (the zone, the anchor)
/// whose own problem is already reported.
fn schedule(
    raw: &RawEntry,
    tz: Option<Tz>,
    anchor: Option<DateTime<Utc>>,
) -> Result<Option<Schedule>, Problem> {
    match (&raw.cron, &raw.crontab, &raw.every) {
        (Some(expr), None, None) => match tz {
            None => Ok(None),
            Some(tz) => CronSchedule::parse_cron(expr, tz)
                .map(|c| Some(Schedule::Cron(c)))
                .map_err(|e| Problem::error("cron", e.0)),
        },
        (None, Some(ct), None) => match tz {
            None => Ok(None),
            Some(tz) => CronSchedule::parse_crontab(&crontab_fields(ct), tz)
                .map(|c| Some(Schedule::Cron(c)))
                .map_err(|e| Problem::error("crontab", e.0)),
        },
        (None, None, Some(every)) => {
            let every = match parse_duration(every) {
                Ok(d) if d <= Duration::zero() => {
                    return Err(Problem::error(
                        "every",
                        format!("every = {every:?} must be greater than zero"),
                    ));
                }
                Ok(d) => d,
                Err(e) => return Err(Problem::error("every", format!("every: {e}"))),
            };
            Ok(anchor.map(|anchor| Schedule::Interval(IntervalSchedule { every, anchor })))
        }
        (None, None, None) => Err(Problem::error(
            "",
            "no schedule: set exactly one of `cron`, `crontab` or `every`",
        )),
        (cron, crontab, every) => {
            let set: Vec<&str> = [
                ("cron", cron.is_some()),
                ("crontab", crontab.is_some()),
                ("every", every.is_some()),
            ]
            .into_iter()
            .filter_map(|(n, set)| set.then_some(n))
            .collect();
            Err(Problem::error(
                "cron",
                format!(
                    "set exactly one of `cron`, `crontab` or `every`, not {}",
                    set.join(" and ")
                ),
            ))
        }
    }
}

fn crontab_fields(ct: &RawCrontab) -> CrontabFields {
    let f = |v: &Option<CronField>| v.as_ref().map_or("*".to_string(), CronField::text);
    CrontabFields {
        minute: f(&ct.minute),
        hour: f(&ct.hour),
        day_of_week: f(&ct.day_of_week),
        day_of_month: f(&ct.day_of_month),
        month_of_year: f(&ct.month_of_year),
    }
}

fn args(value: Option<Value>) -> Result<Vec<Value>, Problem> {
    match value {
        None => Ok(Vec::new()),
        // Kept as JSON text (see `Entry`): no need to compact them.
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(Problem::error(
            "args",
            format!(
                "args must be an array (e.g. args = [1, \"two\"]), not {}",
                json_kind(&other)
            ),
        )),
    }
}

fn kwargs(value: Option<Value>) -> Result<Map<String, Value>, Problem> {
    match value {
        None => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(other) => Err(Problem::error(
            "kwargs",
            format!(
                "kwargs must be a table (e.g. kwargs = {{ batch = 100 }}), not {}",
                json_kind(&other)
            ),
        )),
    }
}

fn headers(value: Option<Value>) -> Result<Map<String, Value>, Problem> {
    match value {
        None => Ok(Map::new()),
        Some(Value::Object(m)) => limits::check_headers(&m)
            .map(|()| compact_map(m))
            .map_err(|e| Problem::error("headers", e.to_string())),
        Some(other) => Err(Problem::error(
            "headers",
            format!("headers must be a table, not {}", json_kind(&other)),
        )),
    }
}

/// A JSON value without the spare capacity its parser left: an entry
/// keeps its headers as values for as long as it is loaded, and a one-key
/// table as parsed held three map slots and a hash table sized for four.
fn compact(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(compact_map(m)),
        Value::Array(a) => Value::Array(a.into_iter().map(compact).collect()),
        Value::String(s) => Value::String(s.into_boxed_str().into()),
        other => other,
    }
}

fn compact_map(m: Map<String, Value>) -> Map<String, Value> {
    if m.is_empty() {
        return Map::new();
    }
    let mut out = Map::with_capacity(m.len());
    for (k, v) in m {
        out.insert(k.into_boxed_str().into(), compact(v));
    }
    out
}

fn queue(raw: &RawEntry) -> Result<String, Problem> {
    match raw.queue.as_deref().map(str::trim) {
        None => Ok(DEFAULT_QUEUE.to_string()),
        Some(q) => limits::check_queue_name(q)
            .map(|()| q.to_string())
            .map_err(|e| Problem::error("queue", e.to_string())),
    }
}

fn priority(raw: &RawEntry) -> Result<u8, Problem> {
    match raw.priority {
        None => Ok(0),
        Some(p) => u8::try_from(p).map_err(|_| {
            Problem::error("priority", format!("priority {p} is out of range 0..=255"))
        }),
    }
}

/// An optional duration that must be greater than zero.
fn positive(key: &'static str, value: &Option<String>) -> Result<Option<Duration>, Problem> {
    match value.as_deref().map(parse_duration) {
        None => Ok(None),
        Some(Ok(d)) if d > Duration::zero() => Ok(Some(d)),
        Some(Ok(_)) => Err(Problem::error(
            key,
            format!("{key} must be greater than zero"),
        )),
        Some(Err(e)) => Err(Problem::error(key, format!("{key}: {e}"))),
    }
}

fn catch_up(raw: &RawEntry) -> Result<CatchUp, Problem> {
    match raw.catch_up.as_deref() {
        None => Ok(CatchUp::default()),
        Some("latest") => Ok(CatchUp::Latest),
        Some("all") => Ok(CatchUp::All),
        Some("none") => Ok(CatchUp::None),
        Some(other) => Err(Problem::error(
            "catch_up",
            format!("catch_up = {other:?}: expected \"latest\", \"all\" or \"none\""),
        )),
    }
}

fn instant(
    key: &'static str,
    value: &Option<RawInstant>,
) -> Result<Option<DateTime<Utc>>, Problem> {
    match value {
        None => Ok(None),
        Some(v) => parse_instant(&v.text())
            .map_err(|e| Problem::error(key, format!("{key}: {e}")))
            .and_then(|t| storable(key, t))
            .map(|t| Some(whole_micros(t))),
    }
}

/// An explicit `group_id` must be a valid `MessageGroupId` whatever the
/// queue: it is meant for a FIFO queue, and a bad one is always a mistake.
fn group_id(raw: &RawEntry) -> Result<Option<String>, Problem> {
    match raw.group_id.as_deref() {
        None => Ok(None),
        Some(g) => limits::check_fifo_id(g)
            .map(|()| Some(g.to_string()))
            .map_err(|e| Problem::error("group_id", format!("group_id {g:?} {e}"))),
    }
}

/// On a FIFO queue the entry name is the default `MessageGroupId`, and SQS
/// refuses every send of one it does not accept (a space, say): refuse the
/// entry here instead, and suggest a `group_id` that would do.
fn name_as_group_id(name: &str, queue: &str) -> Result<(), Problem> {
    if !is_fifo(queue) || name.trim().is_empty() {
        return Ok(());
    }
    limits::check_fifo_id(name).map_err(|e| {
        let suggestion: String = name
            .chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '-' })
            .take(limits::MAX_FIFO_ID_CHARS)
            .collect();
        Problem::error(
            "",
            format!(
                "on FIFO queue {queue:?} the entry name is the MessageGroupId, and it {e}; set `group_id` (e.g. group_id = {suggestion:?})"
            ),
        )
    })
}

fn window(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<(), Problem> {
    if start > end {
        return Err(Problem::error(
            "end_at",
            format!(
                "start_at ({}) is after end_at ({})",
                start.to_rfc3339(),
                end.to_rfc3339()
            ),
        ));
    }
    Ok(())
}

/// A jitter at least as long as the gap between two fires lets a later
/// slot be sent before an earlier one; the beat holds only each entry's
/// next slot, so the earlier one then counts as missed.
fn jitter_within_schedule(jitter: Duration, schedule: &Schedule) -> Result<(), Problem> {
    let (gap, what) = match schedule {
        Schedule::Interval(i) => (i.every, "the interval".to_string()),
        Schedule::Cron(c) => match c.min_gap() {
            Some(g) => {
                let dst = g.dst_change.map_or(String::new(), |t| {
                    let day = t.with_timezone(&c.tz).format("%Y-%m-%d");
                    format!(" at the DST change of {day} in {}", c.tz)
                });
                (
                    g.gap,
                    format!("the shortest gap between fires of {}{dst}", c.expr),
                )
            }
            None => return Ok(()),
        },
    };
    if jitter >= gap {
        return Err(Problem::error(
            "jitter",
            format!(
                "jitter ({}) must be shorter than {what} ({}), or fires would overtake each other",
                format_duration(jitter),
                format_duration(gap)
            ),
        ));
    }
    Ok(())
}

/// A fire jittered past its expiry would reach a worker already expired.
fn jitter_within_expires(jitter: Duration, expires: Duration) -> Result<(), Problem> {
    if jitter >= expires {
        return Err(Problem::error(
            "jitter",
            format!(
                "jitter ({}) must be shorter than expires ({}), or fires sent late in the jitter would already be expired",
                format_duration(jitter),
                format_duration(expires)
            ),
        ));
    }
    Ok(())
}

/// The message must fit in SQS. The cheap bound settles almost every entry
/// without building its message.
fn message_size(entry: &Entry, bound: usize, max: usize) -> Result<(), Problem> {
    if bound <= max {
        return Ok(());
    }
    limits::check_message_size(super::message_size(entry), max)
        .map_err(|e| Problem::error("args", e.to_string()))
}

fn never_fires_warning(c: &CronSchedule) -> Option<Problem> {
    (!c.ever_fires).then(|| {
        Problem::warning(
            "cron",
            format!(
                "{} never fires: no date matches it (e.g. February 30)",
                c.expr
            ),
        )
    })
}

/// `check` warns where a cron string and a Celery crontab would read the day
/// fields differently: Vixie ORs day-of-month and day-of-week when both are
/// restricted, Celery ANDs them.
fn day_rule_warning(raw: &RawEntry, c: &CronSchedule) -> Option<Problem> {
    let restricted = |f: &str| f != "*" && !f.starts_with('*');
    match (&raw.cron, &raw.crontab) {
        (Some(expr), _) => {
            let fields: Vec<&str> = expr.split_whitespace().collect();
            let (dom, dow) = match fields[..] {
                [_, _, dom, _, dow] | [_, _, _, dom, _, dow] => (dom, dow),
                _ => return None,
            };
            (restricted(dom) && restricted(dow)).then(|| Problem::warning("cron", format!(
                "{} fires when day-of-month {dom} OR day-of-week {dow} matches (Vixie cron); Celery's crontab() would need both; use a crontab table for that",
                c.expr
            )))
        }
        (None, Some(ct)) => {
            let text =
                |f: &Option<CronField>| f.as_ref().map_or_else(|| "*".into(), CronField::text);
            let (dom, dow) = (text(&ct.day_of_month), text(&ct.day_of_week));
            (restricted(&dom) && restricted(&dow)).then(|| Problem::warning("crontab", format!(
                "crontab fires only when day_of_month {dom} AND day_of_week {dow} both match (Celery's rule); a cron string would fire when either matches"
            )))
        }
        _ => None,
    }
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

    /// Compacting the JSON an entry keeps changes nothing a message shows:
    /// the same values, keys in the same order.
    #[test]
    fn compacted_payloads_keep_values_and_key_order() {
        let v = serde_json::json!({
            "z": [1, "two", {"b": null, "a": [1.5, {"y": "é"}]}],
            "a": {"k": "v", "c": true},
            "m": "x".repeat(40),
        });
        let Value::Object(m) = v.clone() else {
            unreachable!()
        };
        let c = compact_map(m);
        assert_eq!(Value::Object(c.clone()), v);
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            serde_json::to_string(&v).unwrap()
        );
    }

    fn origin() -> Origin {
        Origin {
            file: "t.toml".into(),
            line: 1,
        }
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

    #[test]
    fn each_problem_names_the_key_it_is_about() {
        let raw = RawEntry {
            task: Some("a.b".into()),
            every: Some("1m".into()),
            queue: Some(" ".into()),
            priority: Some(256),
            headers: Some(serde_json::json!({"eta": 1})),
            grace: Some("0s".into()),
            start_at: Some(RawInstant::Text("2026-12-02T00:00:00Z".into())),
            end_at: Some(RawInstant::Text("2026-12-01T00:00:00Z".into())),
            group_id: Some(String::new()),
            ..Default::default()
        };
        let (e, p) = validate("e", raw, origin(), &Context::default());
        assert!(e.is_none());
        let keys: Vec<(&str, &str)> = p
            .iter()
            .map(|p| (p.key.unwrap_or("-"), p.message.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                (
                    "headers",
                    "headers may not set \"eta\": Celery's protocol (or sqsbeat) owns them"
                ),
                ("queue", "queue is empty"),
                ("priority", "priority 256 is out of range 0..=255"),
                ("grace", "grace must be greater than zero"),
                (
                    "end_at",
                    "start_at (2026-12-02T00:00:00+00:00) is after end_at (2026-12-01T00:00:00+00:00)"
                ),
                ("group_id", "group_id \"\" is empty"),
            ]
        );
    }

    /// Cross-field checks used to report an error and still return the
    /// entry, which callers that look at the entry alone would have loaded.
    #[test]
    fn a_cross_field_error_alone_yields_no_entry() {
        let raw = RawEntry {
            task: Some("a.b".into()),
            every: Some("1m".into()),
            start_at: Some(RawInstant::Text("2026-12-02T00:00:00Z".into())),
            end_at: Some(RawInstant::Text("2026-12-01T00:00:00Z".into())),
            ..Default::default()
        };
        let (e, p) = validate("e", raw, origin(), &Context::default());
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(e.is_none());
    }

    fn jittered(f: impl FnOnce(&mut RawEntry)) -> Vec<String> {
        let mut raw = RawEntry {
            task: Some("a.b".into()),
            ..Default::default()
        };
        f(&mut raw);
        let (e, p) = validate("e", raw, origin(), &Context::default());
        assert_eq!(e.is_some(), p.is_empty(), "{p:?}");
        p.into_iter().map(|p| p.message).collect()
    }

    /// Jitter was bounded on `every` entries only: on a cron entry, or past
    /// `expires`, fires overtook each other or expired, and `check` passed.
    #[test]
    fn jitter_must_be_shorter_than_the_gap_between_fires_of_every_kind() {
        assert_eq!(
            jittered(|r| {
                r.cron = Some("* * * * *".into());
                r.jitter = Some("5m".into());
            }),
            [
                "jitter (5m) must be shorter than the shortest gap between fires of * * * * * (1m), or fires would overtake each other"
            ]
        );
        assert!(
            jittered(|r| {
                r.cron = Some("*/5 * * * *".into());
                r.jitter = Some("4m59s".into());
            })
            .is_empty()
        );
        assert_eq!(
            jittered(|r| {
                r.crontab = Some(RawCrontab {
                    minute: Some(CronField::Text("*/25".into())),
                    hour: Some(CronField::Number(1)),
                    ..Default::default()
                });
                r.timezone = Some("America/New_York".into());
                r.jitter = Some("15m".into());
            }),
            [
                "jitter (15m) must be shorter than the shortest gap between fires of crontab(minute=*/25, hour=1, day_of_week=*, day_of_month=*, month_of_year=*) at the DST change of 2020-11-01 in America/New_York (10m), or fires would overtake each other"
            ]
        );
        assert_eq!(
            jittered(|r| {
                r.every = Some("1m".into());
                r.jitter = Some("1m".into());
            }),
            [
                "jitter (1m) must be shorter than the interval (1m), or fires would overtake each other"
            ]
        );
    }

    #[test]
    fn jitter_must_be_shorter_than_expires() {
        for schedule in [
            (|r: &mut RawEntry| r.every = Some("1h".into())) as fn(&mut RawEntry),
            |r| r.cron = Some("0 * * * *".into()),
        ] {
            assert_eq!(
                jittered(|r| {
                    schedule(r);
                    r.jitter = Some("1m".into());
                    r.expires = Some("30s".into());
                }),
                [
                    "jitter (1m) must be shorter than expires (30s), or fires sent late in the jitter would already be expired"
                ]
            );
            assert!(
                jittered(|r| {
                    schedule(r);
                    r.jitter = Some("29s".into());
                    r.expires = Some("30s".into());
                })
                .is_empty()
            );
        }
    }

    /// A sub-microsecond anchor made every slot unrepresentable in the
    /// ledger (µs), so the beat claimed each fire and never sent it.
    #[test]
    fn a_sub_microsecond_anchor_yields_slots_of_whole_microseconds() {
        let raw = RawEntry {
            task: Some("a.b".into()),
            every: Some("1s".into()),
            anchor: Some(RawInstant::Text("2026-01-01T00:00:00.0000005Z".into())),
            start_at: Some(RawInstant::Text("2026-01-01T00:00:00.0000019Z".into())),
            end_at: Some(RawInstant::Text("2026-01-02T00:00:00.9999999Z".into())),
            ..Default::default()
        };
        let (e, p) = validate("e", raw, origin(), &Context::default());
        let e = e.unwrap_or_else(|| panic!("{p:?}"));
        assert_eq!(
            e.start_at().map(|t| t.timestamp_subsec_nanos()),
            Some(1_000)
        );
        assert_eq!(
            e.end_at().map(|t| t.timestamp_subsec_nanos()),
            Some(999_999_000)
        );
        let mut t = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        for _ in 0..10 {
            let f = e.next_after(t).unwrap().at;
            assert_eq!(f.timestamp_subsec_nanos() % 1_000, 0, "{f:?}");
            t = f;
        }
    }

    #[test]
    fn sentry_monitor_warns_on_schedules_sentry_cannot_describe_and_refuses_its_headers() {
        let raw = |every: &str, headers: Option<Value>| RawEntry {
            task: Some("a.b".into()),
            every: Some(every.into()),
            headers,
            sentry_monitor: Some(true),
            ..Default::default()
        };
        let (e, p) = validate("fast", raw("1s", None), origin(), &Context::default());
        let e = e.expect("a warning does not stop the entry");
        assert!(e.sentry_monitor().is_none());
        assert!(p.iter().all(|p| p.warning) && p.len() == 1, "{p:?}");
        let (e, p) = validate("hourly", raw("1h", None), origin(), &Context::default());
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(e.unwrap().sentry_monitor().unwrap().slug, "hourly");
        let taken = serde_json::json!({"sentry-monitor-slug": "x", "headers": {}});
        let (e, p) = validate(
            "clash",
            raw("1h", Some(taken)),
            origin(),
            &Context::default(),
        );
        assert!(e.is_none());
        assert!(
            p.iter()
                .any(|p| !p.warning && p.message.contains("sentry-monitor-slug, headers")),
            "{p:?}"
        );
    }
}
