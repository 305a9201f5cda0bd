//! django-celery-beat's tables as a source of entries: every SQL statement
//! sqsbeat runs against them. They live in the application's own database
//! (the one in `[database] url`), in Django's schema (`public` unless
//! configured), created by django-celery-beat's migrations; sqsbeat never
//! creates or migrates them.
//!
//! - [`list`]: every `django_celery_beat_periodictask` row joined with its
//!   schedule row, each on its own (one unreadable row is named and the
//!   others load), for [`crate::entry::django`] to turn into entries.
//! - [`last_update`]: `django_celery_beat_periodictasks.last_update`, which
//!   django-celery-beat's signal handlers bump on every change made through
//!   the ORM or the admin: one row, read every second by the reload's
//!   watcher.
//! - [`record_runs`] / [`write_runs`]: the write-back after fires are sent
//!   (`last_run_at`, `total_run_count`, and `enabled = false` for a sent
//!   one-off not changed since), one UPDATE per batch. It never touches `last_update`: that
//!   would make every replica reload after every fire. django-celery-beat's
//!   own scheduler avoids the same loop by saving with `no_changes = True`,
//!   which its signal handler skips; a plain UPDATE fires no signal at all.
//!
//! PostgreSQL only: with SQLite every function answers
//! [`StoreError::Source`] (the configuration refuses that combination
//! first).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{Store, StoreError, Ts};
use crate::entry::django::Link;

/// The table of periodic tasks, as django-celery-beat names it.
pub const TABLE: &str = "django_celery_beat_periodictask";

/// One `django_celery_beat_periodictask` row with its schedule, as stored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PeriodicTaskRow {
    pub id: i64,
    pub name: String,
    pub task: String,
    /// JSON text, as Django keeps it (`TextField`).
    pub args: Option<String>,
    pub kwargs: Option<String>,
    pub headers: Option<String>,
    pub queue: Option<String>,
    pub exchange: Option<String>,
    pub routing_key: Option<String>,
    pub priority: Option<i64>,
    pub expires: Option<DateTime<Utc>>,
    pub expire_seconds: Option<i64>,
    pub one_off: bool,
    pub start_time: Option<DateTime<Utc>>,
    pub enabled: bool,
    pub last_run_at: Option<DateTime<Utc>>,
    pub total_run_count: i64,
    pub date_changed: Option<DateTime<Utc>>,
    /// The schedule foreign keys as set, and the rows they name (`None`
    /// where the key names no row).
    pub interval_id: Option<i64>,
    pub interval: Option<IntervalRow>,
    pub crontab_id: Option<i64>,
    pub crontab: Option<CrontabRow>,
    pub solar_id: Option<i64>,
    pub solar: Option<SolarRow>,
    pub clocked_id: Option<i64>,
    pub clocked: Option<DateTime<Utc>>,
}

/// `django_celery_beat_intervalschedule`.
#[derive(Debug, Clone, PartialEq)]
pub struct IntervalRow {
    pub every: i64,
    pub period: String,
}

/// `django_celery_beat_crontabschedule`.
#[derive(Debug, Clone, PartialEq)]
pub struct CrontabRow {
    pub minute: String,
    pub hour: String,
    pub day_of_week: String,
    pub day_of_month: String,
    pub month_of_year: String,
    pub timezone: String,
}

/// `django_celery_beat_solarschedule`: read only to name it when refusing it.
#[derive(Debug, Clone, PartialEq)]
pub struct SolarRow {
    pub event: String,
    pub latitude: String,
    pub longitude: String,
}

/// A row that could not be read, with what identifies it.
#[derive(Debug)]
pub struct Unreadable {
    pub id: i64,
    pub name: String,
    pub error: StoreError,
}

/// The joined row as PostgreSQL returns it (numbers widened, numerics as text).
#[derive(sqlx::FromRow)]
struct Record {
    id: i64,
    name: String,
    task: String,
    args: Option<String>,
    kwargs: Option<String>,
    headers: Option<String>,
    queue: Option<String>,
    exchange: Option<String>,
    routing_key: Option<String>,
    priority: Option<i64>,
    expires: Option<Ts>,
    expire_seconds: Option<i64>,
    one_off: bool,
    start_time: Option<Ts>,
    enabled: bool,
    last_run_at: Option<Ts>,
    total_run_count: i64,
    date_changed: Option<Ts>,
    interval_id: Option<i64>,
    i_every: Option<i64>,
    i_period: Option<String>,
    crontab_id: Option<i64>,
    c_minute: Option<String>,
    c_hour: Option<String>,
    c_day_of_week: Option<String>,
    c_day_of_month: Option<String>,
    c_month_of_year: Option<String>,
    c_timezone: Option<String>,
    solar_id: Option<i64>,
    s_event: Option<String>,
    s_latitude: Option<String>,
    s_longitude: Option<String>,
    clocked_id: Option<i64>,
    k_clocked_time: Option<Ts>,
}

