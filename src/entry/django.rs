//! django-celery-beat's rows as entries, judged by the same validation as
//! schedule files and the entries table. Pure: rows in, entries and
//! diagnostics out (the SQL is [`crate::store::django`]'s).
//!
//! A `PeriodicTask` row becomes an entry named by its `name`:
//!
//! - crontab rows keep Celery's crontab semantics (every field must match)
//!   in the row's own `timezone`;
//! - interval rows (`every` + `period`) become an `every`. Intervals here
//!   are anchored, not counted from the last run as in django-celery-beat:
//!   they fire at `start_time` + k·interval when the row has a
//!   `start_time`, else at the Unix epoch + k·interval (so `every 1 hour`
//!   fires on the hour, UTC). Fires are then the same on every replica,
//!   after every restart, and after any edit in the admin;
//! - clocked rows fire once, at `clocked_time` (or at `start_time` if
//!   later);
//! - solar rows have no equivalent: they are set aside with an error, as is
//!   any row that does not validate; the other rows keep firing.
//!
//! `start_time` opens the window; `expires` closes it and is also the
//! messages' expiry (django-celery-beat passes it as the task's
//! `expires`); `expire_seconds` is the message expiry after each fire
//! (sqsbeat's `expires`). A `one_off` row fires once: its window closes
//! after its first slot, and the beat disables it once sent. A one-off
//! with a run count is done (django-celery-beat's rule for a one-off it
//! ran but has not disabled yet). `queue` names the SQS queue; without
//! it, a `routing_key` does (on SQS the routing key is the queue's name),
//! else `celery`; `exchange` has no meaning on SQS and is ignored, with a
//! warning.
//!
//! A row sqsbeat has no record of starts from its last run or its last
//! change (`last_run_at`, `date_changed`), whichever is later, as
//! django-celery-beat does ([`super::Entry::resume_from`]): a row saved
//! just before its slot fires at it, a slot missed while no beat ran is
//! caught up once.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::Value;

use crate::entry::file::{Diagnostic, Loaded};
use crate::entry::{self, Context, CronField, Entry, Origin, RawCrontab, RawEntry, RawInstant};
use crate::store::django::{PeriodicTaskRow, TABLE, Unreadable};

/// The django-celery-beat row an entry came from: what the beat writes a
/// sent fire back to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Link {
    /// The schema of Django's tables.
    pub schema: String,
    /// `django_celery_beat_periodictask.id`.
    pub id: i64,
    /// Disabled once sent, as django-celery-beat disables a one-off.
    pub one_off: bool,
    /// The row's `date_changed` as read: a one-off changed since its fire
    /// is not disabled by that fire's write-back.
    pub changed: Option<DateTime<Utc>>,
}

/// Where a row is, in diagnostics and origins: schema, table and id (the
/// name is the entry's).
pub fn place(schema: &str, id: i64) -> String {
    format!("{schema}.{TABLE} id {id}")
}

/// The smallest step the ledger keeps: an instant just before a slot.
const TICK: Duration = Duration::microseconds(1);

