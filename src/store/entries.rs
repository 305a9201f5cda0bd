//! Periodic entries kept in the database, beside the TOML files.
//!
//! A row holds the same fields as a TOML entry and becomes the same
//! `RawEntry`, so one validation judges both. A name defined in both places
//! is an error that names both. Changes (from `sqsbeat entries ...` or
//! plain SQL) wake the running process: LISTEN/NOTIFY on PostgreSQL, a
//! version counter checked every second on SQLite.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sqlx::Row;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::entry::file::{Diagnostic, Loaded};
use crate::entry::{self, Context, Entry, Origin, RawCrontab, RawEntry, RawInstant};
use crate::store::{Store, StoreError};

/// Where database entries say they come from, in diagnostics.
pub const SOURCE: &str = "database entries table";

/// One row of the entries table, as stored.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct EntryRow {
    pub name: String,
    pub task: String,
    pub cron: Option<String>,
    pub crontab: Option<Value>,
    pub every: Option<String>,
    pub timezone: Option<String>,
    pub args: Value,
    pub kwargs: Value,
    pub queue: Option<String>,
    pub priority: Option<i64>,
    pub headers: Value,
    pub expires: Option<String>,
    pub enabled: bool,
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
    pub catch_up: Option<String>,
    pub grace: Option<String>,
    pub jitter: Option<String>,
    pub anchor: Option<DateTime<Utc>>,
    pub group_id: Option<String>,
}

impl EntryRow {
    /// The TOML-shaped entry this row describes. A crontab that is not a
    /// table of the known fields is reported by the caller.
    pub fn to_raw(&self) -> Result<RawEntry, String> {
        let crontab = match &self.crontab {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value::<RawCrontab>(v.clone())
                    .map_err(|e| format!("crontab must be an object with minute, hour, day_of_week, day_of_month, month_of_year: {e}"))?,
            ),
        };
        let instant = |t: &Option<DateTime<Utc>>| {
            t.map(|t| RawInstant::Text(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)))
        };
        Ok(RawEntry {
            task: Some(self.task.clone()),
            cron: self.cron.clone(),
            crontab,
            every: self.every.clone(),
            timezone: self.timezone.clone(),
            args: Some(self.args.clone()),
            kwargs: Some(self.kwargs.clone()),
            queue: self.queue.clone(),
            priority: self.priority,
            headers: Some(self.headers.clone()),
            expires: self.expires.clone(),
            enabled: Some(self.enabled),
            start_at: instant(&self.start_at),
            end_at: instant(&self.end_at),
            catch_up: self.catch_up.clone(),
            grace: self.grace.clone(),
            jitter: self.jitter.clone(),
            anchor: instant(&self.anchor),
            group_id: self.group_id.clone(),
        })
    }
}

const COLUMNS: &str = "name, task, cron, crontab, every, timezone, args, kwargs, queue, priority, headers, expires, enabled, start_at, end_at, catch_up, grace, jitter, anchor, group_id";

fn json_text(s: Option<String>) -> Result<Value, StoreError> {
    match s {
        None => Ok(Value::Null),
        Some(t) => serde_json::from_str(&t).map_err(|e| {
            StoreError::Db(sqlx::Error::Decode(
                format!("invalid JSON {t:?}: {e}").into(),
            ))
        }),
    }
}

fn instant_text(s: Option<String>) -> Result<Option<DateTime<Utc>>, StoreError> {
    s.map(|t| {
        DateTime::parse_from_rfc3339(&t)
            .map(|d| d.to_utc())
            .map_err(|e| {
                StoreError::Db(sqlx::Error::Decode(
                    format!("invalid instant {t:?}: {e}").into(),
                ))
            })
    })
    .transpose()
}

