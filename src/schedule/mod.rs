//! When an entry fires: cron strings, Celery crontab tables and anchored
//! intervals, as pure functions of an instant.
//!
//! Cron matching (fields, names, `L`/`W`/`#`, macros) is croner's; what
//! croner searches is *naive wall-clock time*. Mapping wall time to instants,
//! which is where DST lives, is done here, with the split Vixie cron uses:
//!
//! - a *wildcard* entry (minute or hour field starts with `*`) fires at every
//!   matching wall time that exists, on both passes of a repeated hour, and
//!   not at all for wall times inside a skipped hour;
//! - a *fixed-time* entry fires once per matching local date and time: a
//!   repeated time at its first occurrence only, a skipped time once at the
//!   first instant after the gap.
//!
//! Invariant: `next_after(t)` is strictly greater than `t`, and the sequence
//! of fires does not depend on where a walk through it starts.

pub mod duration;
pub mod gap;
pub mod preview;

use std::fmt;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// How a wall-clock schedule treats DST gaps and repeated hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DstRule {
    /// Minute or hour field starts with `*`: every existing matching wall time.
    Wildcard,
    /// Any other: once per local date and time.
    Fixed,
}

/// How the day-of-month and day-of-week fields combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayRule {
    /// Vixie cron (cron strings): either field may match when both are
    /// restricted; a field starting with `*` makes it both.
    Vixie,
    /// Celery's `crontab()` (crontab tables): every field must match.
    Celery,
}

/// A cron or crontab schedule that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronParseError(pub String);

/// A wall-clock schedule in one IANA time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    /// The expression as the user would recognise it, for display.
    pub expr: String,
    cron: Cron,
    pub dst: DstRule,
    pub days: DayRule,
    pub tz: Tz,
    /// False when no date ever matches (e.g. February 30), so callers can
    /// warn once instead of searching to the end of time on every tick.
    pub ever_fires: bool,
    /// Computed on first use: only entries with a jitter need it.
    min_gap: GapCache,
    /// The last question [`CronSchedule::next_after`] answered.
    memo: Memo,
}

/// The last `after` asked of a shared schedule and its answer. Entries
/// sharing an expression ask the same question in a row: the 10 000
/// `* * * * *` entries of a burst each ask it five times per fire (croner's
/// search is most of deciding a burst). Never part of the schedule's
/// value: its `Debug` is empty (reloads compare entries by their `Debug`).
#[derive(Default)]
struct Memo(std::sync::Mutex<Option<(DateTime<Utc>, Option<Fire>)>>);

impl Memo {
    fn get_or(&self, after: DateTime<Utc>, f: impl FnOnce() -> Option<Fire>) -> Option<Fire> {
        if let Ok(m) = self.0.try_lock()
            && let Some((at, fire)) = *m
            && at == after
        {
            return fire;
        }
        let fire = f();
        // Another thread asking at the same time (the status page) simply
        // computes its own answer.
        if let Ok(mut m) = self.0.try_lock() {
            *m = Some((after, fire));
        }
        fire
    }
}

impl Clone for Memo {
    fn clone(&self) -> Self {
        Memo::default()
    }
}

impl fmt::Debug for Memo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("_")
    }
}

/// [`CronSchedule::min_gap`]'s answer once computed. Like [`Memo`], not
/// part of what the schedule is: parsed schedules are shared across the
/// process (see `CronSchedule::cached`), so whether another user of the
/// same expression asked already must not show in what two equal
/// schedules print.
#[derive(Clone, Default)]
struct GapCache(OnceLock<Option<gap::MinGap>>);

impl fmt::Debug for GapCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("_")
    }
}

/// Fires at `anchor + k * every` for every integer `k`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntervalSchedule {
    pub every: Duration,
    pub anchor: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub enum Schedule {
    /// Shared: a parsed pattern takes about 5 KB, and large schedules repeat
    /// a few expressions many times.
    Cron(Arc<CronSchedule>),
    Interval(IntervalSchedule),
}

/// What a DST transition did to a fire, for previews and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DstNote {
    /// The wall time did not exist (clocks went forward); fired at the first
    /// instant after the gap instead.
    MovedOutOfGap {
        wall: NaiveDateTime,
    },
    /// The wall time happened twice; a fixed-time entry fires on the first pass only.
    FirstPassOnly {
        wall: NaiveDateTime,
    },
    /// The wall time happened twice; a wildcard entry fires on both passes.
    RepeatedFirstPass {
        wall: NaiveDateTime,
    },
    RepeatedSecondPass {
        wall: NaiveDateTime,
    },
}