impl From<Record> for PeriodicTaskRow {
    fn from(r: Record) -> Self {
        let ts = |t: Option<Ts>| t.map(|t| t.0);
        PeriodicTaskRow {
            id: r.id,
            name: r.name,
            task: r.task,
            args: r.args,
            kwargs: r.kwargs,
            headers: r.headers,
            queue: r.queue,
            exchange: r.exchange,
            routing_key: r.routing_key,
            priority: r.priority,
            expires: ts(r.expires),
            expire_seconds: r.expire_seconds,
            one_off: r.one_off,
            start_time: ts(r.start_time),
            enabled: r.enabled,
            last_run_at: ts(r.last_run_at),
            total_run_count: r.total_run_count,
            date_changed: ts(r.date_changed),
            interval_id: r.interval_id,
            interval: r
                .i_every
                .zip(r.i_period)
                .map(|(every, period)| IntervalRow { every, period }),
            crontab_id: r.crontab_id,
            crontab: match (
                r.c_minute,
                r.c_hour,
                r.c_day_of_week,
                r.c_day_of_month,
                r.c_month_of_year,
                r.c_timezone,
            ) {
                (Some(minute), Some(hour), Some(dow), Some(dom), Some(moy), Some(tz)) => {
                    Some(CrontabRow {
                        minute,
                        hour,
                        day_of_week: dow,
                        day_of_month: dom,
                        month_of_year: moy,
                        timezone: tz,
                    })
                }
                _ => None,
            },
            solar_id: r.solar_id,
            solar: match (r.s_event, r.s_latitude, r.s_longitude) {
                (Some(event), Some(latitude), Some(longitude)) => Some(SolarRow {
                    event,
                    latitude,
                    longitude,
                }),
                _ => None,
            },
            clocked_id: r.clocked_id,
            clocked: ts(r.k_clocked_time),
        }
    }
}

/// `"schema".table`, for a schema the configuration checked; checked again
/// here since it is spliced into SQL.
fn qualified(schema: &str, table: &str) -> Result<String, StoreError> {
    let plain = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !plain {
        return Err(StoreError::Schema(schema.to_string()));
    }
    Ok(format!("\"{schema}\".{table}"))
}

fn postgres(store: &Store) -> Result<&super::PgStore, StoreError> {
    match store {
        Store::Postgres(s) => Ok(s),
        Store::Sqlite(_) => Err(StoreError::Source(
            "django-celery-beat's tables are read from PostgreSQL only: set [database] url to the application's database".into(),
        )),
    }
}

/// What a failed statement means for a person: missing tables and missing
/// grants are the usual set-up mistakes, and each has its fix.
fn explain(schema: &str, e: sqlx::Error) -> StoreError {
    let code = e
        .as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned());
    match code.as_deref() {
        Some("42P01") | Some("3F000") => StoreError::Source(format!(
            "django-celery-beat's tables are not in schema {schema:?} of this database ({e}): apply its migrations (`python manage.py migrate django_celery_beat`) or set [django_celery_beat] schema"
        )),
        Some("42501") => StoreError::Denied(format!(
            "sqsbeat's database user may not use django-celery-beat's tables ({e}): GRANT USAGE ON SCHEMA {schema}, SELECT on the django_celery_beat_* tables, and UPDATE (last_run_at, total_run_count, enabled) ON {TABLE}"
        )),
        _ => StoreError::Db(e),
    }
}