/// Every row of the entries table, by name.
pub async fn list(store: &Store) -> Result<Vec<EntryRow>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM entries ORDER BY name");
    match store {
        Store::Postgres(s) => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(s.pool())
                .await?;
            rows.into_iter()
                .map(|r| {
                    Ok(EntryRow {
                        name: r.try_get("name")?,
                        task: r.try_get("task")?,
                        cron: r.try_get("cron")?,
                        crontab: r.try_get("crontab")?,
                        every: r.try_get("every")?,
                        timezone: r.try_get("timezone")?,
                        args: r.try_get("args")?,
                        kwargs: r.try_get("kwargs")?,
                        queue: r.try_get("queue")?,
                        priority: r.try_get::<Option<i32>, _>("priority")?.map(i64::from),
                        headers: r.try_get("headers")?,
                        expires: r.try_get("expires")?,
                        enabled: r.try_get("enabled")?,
                        start_at: r.try_get("start_at")?,
                        end_at: r.try_get("end_at")?,
                        catch_up: r.try_get("catch_up")?,
                        grace: r.try_get("grace")?,
                        jitter: r.try_get("jitter")?,
                        anchor: r.try_get("anchor")?,
                        group_id: r.try_get("group_id")?,
                    })
                })
                .collect()
        }
        Store::Sqlite(s) => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(s.pool())
                .await?;
            rows.into_iter()
                .map(|r| {
                    Ok(EntryRow {
                        name: r.try_get("name")?,
                        task: r.try_get("task")?,
                        cron: r.try_get("cron")?,
                        crontab: match json_text(r.try_get("crontab")?)? {
                            Value::Null => None,
                            v => Some(v),
                        },
                        every: r.try_get("every")?,
                        timezone: r.try_get("timezone")?,
                        args: json_text(r.try_get("args")?)?,
                        kwargs: json_text(r.try_get("kwargs")?)?,
                        queue: r.try_get("queue")?,
                        priority: r.try_get("priority")?,
                        headers: json_text(r.try_get("headers")?)?,
                        expires: r.try_get("expires")?,
                        enabled: r.try_get("enabled")?,
                        start_at: instant_text(r.try_get("start_at")?)?,
                        end_at: instant_text(r.try_get("end_at")?)?,
                        catch_up: r.try_get("catch_up")?,
                        grace: r.try_get("grace")?,
                        jitter: r.try_get("jitter")?,
                        anchor: instant_text(r.try_get("anchor")?)?,
                        group_id: r.try_get("group_id")?,
                    })
                })
                .collect()
        }
    }
}

/// Inserts a row (or replaces one with `replace`). False if the name
/// exists and `replace` is not set.
pub async fn insert(store: &Store, row: &EntryRow, replace: bool) -> Result<bool, StoreError> {
    let conflict = if replace {
        "ON CONFLICT (name) DO UPDATE SET task = excluded.task, cron = excluded.cron, crontab = excluded.crontab, every = excluded.every,
           timezone = excluded.timezone, args = excluded.args, kwargs = excluded.kwargs, queue = excluded.queue, priority = excluded.priority,
           headers = excluded.headers, expires = excluded.expires, enabled = excluded.enabled, start_at = excluded.start_at, end_at = excluded.end_at,
           catch_up = excluded.catch_up, grace = excluded.grace, jitter = excluded.jitter, anchor = excluded.anchor, group_id = excluded.group_id,
           updated_at = excluded.updated_at"
    } else {
        "ON CONFLICT (name) DO NOTHING"
    };
    let done = match store {
        Store::Postgres(s) => {
            let sql = format!(
                "INSERT INTO entries ({COLUMNS}, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, now()) {conflict}"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&row.name)
                .bind(&row.task)
                .bind(&row.cron)
                .bind(&row.crontab)
                .bind(&row.every)
                .bind(&row.timezone)
                .bind(&row.args)
                .bind(&row.kwargs)
                .bind(&row.queue)
                .bind(row.priority.map(|p| p as i32))
                .bind(&row.headers)
                .bind(&row.expires)
                .bind(row.enabled)
                .bind(row.start_at)
                .bind(row.end_at)
                .bind(&row.catch_up)
                .bind(&row.grace)
                .bind(&row.jitter)
                .bind(row.anchor)
                .bind(&row.group_id)
                .execute(s.pool())
                .await?
                .rows_affected()
        }
        Store::Sqlite(s) => {
            let sql = format!(
                "INSERT INTO entries ({COLUMNS}, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21) {conflict}"
            );
            let ts = |t: Option<DateTime<Utc>>| {
                t.map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true))
            };
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&row.name)
                .bind(&row.task)
                .bind(&row.cron)
                .bind(row.crontab.as_ref().map(Value::to_string))
                .bind(&row.every)
                .bind(&row.timezone)
                .bind(row.args.to_string())
                .bind(row.kwargs.to_string())
                .bind(&row.queue)
                .bind(row.priority)
                .bind(row.headers.to_string())
                .bind(&row.expires)
                .bind(row.enabled)
                .bind(ts(row.start_at))
                .bind(ts(row.end_at))
                .bind(&row.catch_up)
                .bind(&row.grace)
                .bind(&row.jitter)
                .bind(ts(row.anchor))
                .bind(&row.group_id)
                .bind(Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true))
                .execute(s.pool())
                .await?
                .rows_affected()
        }
    };
    Ok(done > 0)
}