impl fmt::Display for DstNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |w: &NaiveDateTime| w.format("%H:%M").to_string();
        match self {
            DstNote::MovedOutOfGap { wall } => {
                write!(f, "moved: {} skipped by DST, fires after the gap", hm(wall))
            }
            DstNote::FirstPassOnly { wall } => {
                write!(
                    f,
                    "merged: {} repeats (DST), fires on the first pass only",
                    hm(wall)
                )
            }
            DstNote::RepeatedFirstPass { wall } => {
                write!(f, "{} repeats (DST): first pass", hm(wall))
            }
            DstNote::RepeatedSecondPass { wall } => {
                write!(f, "{} repeats (DST): second pass", hm(wall))
            }
        }
    }
}

/// One fire instant and what DST did to it, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fire {
    pub at: DateTime<Utc>,
    pub dst: Option<DstNote>,
}

impl Schedule {
    /// The first fire strictly after `after`, or `None` if there is none.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<Fire> {
        match self {
            Schedule::Cron(c) => c.next_after(after),
            Schedule::Interval(i) => i.next_after(after).map(|at| Fire { at, dst: None }),
        }
    }

    /// The zone fire instants are shown in: the entry's for cron, UTC for
    /// intervals (which run in real time).
    pub fn display_tz(&self) -> Tz {
        match self {
            Schedule::Cron(c) => c.tz,
            Schedule::Interval(_) => Tz::UTC,
        }
    }
}

impl IntervalSchedule {
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let every = self.every.num_milliseconds();
        if every <= 0 {
            return None;
        }
        let elapsed = after - self.anchor;
        // Whole milliseconds rounded down: `num_milliseconds` rounds toward
        // zero, which put an instant less than a millisecond before the
        // anchor on the anchor's side, and the anchor's own fire was skipped.
        let mut since = elapsed.num_milliseconds();
        if Duration::milliseconds(since) > elapsed {
            since -= 1;
        }
        // Floor division, so instants before the anchor extend the same grid.
        let k = since.div_euclid(every) + 1;
        let offset = k.checked_mul(every)?;
        self.anchor
            .checked_add_signed(Duration::milliseconds(offset))
    }
}

/// The five or six cron fields of a Celery `crontab()` table, already strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrontabFields {
    pub minute: String,
    pub hour: String,
    pub day_of_week: String,
    pub day_of_month: String,
    pub month_of_year: String,
}

/// Whether a pattern matches any instant, asked of the pattern itself:
/// each time field must match some value, and some day must match. One
/// that matches a day at all does so within 28 years (the Gregorian
/// weekday cycle, covering leap days on a given weekday). croner's own
/// search for a pattern that matches nothing walks day by day to year
/// 5000: 80 ms, and over 10 s in a fuzz build.
fn ever_fires(cron: &Cron) -> bool {
    let p = &cron.pattern;
    let any =
        |range: std::ops::Range<u32>, field: &dyn Fn(u32) -> bool| range.into_iter().any(field);
    if !any(0..60, &|v| p.second_match(v).unwrap_or(false))
        || !any(0..60, &|v| p.minute_match(v).unwrap_or(false))
        || !any(0..24, &|v| p.hour_match(v).unwrap_or(false))
    {
        return false;
    }
    let end = naive(2001 + 28 * 2, 1, 1).date();
    let mut day = naive(2001, 1, 1).date();
    while day < end {
        let (y, m) = (day.year(), day.month());
        if !p.month_match(m).unwrap_or(false) {
            day = chrono::NaiveDate::from_ymd_opt(y + i32::from(m == 12), m % 12 + 1, 1)
                .unwrap_or(end);
            continue;
        }
        let weekday = croner::Weekday::from_days_from_sunday(day.weekday().num_days_from_sunday());
        if p.day_match(y, m, day.day(), weekday).unwrap_or(false) {
            return true;
        }
        day = day.succ_opt().unwrap_or(end);
    }
    false
}