/// Every periodic task, by id, each on its own: a row that cannot be read
/// (an instant PostgreSQL holds but sqsbeat cannot use, say) comes back as
/// [`Unreadable`] naming it, in its place, and the others load.
pub async fn list(
    store: &Store,
    schema: &str,
) -> Result<Vec<Result<PeriodicTaskRow, Unreadable>>, StoreError> {
    let pg = postgres(store)?;
    let sql = format!(
        "SELECT t.id::bigint AS id, t.name, t.task, t.args, t.kwargs, t.headers, t.queue, t.exchange,
                t.routing_key, t.priority::bigint AS priority, t.expires, t.expire_seconds::bigint AS expire_seconds,
                t.one_off, t.start_time, t.enabled, t.last_run_at, t.total_run_count::bigint AS total_run_count,
                t.date_changed,
                t.interval_id::bigint AS interval_id, i.every::bigint AS i_every, i.period AS i_period,
                t.crontab_id::bigint AS crontab_id, c.minute AS c_minute, c.hour AS c_hour,
                c.day_of_week AS c_day_of_week, c.day_of_month AS c_day_of_month,
                c.month_of_year AS c_month_of_year, c.timezone::text AS c_timezone,
                t.solar_id::bigint AS solar_id, s.event AS s_event, s.latitude::text AS s_latitude,
                s.longitude::text AS s_longitude,
                t.clocked_id::bigint AS clocked_id, k.clocked_time AS k_clocked_time
           FROM {t} t
           LEFT JOIN {i} i ON i.id = t.interval_id
           LEFT JOIN {c} c ON c.id = t.crontab_id
           LEFT JOIN {s} s ON s.id = t.solar_id
           LEFT JOIN {k} k ON k.id = t.clocked_id
          ORDER BY t.id",
        t = qualified(schema, TABLE)?,
        i = qualified(schema, "django_celery_beat_intervalschedule")?,
        c = qualified(schema, "django_celery_beat_crontabschedule")?,
        s = qualified(schema, "django_celery_beat_solarschedule")?,
        k = qualified(schema, "django_celery_beat_clockedschedule")?,
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(pg.pool())
        .await
        .map_err(|e| explain(schema, e))?;
    Ok(rows
        .iter()
        .map(|r| {
            <Record as sqlx::FromRow<_>>::from_row(r)
                .map(PeriodicTaskRow::from)
                .map_err(|e| {
                    use sqlx::Row;
                    let id: i64 = r.try_get("id").unwrap_or(0);
                    Unreadable {
                        id,
                        name: r.try_get("name").unwrap_or_else(|_| "?".to_string()),
                        error: super::decode_error(TABLE, format!("id {id}"), e),
                    }
                })
        })
        .collect())
}

/// `django_celery_beat_periodictasks.last_update`: when anything was last
/// changed through Django. `None` until the first change (the row is
/// created then).
pub async fn last_update(store: &Store, schema: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    let pg = postgres(store)?;
    let sql = format!(
        "SELECT last_update FROM {} WHERE ident = 1",
        qualified(schema, "django_celery_beat_periodictasks")?
    );
    let t: Option<Ts> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_optional(pg.pool())
        .await
        .map_err(|e| explain(schema, e))?;
    Ok(t.map(|t| t.0))
}

/// One sent fire of a django-celery-beat row.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub link: Link,
    /// When SQS accepted it: the admin's "last run".
    pub at: DateTime<Utc>,
}

/// The runs of one row: the latest, and how many.
#[derive(Debug, Clone, PartialEq)]
struct RowRuns {
    last: DateTime<Utc>,
    runs: i64,
    one_off: bool,
    /// The row's `date_changed` when the entry of the latest run was read.
    changed: Option<DateTime<Utc>>,
}

/// Sent fires to write back, one line per row: its latest run and how many
/// there were. A write-back that keeps failing (a dropped schema, say)
/// holds one line per row however many fires pass, and each retry writes
/// one row each.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Runs {
    rows: BTreeMap<(String, i64), RowRuns>,
}

impl Runs {
    /// Counts one run.
    pub fn add(&mut self, run: Run) {
        let Run { link, at } = run;
        let row = self.rows.entry((link.schema, link.id)).or_insert(RowRuns {
            last: at,
            runs: 0,
            one_off: false,
            changed: link.changed,
        });
        if at >= row.last {
            row.last = at;
            row.changed = link.changed;
        }
        row.runs = row.runs.saturating_add(1);
        row.one_off |= link.one_off;
    }