/// Enables or disables an entry; false if there is no such entry.
pub async fn set_enabled(store: &Store, name: &str, enabled: bool) -> Result<bool, StoreError> {
    let n = match store {
        Store::Postgres(s) => {
            sqlx::query("UPDATE entries SET enabled = $2, updated_at = now() WHERE name = $1")
                .bind(name)
                .bind(enabled)
                .execute(s.pool())
                .await?
                .rows_affected()
        }
        Store::Sqlite(s) => {
            sqlx::query("UPDATE entries SET enabled = ?2, updated_at = ?3 WHERE name = ?1")
                .bind(name)
                .bind(enabled)
                .bind(Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true))
                .execute(s.pool())
                .await?
                .rows_affected()
        }
    };
    Ok(n > 0)
}

/// Deletes an entry; false if there is no such entry. Its ledger history stays.
pub async fn remove(store: &Store, name: &str) -> Result<bool, StoreError> {
    let n = match store {
        Store::Postgres(s) => sqlx::query("DELETE FROM entries WHERE name = $1")
            .bind(name)
            .execute(s.pool())
            .await?
            .rows_affected(),
        Store::Sqlite(s) => sqlx::query("DELETE FROM entries WHERE name = ?1")
            .bind(name)
            .execute(s.pool())
            .await?
            .rows_affected(),
    };
    Ok(n > 0)
}

/// Validates rows as entries, with diagnostics naming the table.
pub fn validate(rows: &[EntryRow], ctx: &Context) -> Loaded {
    let mut out = Loaded::default();
    for row in rows {
        let origin = Origin {
            file: SOURCE.to_string(),
            line: 0,
        };
        out.names.push((row.name.clone(), origin.clone()));
        let diag = |message: String, warning: bool| Diagnostic {
            file: SOURCE.to_string(),
            line: 0,
            entry: Some(row.name.clone()),
            message,
            warning,
        };
        let raw = match row.to_raw() {
            Ok(r) => r,
            Err(m) => {
                out.diagnostics.push(diag(m, false));
                continue;
            }
        };
        let (entry, problems) = entry::validate(&row.name, raw, origin, ctx);
        out.diagnostics
            .extend(problems.into_iter().map(|p| diag(p.message, p.warning)));
        out.entries.extend(entry);
    }
    out
}

/// Sets aside the rows that do not validate, so that they cannot stop the
/// beat: applications and people write this table, and one bad row must
/// not take every schedule down (schedule files, checked before a deploy,
/// stay strict). A row set aside keeps the definition it last had in
/// `current`, if any; the errors come back for the caller to report.
pub fn set_aside_invalid(db: Loaded, current: &[Entry]) -> (Loaded, Vec<Diagnostic>) {
    let (errors, warnings): (Vec<Diagnostic>, Vec<Diagnostic>) =
        db.diagnostics.into_iter().partition(|d| !d.warning);
    let bad: std::collections::HashSet<&str> =
        errors.iter().filter_map(|d| d.entry.as_deref()).collect();
    let entries = db
        .entries
        .into_iter()
        .filter(|e| !bad.contains(e.name.as_str()))
        .chain(
            current
                .iter()
                .filter(|e| e.origin.file == SOURCE && bad.contains(e.name.as_str()))
                .cloned(),
        )
        .collect();
    let kept = Loaded {
        entries,
        diagnostics: warnings,
        names: db.names,
    };
    (kept, errors)
}