/// A cron string with its `@` macro, if any, spelled out as five fields.
pub fn expand_macro(expr: &str) -> Result<String, CronParseError> {
    let trimmed = expr.trim();
    Ok(match trimmed.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
        "@monthly" => "0 0 1 * *".to_string(),
        "@weekly" => "0 0 * * 0".to_string(),
        "@daily" | "@midnight" => "0 0 * * *".to_string(),
        "@hourly" => "0 * * * *".to_string(),
        m if m.starts_with('@') => {
            return Err(CronParseError(format!(
                "unknown macro {trimmed:?}; use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly"
            )));
        }
        _ => trimmed.to_string(),
    })
}

impl CronSchedule {
    /// Parses a cron string with Vixie semantics: 5 fields, or 6 with a
    /// leading seconds field, or an `@` macro.
    pub fn parse_cron(expr: &str, tz: Tz) -> Result<Arc<Self>, CronParseError> {
        let trimmed = expr.trim();
        let pattern = expand_macro(trimmed)?;
        let fields: Vec<&str> = pattern.split_whitespace().collect();
        let (minute, hour, dom, dow) = match fields.len() {
            5 => (fields[0], fields[1], fields[2], fields[4]),
            6 => (fields[1], fields[2], fields[3], fields[5]),
            n => {
                return Err(CronParseError(format!(
                    "cron {trimmed:?} has {n} fields; expected 5 (minute hour day-of-month month day-of-week) or 6 (with leading seconds)"
                )));
            }
        };
        // Vixie: a day field that starts with `*` (even `*/2`) makes the two
        // day fields AND; croner only treats a bare `*` that way.
        let and_days = dom.starts_with('*') || dow.starts_with('*');
        Self::build(
            trimmed,
            &pattern,
            minute,
            hour,
            and_days,
            DayRule::Vixie,
            tz,
        )
    }

    /// Builds a schedule from a Celery `crontab()` table: all day fields must match.
    pub fn parse_crontab(fields: &CrontabFields, tz: Tz) -> Result<Arc<Self>, CronParseError> {
        let pattern = format!(
            "{} {} {} {} {}",
            fields.minute,
            fields.hour,
            fields.day_of_month,
            fields.month_of_year,
            fields.day_of_week
        );
        for (name, value) in [
            ("minute", &fields.minute),
            ("hour", &fields.hour),
            ("day_of_week", &fields.day_of_week),
            ("day_of_month", &fields.day_of_month),
            ("month_of_year", &fields.month_of_year),
        ] {
            if value.trim().is_empty() || value.split_whitespace().count() != 1 {
                return Err(CronParseError(format!(
                    "crontab {name} {value:?} must be one field (e.g. \"*\", \"0\", \"*/15\", \"mon-fri\")"
                )));
            }
        }
        let display = format!(
            "crontab(minute={}, hour={}, day_of_week={}, day_of_month={}, month_of_year={})",
            fields.minute,
            fields.hour,
            fields.day_of_week,
            fields.day_of_month,
            fields.month_of_year
        );
        Self::build(
            &display,
            &pattern,
            &fields.minute,
            &fields.hour,
            true,
            DayRule::Celery,
            tz,
        )
    }

    fn build(
        display: &str,
        pattern: &str,
        minute: &str,
        hour: &str,
        and_days: bool,
        days: DayRule,
        tz: Tz,
    ) -> Result<Arc<Self>, CronParseError> {
        // croner reads an empty list item (",", "1,,2", "0,") as a field
        // that matches nothing, and a search for the next fire then walks
        // years minute by minute: refuse it here, as Vixie cron does.
        if pattern.contains('+') {
            return Err(CronParseError(format!(
                "invalid cron {display:?}: '+' is not cron syntax (day fields follow Vixie cron: a day field starting with '*' means both must match)"
            )));
        }
        if let Some(field) = pattern
            .split_whitespace()
            .find(|f| f.split(',').any(str::is_empty))
        {
            return Err(CronParseError(format!(
                "invalid cron {display:?}: the field {field:?} has an empty list item; separate values with single commas (e.g. \"1,15\")"
            )));
        }
        let key = format!("{display}\0{pattern}\0{and_days}\0{days:?}\0{tz}");
        Self::cached(key, || {
            let pattern = names_to_numbers(pattern)
                .map_err(|e| CronParseError(format!("invalid cron {display:?}: {e}")))?;
            let cron = CronParser::builder()
                .seconds(Seconds::Optional)
                .year(Year::Disallowed)
                .dom_and_dow(and_days)
                .build()
                .parse(&pattern)
                .map_err(|e| {
                    CronParseError(format!(
                        "invalid cron {display:?}: {e} (fields: minute 0-59, hour 0-23, day-of-month 1-31, month 1-12 or JAN-DEC, day-of-week 0-7 or SUN-SAT)"
                    ))
                })?;
            let dst = if minute.starts_with('*') || hour.starts_with('*') {
                DstRule::Wildcard
            } else {
                DstRule::Fixed
            };
            let ever_fires = ever_fires(&cron);
            Ok(CronSchedule {
                expr: display.to_string(),
                cron,
                dst,
                days,
                tz,
                ever_fires,
                min_gap: GapCache::default(),
                memo: Memo::default(),
            })
        })
    }