    /// Adds `other`'s runs to these.
    pub fn merge(&mut self, other: Runs) {
        for (key, r) in other.rows {
            match self.rows.entry(key) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(r);
                }
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    let row = o.get_mut();
                    if r.last >= row.last {
                        row.last = r.last;
                        row.changed = r.changed;
                    }
                    row.runs = row.runs.saturating_add(r.runs);
                    row.one_off |= r.one_off;
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// How many rows have runs to write.
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Row `id` of `schema`: its latest run and how many runs.
    pub fn of(&self, schema: &str, id: i64) -> Option<(DateTime<Utc>, i64)> {
        self.rows
            .get(&(schema.to_string(), id))
            .map(|r| (r.last, r.runs))
    }
}

/// Writes sent fires back to their rows: see [`write_runs`].
pub async fn record_runs(store: &Store, runs: &[Run]) -> Result<(), StoreError> {
    let mut by_row = Runs::default();
    for r in runs {
        by_row.add(r.clone());
    }
    write_runs(store, &by_row).await
}

/// Writes sent fires back to their rows in one UPDATE per schema:
/// `last_run_at` becomes the latest run (never moved back by a late
/// retry), `total_run_count` grows by the runs (capped at the column's
/// maximum), and a one-off row is disabled with its count reset to 0, as
/// django-celery-beat does, so that enabling it again in the admin runs it
/// once more. Rows deleted meanwhile are skipped.
///
/// A one-off row someone saved after the fire (an admin enabling it again
/// for one more run, while this write-back was failing and retried) is
/// left as they saved it: disabled, or its count grown past 0, it would
/// not run again. It counts as unchanged when its `date_changed` is still
/// what the entry was read with, or is not after the run.
pub async fn write_runs(store: &Store, runs: &Runs) -> Result<(), StoreError> {
    if runs.is_empty() {
        return Ok(());
    }
    let pg = postgres(store)?;
    let mut by_schema: BTreeMap<&str, Vec<(i64, &RowRuns)>> = BTreeMap::new();
    for ((schema, id), r) in &runs.rows {
        by_schema.entry(schema).or_default().push((*id, r));
    }
    for (schema, rows) in by_schema {
        // One line per row: UPDATE ... FROM applies one source row per target.
        let unchanged = "(t.date_changed IS NOT DISTINCT FROM r.changed OR t.date_changed <= r.at)";
        let sql = format!(
            "UPDATE {} AS t
                SET last_run_at = GREATEST(t.last_run_at, r.at),
                    total_run_count = CASE WHEN NOT r.done THEN LEAST(t.total_run_count::bigint + r.n, 2147483647)
                                           WHEN {unchanged} THEN 0
                                           ELSE t.total_run_count END,
                    enabled = CASE WHEN r.done AND {unchanged} THEN false ELSE t.enabled END
               FROM unnest($1::bigint[], $2::timestamptz[], $3::bigint[], $4::boolean[], $5::timestamptz[])
                    AS r(id, at, n, done, changed)
              WHERE t.id = r.id",
            qualified(schema, TABLE)?
        );
        let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
        let ats: Vec<DateTime<Utc>> = rows.iter().map(|(_, r)| r.last).collect();
        let ns: Vec<i64> = rows.iter().map(|(_, r)| r.runs).collect();
        let done: Vec<bool> = rows.iter().map(|(_, r)| r.one_off).collect();
        let changed: Vec<Option<DateTime<Utc>>> = rows.iter().map(|(_, r)| r.changed).collect();
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ids)
            .bind(ats)
            .bind(ns)
            .bind(done)
            .bind(changed)
            .execute(pg.pool())
            .await
            .map_err(|e| explain(schema, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: i64, at: &str) -> Run {
        Run {
            link: Link {
                schema: "public".into(),
                id,
                one_off: false,
                changed: None,
            },
            at: DateTime::parse_from_rfc3339(at).unwrap().to_utc(),
        }
    }

    #[test]
    fn runs_not_written_back_hold_one_line_per_row_however_many_fires_pass() {
        let mut runs = Runs::default();
        let mut later = Runs::default();
        for s in 0..10_000 {
            let at = format!("2026-11-21T10:{:02}:{:02}Z", s / 60 % 60, s % 60);
            runs.add(run(7, &at));
            later.add(run(8, &at));
        }
        runs.merge(later);
        runs.add(run(7, "2026-11-21T09:00:00Z"));
        assert_eq!(runs.rows(), 2);
        let latest = DateTime::parse_from_rfc3339("2026-11-21T10:59:59Z")
            .unwrap()
            .to_utc();
        assert_eq!(runs.of("public", 7), Some((latest, 10_001)));
        assert_eq!(runs.of("public", 8), Some((latest, 10_000)));
    }
}