/// Files and database together: a name in both is an error naming both
/// places, and neither definition is loaded.
pub fn merge(files: Loaded, db: Loaded) -> Loaded {
    let mut out = Loaded::default();
    let in_files: std::collections::HashMap<&str, &Origin> =
        files.names.iter().map(|(n, o)| (n.as_str(), o)).collect();
    let clashes: std::collections::HashSet<String> = db
        .names
        .iter()
        .filter(|(n, _)| in_files.contains_key(n.as_str()))
        .map(|(n, _)| n.clone())
        .collect();
    for name in &clashes {
        let o = in_files[name.as_str()];
        out.diagnostics.push(Diagnostic {
            file: o.file.clone(),
            line: o.line,
            entry: Some(name.clone()),
            message: format!("also defined in the {SOURCE}; keep one (remove it with `sqsbeat entries remove {name}` or from the file)"),
            warning: false,
        });
    }
    out.diagnostics.extend(files.diagnostics);
    out.diagnostics.extend(db.diagnostics);
    out.entries = files
        .entries
        .into_iter()
        .chain(db.entries)
        .filter(|e| !clashes.contains(&e.name))
        .collect();
    out.names = files.names.into_iter().chain(db.names).collect();
    out
}

/// Wakes `changed` whenever the entries table changes, until shutdown.
pub async fn watch(store: Store, changed: std::sync::Arc<Notify>, shutdown: CancellationToken) {
    match store {
        Store::Postgres(pg) => loop {
            let schema = pg.schema().to_string();
            let listener = async {
                let mut l = sqlx::postgres::PgListener::connect_with(pg.pool()).await?;
                l.listen("sqsbeat_entries").await?;
                // Anything may have changed while no one listened.
                changed.notify_one();
                loop {
                    let n = l.recv().await?;
                    if n.payload() == schema {
                        changed.notify_one();
                    }
                }
                #[allow(unreachable_code)]
                Ok::<(), sqlx::Error>(())
            };
            tokio::select! {
                r = listener => if let Err(e) = r { warn!(error = %e, "entries listener failed; reconnecting") },
                _ = shutdown.cancelled() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.cancelled() => return,
            }
        },
        Store::Sqlite(lite) => {
            let mut seen: Option<i64> = None;
            loop {
                match sqlx::query_scalar::<_, i64>(
                    "SELECT version FROM entries_version WHERE id = 1",
                )
                .fetch_one(lite.pool())
                .await
                {
                    Ok(v) if seen != Some(v) => {
                        if seen.is_some() {
                            changed.notify_one();
                        }
                        seen = Some(v);
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "cannot check the entries table for changes"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, every: &str) -> EntryRow {
        EntryRow {
            name: name.into(),
            task: "app.t".into(),
            cron: None,
            crontab: None,
            every: Some(every.into()),
            timezone: None,
            args: Value::Array(vec![]),
            kwargs: Value::Object(Default::default()),
            queue: None,
            priority: None,
            headers: Value::Object(Default::default()),
            expires: None,
            enabled: true,
            start_at: None,
            end_at: None,
            catch_up: None,
            grace: None,
            jitter: None,
            anchor: None,
            group_id: None,
        }
    }

    #[test]
    fn a_bad_row_is_set_aside_alone_and_keeps_its_last_good_definition() {
        let ctx = Context::default();
        let before = validate(&[row("edited", "5m"), row("steady", "1m")], &ctx);
        assert!(!before.has_errors());
        let now = validate(
            &[
                row("edited", "-5m"),
                row("steady", "1m"),
                row("new_bad", "soon"),
            ],
            &ctx,
        );
        assert!(now.has_errors());
        let (kept, errors) = set_aside_invalid(now, &before.entries);
        assert!(!kept.has_errors());
        let names: Vec<&str> = kept.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["steady", "edited"]);
        let edited = kept.entries.iter().find(|e| e.name == "edited").unwrap();
        assert_eq!(
            format!("{edited:?}"),
            format!("{:?}", before.entries[0]),
            "the last good definition"
        );
        let named: Vec<&str> = errors.iter().filter_map(|d| d.entry.as_deref()).collect();
        assert_eq!(named, ["edited", "new_bad"]);
        // A new process has no last good definition: the row is just out.
        let (fresh, _) = set_aside_invalid(validate(&[row("edited", "-5m")], &ctx), &[]);
        assert!(fresh.entries.is_empty());
    }
}