/// The TOML-shaped entry a row describes, with warnings; or every reason
/// it cannot be one.
pub fn to_raw(row: &PeriodicTaskRow) -> Result<(RawEntry, Vec<String>), Vec<String>> {
    let mut errors = Vec::new();
    let mut raw = RawEntry {
        task: Some(row.task.clone()),
        ..Default::default()
    };
    match schedule(row, &mut raw) {
        Ok(()) => {}
        Err(e) => errors.push(e),
    }
    for (key, text, slot) in [
        ("args", &row.args, &mut raw.args),
        ("kwargs", &row.kwargs, &mut raw.kwargs),
        ("headers", &row.headers, &mut raw.headers),
    ] {
        match json(key, text) {
            Ok(v) => *slot = v,
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let (queue, warnings) = queue(row);
    raw.queue = queue;
    raw.priority = row.priority;
    raw.expires = row
        .expire_seconds
        .filter(|s| *s > 0)
        .map(|s| format!("{s}s"));
    if row.clocked_id.is_none() {
        raw.start_at = row.start_time.map(instant);
    }
    Ok((raw, warnings))
}

fn instant(t: DateTime<Utc>) -> RawInstant {
    RawInstant::Text(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// Exactly one of the four schedule keys, as django-celery-beat's own
/// validation requires.
fn schedule(row: &PeriodicTaskRow, raw: &mut RawEntry) -> Result<(), String> {
    let set: Vec<&str> = [
        ("interval", row.interval_id.is_some()),
        ("crontab", row.crontab_id.is_some()),
        ("solar", row.solar_id.is_some()),
        ("clocked", row.clocked_id.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect();
    let missing = |kind: &str, id: Option<i64>| {
        format!(
            "{kind}_id {} names no django_celery_beat_{kind}schedule row",
            id.unwrap_or_default()
        )
    };
    match set[..] {
        [] => Err("no schedule: set one of interval, crontab or clocked".into()),
        ["interval"] => {
            let i = row
                .interval
                .as_ref()
                .ok_or_else(|| missing("interval", row.interval_id))?;
            raw.every = Some(interval(i.every, &i.period)?);
            raw.anchor = row.start_time.map(instant);
            Ok(())
        }
        ["crontab"] => {
            let c = row
                .crontab
                .as_ref()
                .ok_or_else(|| missing("crontab", row.crontab_id))?;
            // Celery reads "0, 30" as "0,30"; so does django-celery-beat's display.
            let field = |f: &str| Some(CronField::Text(f.split_whitespace().collect()));
            raw.crontab = Some(RawCrontab {
                minute: field(&c.minute),
                hour: field(&c.hour),
                day_of_week: field(&c.day_of_week),
                day_of_month: field(&c.day_of_month),
                month_of_year: field(&c.month_of_year),
            });
            raw.timezone = Some(c.timezone.clone());
            Ok(())
        }
        ["solar"] => Err(match &row.solar {
            Some(s) => format!(
                "solar schedules ({} at {}, {}) are not supported; this row does not fire: use a crontab at the local time instead",
                s.event, s.latitude, s.longitude
            ),
            None => missing("solar", row.solar_id),
        }),
        ["clocked"] => {
            let at = row
                .clocked
                .ok_or_else(|| missing("clocked", row.clocked_id))?;
            // django-celery-beat holds a clocked task until its start_time too.
            let at = row.start_time.map_or(at, |s| at.max(s));
            // One slot: an interval anchored there, in a window of that instant.
            raw.every = Some("1w".into());
            raw.anchor = Some(instant(at));
            raw.start_at = Some(instant(at));
            raw.end_at = Some(instant(at));
            Ok(())
        }
        _ => Err(format!(
            "set only one of interval, crontab, solar or clocked, not {}",
            set.join(" and ")
        )),
    }
}

/// `every` + `period` as a duration sqsbeat reads.
fn interval(every: i64, period: &str) -> Result<String, String> {
    if every < 1 {
        return Err(format!(
            "interval every = {every}: must be at least 1 (django-celery-beat's own rule)"
        ));
    }
    let unit = match period {
        "days" => "d",
        "hours" => "h",
        "minutes" => "m",
        "seconds" => "s",
        "microseconds" if every % 1000 == 0 => return Ok(format!("{}ms", every / 1000)),
        "microseconds" => {
            return Err(format!(
                "interval of {every} microseconds: sqsbeat counts intervals in whole milliseconds"
            ));
        }
        other => {
            return Err(format!(
                "interval period {other:?}: expected days, hours, minutes, seconds or microseconds"
            ));
        }
    };
    Ok(format!("{every}{unit}"))
}

/// A JSON text column; empty means unset, as django-celery-beat reads it.
/// The error gives the position and the length, not the text: args and
/// kwargs are the application's data, and the error is logged at every
/// reload.
fn json(key: &str, text: &Option<String>) -> Result<Option<Value>, String> {
    match text.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) => serde_json::from_str(t).map(Some).map_err(|e| {
            format!(
                "{key} is not valid JSON ({e}; {} characters)",
                t.chars().count()
            )
        }),
    }
}

/// The logical queue, and warnings for routing fields SQS cannot honour.
fn queue(row: &PeriodicTaskRow) -> (Option<String>, Vec<String>) {
    fn set(v: &Option<String>) -> Option<&str> {
        v.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }
    let (queue, key) = (set(&row.queue), set(&row.routing_key));
    let mut warnings = Vec::new();
    let chosen = queue.or(key);
    if let Some(x) = set(&row.exchange) {
        warnings.push(format!(
            "exchange {x:?} is ignored: SQS has no exchanges; the message goes to queue {:?}",
            chosen.unwrap_or(entry::DEFAULT_QUEUE)
        ));
    }
    if let (Some(q), Some(k)) = (queue, key)
        && q != k
    {
        warnings.push(format!(
            "routing_key {k:?} is ignored: on SQS the queue names the destination, and the message goes to queue {q:?}"
        ));
    }
    (chosen.map(str::to_string), warnings)
}

/// Where the beat starts a row it has no record of: its last run or last
/// change, whichever is later; a row that never ran and has a
/// `start_time` from just before it; a clocked row not run since its slot
/// from just before the slot, so that a slot already past still fires
/// once, as in django-celery-beat.
fn resume_from(row: &PeriodicTaskRow, entry: &Entry) -> Option<DateTime<Utc>> {
    let mut from = match (row.last_run_at, row.date_changed) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    if let (None, Some(start)) = (row.last_run_at, row.start_time) {
        from = Some(start - TICK);
    }
    if row.clocked_id.is_some()
        && let Some(slot) = entry.start_at()
        && row.last_run_at.is_none_or(|l| l < slot)
    {
        from = Some(from.map_or(slot - TICK, |f| f.min(slot - TICK)));
    }
    from
}

/// One row as an entry, with its diagnostics.
pub fn entry(
    row: &PeriodicTaskRow,
    schema: &str,
    ctx: &Context,
) -> (Option<Entry>, Vec<Diagnostic>) {
    let place = place(schema, row.id);
    let diag = |message: String, warning: bool| Diagnostic {
        file: place.clone(),
        line: 0,
        entry: Some(row.name.clone()),
        message,
        warning,
    };
    let (raw, warnings) = match to_raw(row) {
        Ok(r) => r,
        Err(errors) => return (None, errors.into_iter().map(|e| diag(e, false)).collect()),
    };
    let mut diagnostics: Vec<Diagnostic> = warnings.into_iter().map(|w| diag(w, true)).collect();
    let origin = Origin {
        file: place.as_str().into(),
        line: 0,
    };
    let (entry, problems) = entry::validate(&row.name, raw, origin, ctx);
    diagnostics.extend(problems.into_iter().map(|p| diag(p.message, p.warning)));
    let Some(mut entry) = entry else {
        return (None, diagnostics);
    };
    // Set after validation: they only narrow what validation accepted.
    if let Some(x) = row.expires {
        entry.update_extras(|e| {
            e.expires_at = Some(x);
            e.end_at = Some(e.end_at.map_or(x, |e| e.min(x)));
        });
    }
    let from = resume_from(row, &entry);
    entry.update_extras(|e| e.resume_from = from);
    entry.enabled = row.enabled && !(row.one_off && row.total_run_count > 0);
    if row.one_off
        && let Some(first) = entry.resume_from().and_then(|f| entry.next_after(f))
    {
        entry.update_extras(|e| e.end_at = Some(e.end_at.map_or(first.at, |e| e.min(first.at))));
    }
    entry.update_extras(|e| {
        e.django = Some(Box::new(Link {
            schema: schema.to_string(),
            id: row.id,
            one_off: row.one_off,
            changed: row.date_changed,
        }))
    });
    (Some(entry), diagnostics)
}

/// Every row as entries, with diagnostics naming each row. A row the store
/// could not read is an error naming it, like a row that does not validate.
pub fn validate(
    rows: &[Result<PeriodicTaskRow, Unreadable>],
    schema: &str,
    ctx: &Context,
) -> Loaded {
    let mut out = Loaded::default();
    for row in rows {
        match row {
            Ok(row) => {
                let (entry, diagnostics) = entry(row, schema, ctx);
                out.names.push((
                    row.name.clone(),
                    Origin {
                        file: place(schema, row.id).into(),
                        line: 0,
                    },
                ));
                out.entries.extend(entry);
                out.diagnostics.extend(diagnostics);
            }
            Err(u) => {
                let file = place(schema, u.id);
                out.names.push((
                    u.name.clone(),
                    Origin {
                        file: file.as_str().into(),
                        line: 0,
                    },
                ));
                out.diagnostics.push(Diagnostic {
                    file,
                    line: 0,
                    entry: Some(u.name.clone()),
                    message: u.error.to_string(),
                    warning: false,
                });
            }
        }
    }
    out
}

/// Sets aside the rows that do not validate, as the entries table's are
/// ([`super::merge::set_aside_invalid`]): the admin writes these rows, and
/// one bad row must not take every schedule down. A row set aside keeps
/// the definition it last had in `current`, if any.
pub fn set_aside_invalid(rows: Loaded, current: &[Entry]) -> (Loaded, Vec<Diagnostic>) {
    let (errors, warnings): (Vec<Diagnostic>, Vec<Diagnostic>) =
        rows.diagnostics.into_iter().partition(|d| !d.warning);
    let bad: std::collections::HashSet<&str> =
        errors.iter().filter_map(|d| d.entry.as_deref()).collect();
    let entries = rows
        .entries
        .into_iter()
        .filter(|e| !bad.contains(e.name.as_str()))
        .chain(
            current
                .iter()
                .filter(|e| e.django().is_some() && bad.contains(e.name.as_str()))
                .cloned(),
        )
        .collect();
    let kept = Loaded {
        entries,
        diagnostics: warnings,
        names: rows.names,
        notice: rows.notice,
    };
    (kept, errors)
}

/// Sets aside the rows whose name a schedule file or the entries table
/// also defines: that definition keeps firing, and the error names both
/// places.
pub fn set_aside_clashes(others: &Loaded, rows: Loaded) -> (Loaded, Vec<Diagnostic>) {
    let defined: std::collections::HashMap<&str, &Origin> =
        others.names.iter().map(|(n, o)| (n.as_str(), o)).collect();
    let mut errors = Vec::new();
    for (name, origin) in &rows.names {
        if let Some(o) = defined.get(name.as_str()) {
            let there = if o.line == 0 {
                format!("the {}", o.file)
            } else {
                format!("{}:{}", o.file, o.line)
            };
            errors.push(Diagnostic {
                file: origin.file.to_string(),
                line: 0,
                entry: Some(name.clone()),
                message: format!(
                    "also defined in {there}; that definition fires and this row is not loaded (rename one of them)"
                ),
                warning: false,
            });
        }
    }
    let clashing: std::collections::HashSet<&str> =
        errors.iter().filter_map(|d| d.entry.as_deref()).collect();
    let kept = Loaded {
        entries: rows
            .entries
            .into_iter()
            .filter(|e| !clashing.contains(e.name.as_str()))
            .collect(),
        diagnostics: rows.diagnostics,
        names: rows
            .names
            .into_iter()
            .filter(|(n, _)| !clashing.contains(n.as_str()))
            .collect(),
        notice: rows.notice,
    };
    (kept, errors)
}

/// The rows' entries added to the others (clashes already set aside).
pub fn merge(mut others: Loaded, rows: Loaded) -> Loaded {
    others.entries.extend(rows.entries);
    others.diagnostics.extend(rows.diagnostics);
    others.names.extend(rows.names);
    others
}

#[cfg(test)]
mod tests;