    /// Large schedules repeat a few expressions many times, and croner's
    /// parse plus the never-fires probe were a quarter of loading 100 000
    /// entries; a parsed schedule is a plain value, so it is reused.
    fn cached(
        key: String,
        make: impl FnOnce() -> Result<Self, CronParseError>,
    ) -> Result<Arc<Self>, CronParseError> {
        static CACHE: std::sync::OnceLock<
            std::sync::Mutex<std::collections::HashMap<String, Arc<CronSchedule>>>,
        > = std::sync::OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(hit) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(hit);
        }
        let built = Arc::new(make()?);
        if let Ok(mut c) = cache.lock() {
            if c.len() >= 4096 {
                c.clear();
            }
            c.insert(key, built.clone());
        }
        Ok(built)
    }

    /// First matching wall time at or after (`inclusive`) / after `from`.
    fn next_wall(&self, from: NaiveDateTime, inclusive: bool) -> Option<NaiveDateTime> {
        let as_utc = Utc.from_utc_datetime(&from);
        self.cron
            .find_next_occurrence(&as_utc, inclusive)
            .ok()
            .map(|dt| dt.naive_utc())
    }

    /// The first fire strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<Fire> {
        if !self.ever_fires {
            return None;
        }
        self.memo.get_or(after, || self.search_after(after))
    }

    fn search_after(&self, after: DateTime<Utc>) -> Option<Fire> {
        let local = after.with_timezone(&self.tz);
        let wall_now = local.naive_local();
        // Wall times before `wall_now` can still fire after `after` only on the
        // second pass of a repeated hour, and only when `after` is on its first
        // pass: then look back by the size of the repeat.
        let mut wall = match self.tz.from_local_datetime(&wall_now) {
            LocalResult::Ambiguous(early, late)
                if early == local && self.dst == DstRule::Wildcard =>
            {
                wall_now - (late.naive_utc() - early.naive_utc())
            }
            _ => wall_now,
        };
        // Early/single/gap fires are monotone in wall time, so the first one
        // found is the least; second-pass fires are monotone among themselves.
        // The answer is the lesser of the first of each.
        let mut best_late: Option<Fire> = None;
        let mut inclusive = true;
        // A bound on wall times visited, so a pathological zone cannot spin.
        for _ in 0..100_000 {
            let w = self.next_wall(wall, inclusive)?;
            inclusive = false;
            wall = w;
            let primary = match self.tz.from_local_datetime(&w) {
                LocalResult::Single(dt) => Some(Fire {
                    at: dt.with_timezone(&Utc),
                    dst: None,
                }),
                LocalResult::Ambiguous(early, late) => {
                    let (early, late) = (early.with_timezone(&Utc), late.with_timezone(&Utc));
                    match self.dst {
                        DstRule::Fixed => Some(Fire {
                            at: early,
                            dst: Some(DstNote::FirstPassOnly { wall: w }),
                        }),
                        DstRule::Wildcard => {
                            if late > after && best_late.is_none() {
                                best_late = Some(Fire {
                                    at: late,
                                    dst: Some(DstNote::RepeatedSecondPass { wall: w }),
                                });
                            }
                            Some(Fire {
                                at: early,
                                dst: Some(DstNote::RepeatedFirstPass { wall: w }),
                            })
                        }
                    }
                }
                LocalResult::None => match self.dst {
                    DstRule::Wildcard => None,
                    DstRule::Fixed => self.gap_end(w).map(|at| Fire {
                        at,
                        dst: Some(DstNote::MovedOutOfGap { wall: w }),
                    }),
                },
            };
            if let Some(fire) = primary.filter(|f| f.at > after) {
                return Some(match best_late {
                    Some(late) if late.at < fire.at => late,
                    _ => fire,
                });
            }
        }
        best_late
    }

    /// The first instant after the DST gap that swallowed wall time `w`.
    fn gap_end(&self, w: NaiveDateTime) -> Option<DateTime<Utc>> {
        let start = w.with_second(0)?.with_nanosecond(0)?;
        // Real gaps are at most a day long (Samoa skipped 2011-12-30).
        (1..=26 * 60).find_map(|minutes| {
            match self
                .tz
                .from_local_datetime(&(start + Duration::minutes(minutes)))
            {
                LocalResult::Single(dt) => Some(dt.with_timezone(&Utc)),
                LocalResult::Ambiguous(early, _) => Some(early.with_timezone(&Utc)),
                LocalResult::None => None,
            }
        })
    }
}

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

