//! The entries table: periodic entries kept in the database beside the
//! TOML files, as rows anyone can write (`sqsbeat entries ...`, plain SQL,
//! an application). Turning a row into an entry is [`crate::entry::merge`]'s.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sqlx::Row;

use crate::store::{Store, StoreError};

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
                .bind(crate::clock::system_now().to_rfc3339_opts(SecondsFormat::Micros, true))
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
                .bind(crate::clock::system_now().to_rfc3339_opts(SecondsFormat::Micros, true))
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
