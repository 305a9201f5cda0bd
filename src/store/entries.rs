//! The entries table: periodic entries kept in the database beside the
//! TOML files, as rows anyone can write (`sqsbeat entries ...`, plain SQL,
//! an application). Turning a row into an entry is [`crate::entry::merge`]'s.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::sqlite::codec::NOW;
use super::{Store, StoreError, Ts, decode_row};

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

/// An entries row as both backends decode it (see [`super::sqlite::codec`]).
#[derive(sqlx::FromRow)]
struct Record {
    name: String,
    task: String,
    cron: Option<String>,
    crontab: Option<Value>,
    every: Option<String>,
    timezone: Option<String>,
    args: Value,
    kwargs: Value,
    queue: Option<String>,
    priority: Option<i32>,
    headers: Value,
    expires: Option<String>,
    enabled: bool,
    start_at: Option<Ts>,
    end_at: Option<Ts>,
    catch_up: Option<String>,
    grace: Option<String>,
    jitter: Option<String>,
    anchor: Option<Ts>,
    group_id: Option<String>,
}

impl From<Record> for EntryRow {
    fn from(r: Record) -> Self {
        EntryRow {
            name: r.name,
            task: r.task,
            cron: r.cron,
            // JSON null is no crontab, like SQL NULL.
            crontab: r.crontab.filter(|v| !v.is_null()),
            every: r.every,
            timezone: r.timezone,
            args: r.args,
            kwargs: r.kwargs,
            queue: r.queue,
            priority: r.priority.map(i64::from),
            headers: r.headers,
            expires: r.expires,
            enabled: r.enabled,
            start_at: r.start_at.map(|t| t.0),
            end_at: r.end_at.map(|t| t.0),
            catch_up: r.catch_up,
            grace: r.grace,
            jitter: r.jitter,
            anchor: r.anchor.map(|t| t.0),
            group_id: r.group_id,
        }
    }
}

/// Every row of the entries table, by name, each on its own: a row that
/// cannot be read (an instant out of range, text that is not JSON) is a
/// [`StoreError::Decode`] naming it, in its place, and the others load.
pub async fn list(store: &Store) -> Result<Vec<Result<EntryRow, StoreError>>, StoreError> {
    let sql = format!("SELECT name AS row_key, {COLUMNS} FROM entries ORDER BY name");
    Ok(match store {
        Store::Postgres(s) => sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(s.pool())
            .await?
            .iter()
            .map(|r| decode_row::<_, Record>("entries", r).map(EntryRow::from))
            .collect(),
        Store::Sqlite(s) => sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(s.pool())
            .await?
            .iter()
            .map(|r| decode_row::<_, Record>("entries", r).map(EntryRow::from))
            .collect(),
    })
}

/// The change counter of the entries table, which SQLite's triggers bump
/// on every change (`None` on PostgreSQL, which notifies instead: see
/// [`super::listen`]).
pub async fn version(store: &Store) -> Result<Option<i64>, StoreError> {
    match store {
        Store::Postgres(_) => Ok(None),
        Store::Sqlite(s) => Ok(Some(
            sqlx::query_scalar("SELECT version FROM entries_version WHERE id = 1")
                .fetch_one(s.pool())
                .await?,
        )),
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
                "INSERT INTO entries ({COLUMNS}, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, {NOW}) {conflict}"
            );
            let ts = |t: Option<DateTime<Utc>>| t.map(Ts);
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
                .bind(row.priority)
                .bind(&row.headers)
                .bind(&row.expires)
                .bind(row.enabled)
                .bind(ts(row.start_at))
                .bind(ts(row.end_at))
                .bind(&row.catch_up)
                .bind(&row.grace)
                .bind(&row.jitter)
                .bind(ts(row.anchor))
                .bind(&row.group_id)
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
        Store::Sqlite(s) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE entries SET enabled = ?2, updated_at = {NOW} WHERE name = ?1"
        )))
        .bind(name)
        .bind(enabled)
        .execute(s.pool())
        .await?
        .rows_affected(),
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