/// Replaces day and month names with numbers, field by field, before croner
/// sees the pattern. croner replaces names across the whole pattern and
/// turns `-SUN` into `-7` first, so `SUN-SUN` became `0-7` (every day), a
/// month name in the day-of-week field became a weekday and a day name in
/// the minute field a minute. Here a name is read only in its own field,
/// `SUN` is 0 except as the end of a range that starts after Sunday
/// (`MON-SUN` is 1-7), and any other word is an error. The letters croner
/// gives a meaning (`L`, `W`) pass through.
fn names_to_numbers(pattern: &str) -> Result<String, String> {
    let fields: Vec<&str> = pattern.split_whitespace().collect();
    let n = fields.len();
    if !(5..=6).contains(&n) {
        return Ok(pattern.to_string());
    }
    let mut out = Vec::with_capacity(n);
    for (i, field) in fields.iter().enumerate() {
        let kind = match n - i {
            1 => FieldKind::DayOfWeek,
            2 => FieldKind::Month,
            3 => FieldKind::DayOfMonth,
            _ => FieldKind::Time,
        };
        out.push(field_names_to_numbers(field, kind)?);
    }
    Ok(out.join(" "))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    Time,
    DayOfMonth,
    Month,
    DayOfWeek,
}

fn field_names_to_numbers(field: &str, kind: FieldKind) -> Result<String, String> {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if !c.is_ascii_alphabetic() {
            out.push(c);
            continue;
        }
        let mut word = c.to_ascii_uppercase().to_string();
        while let Some(next) = chars.next_if(char::is_ascii_alphabetic) {
            word.push(next.to_ascii_uppercase());
        }
        let day = DAY_NAMES.iter().position(|d| *d == word);
        let month = MONTH_NAMES.iter().position(|m| *m == word);
        match (kind, day, month, word.as_str()) {
            (FieldKind::DayOfWeek, Some(0), _, _) => {
                // The end of a range that starts after Sunday: Sunday as 7.
                let start: String = out
                    .strip_suffix('-')
                    .map(|before| {
                        let digits = before.len()
                            - before
                                .chars()
                                .rev()
                                .take_while(char::is_ascii_digit)
                                .count();
                        before[digits..].to_string()
                    })
                    .unwrap_or_default();
                let after_sunday = start.parse::<u32>().is_ok_and(|s| s > 0);
                out.push(if after_sunday { '7' } else { '0' });
            }
            (FieldKind::DayOfWeek, Some(d), _, _) => out.push_str(&d.to_string()),
            (FieldKind::Month, _, Some(m), _) => out.push_str(&(m + 1).to_string()),
            (FieldKind::DayOfWeek, _, _, "L") | (FieldKind::DayOfMonth, _, _, "L" | "W" | "LW") => {
                out.push_str(&word)
            }
            (FieldKind::DayOfWeek, ..) => {
                return Err(format!(
                    "{word:?} in the day-of-week field {field:?} is not a day name (SUN-SAT)"
                ));
            }
            (FieldKind::Month, ..) => {
                return Err(format!(
                    "{word:?} in the month field {field:?} is not a month name (JAN-DEC)"
                ));
            }
            _ => {
                return Err(format!(
                    "{word:?} in the field {field:?}: names go in the month (JAN-DEC) and day-of-week (SUN-SAT) fields only"
                ));
            }
        }
    }
    Ok(out)
}

fn naive(y: i32, m: u32, d: u32) -> NaiveDateTime {
    chrono::NaiveDate::from_ymd_opt(y, m, d)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
