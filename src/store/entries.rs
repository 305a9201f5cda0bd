//! The entries table: periodic entries kept in the database beside the
//! TOML files, as rows anyone can write (`sqsbeat entries ...`, plain SQL,
//! an application). Turning a row into an entry is [`crate::entry::merge`]'s.
//! The CLI's changes ([`save`], [`set_enabled`], [`remove`]) are written
//! with their history row (`store::history`) in one transaction.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{PgConnection, SqliteConnection};

use super::history::{self, Action, Audit};
use super::sqlite::codec::NOW;
use super::{Store, StoreError, Ts, decode_row};
use crate::entry::history::{field_change, row_change};

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
    pub sentry_monitor: Option<bool>,
}

const COLUMNS: &str = "name, task, cron, crontab, every, timezone, args, kwargs, queue, priority, headers, expires, enabled, start_at, end_at, catch_up, grace, jitter, anchor, group_id, sentry_monitor";

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
    sentry_monitor: Option<bool>,
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
            sentry_monitor: r.sentry_monitor,
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

/// Up to `limit` rows of the entries table by name, after the name
/// `after` (from the first row when `None`), read like [`list`]; and the
/// name of the last row read, to continue from (`None` if it could not be
/// read as text). Loading a large table a page at a time keeps one page of
/// rows in memory instead of all of them (100 000 rows read at once took
/// 500 MiB of resident memory that the process kept).
pub async fn page(
    store: &Store,
    after: Option<&str>,
    limit: i64,
) -> Result<(Vec<Result<EntryRow, StoreError>>, Option<String>), StoreError> {
    let from = if after.is_some() {
        "WHERE name > $1"
    } else {
        "WHERE $1::text IS NULL"
    };
    let pg =
        format!("SELECT name AS row_key, {COLUMNS} FROM entries {from} ORDER BY name LIMIT $2");
    let lite = format!(
        "SELECT name AS row_key, {COLUMNS} FROM entries {} ORDER BY name LIMIT ?2",
        if after.is_some() {
            "WHERE name > ?1"
        } else {
            "WHERE ?1 IS NULL"
        }
    );
    fn last_key<R: sqlx::Row>(rows: &[R]) -> Option<String>
    where
        for<'r> &'r str: sqlx::ColumnIndex<R>,
        String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        rows.last()
            .and_then(|r| r.try_get::<String, _>("row_key").ok())
    }
    Ok(match store {
        Store::Postgres(s) => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(pg))
                .bind(after)
                .bind(limit)
                .fetch_all(s.pool())
                .await?;
            let decoded = rows
                .iter()
                .map(|r| decode_row::<_, Record>("entries", r).map(EntryRow::from))
                .collect();
            (decoded, last_key(&rows))
        }
        Store::Sqlite(s) => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(lite))
                .bind(after)
                .bind(limit)
                .fetch_all(s.pool())
                .await?;
            let decoded = rows
                .iter()
                .map(|r| decode_row::<_, Record>("entries", r).map(EntryRow::from))
                .collect();
            (decoded, last_key(&rows))
        }
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
/// exists and `replace` is not set. Records no history: the CLI uses
/// [`save`].
pub async fn insert(store: &Store, row: &EntryRow, replace: bool) -> Result<bool, StoreError> {
    let n = match store {
        Store::Postgres(s) => insert_pg(&mut *s.pool().acquire().await?, row, replace).await?,
        Store::Sqlite(s) => insert_lite(&mut *s.pool().acquire().await?, row, replace).await?,
    };
    Ok(n > 0)
}

fn conflict(replace: bool) -> &'static str {
    if replace {
        "ON CONFLICT (name) DO UPDATE SET task = excluded.task, cron = excluded.cron, crontab = excluded.crontab, every = excluded.every,
           timezone = excluded.timezone, args = excluded.args, kwargs = excluded.kwargs, queue = excluded.queue, priority = excluded.priority,
           headers = excluded.headers, expires = excluded.expires, enabled = excluded.enabled, start_at = excluded.start_at, end_at = excluded.end_at,
           catch_up = excluded.catch_up, grace = excluded.grace, jitter = excluded.jitter, anchor = excluded.anchor, group_id = excluded.group_id,
           sentry_monitor = excluded.sentry_monitor, updated_at = excluded.updated_at"
    } else {
        "ON CONFLICT (name) DO NOTHING"
    }
}

async fn insert_pg(
    conn: &mut PgConnection,
    row: &EntryRow,
    replace: bool,
) -> Result<u64, StoreError> {
    let sql = format!(
        "INSERT INTO entries ({COLUMNS}, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, now()) {}",
        conflict(replace)
    );
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
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
        .bind(row.sentry_monitor)
        .execute(conn)
        .await?
        .rows_affected())
}

async fn insert_lite(
    conn: &mut SqliteConnection,
    row: &EntryRow,
    replace: bool,
) -> Result<u64, StoreError> {
    let sql = format!(
        "INSERT INTO entries ({COLUMNS}, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, {NOW}) {}",
        conflict(replace)
    );
    let ts = |t: Option<DateTime<Utc>>| t.map(Ts);
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
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
        .bind(row.sentry_monitor)
        .execute(conn)
        .await?
        .rows_affected())
}

/// The row named `name` as it stands, read inside the caller's
/// transaction; `Some(Err)` when it cannot be read.
async fn current_pg(
    conn: &mut PgConnection,
    name: &str,
) -> Result<Option<Result<EntryRow, StoreError>>, StoreError> {
    let sql = format!("SELECT name AS row_key, {COLUMNS} FROM entries WHERE name = $1 FOR UPDATE");
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(name)
        .fetch_optional(conn)
        .await?
        .map(|r| decode_row::<_, Record>("entries", &r).map(EntryRow::from)))
}

async fn current_lite(
    conn: &mut SqliteConnection,
    name: &str,
) -> Result<Option<Result<EntryRow, StoreError>>, StoreError> {
    let sql = format!("SELECT name AS row_key, {COLUMNS} FROM entries WHERE name = ?1");
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(name)
        .fetch_optional(conn)
        .await?
        .map(|r| decode_row::<_, Record>("entries", &r).map(EntryRow::from)))
}

/// What [`save`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Saved {
    Added,
    /// Replaced the row (what changed is in the history).
    Replaced,
    /// The name exists and `replace` was not set: nothing written.
    Exists,
}

/// The history of a save: `add` with every field, or `replace` with the
/// fields that changed.
fn save_event(before: Option<&Option<EntryRow>>, row: &EntryRow) -> (Action, serde_json::Value) {
    match before {
        None => (Action::Add, row_change(None, Some(row))),
        Some(Some(b)) => (Action::Replace, row_change(Some(b), Some(row))),
        Some(None) => (
            Action::Replace,
            json!({"before": "the old row could not be read", "after": row_change(None, Some(row))["after"]}),
        ),
    }
}

/// [`insert`], and its history (`add`, or `replace` with the fields that
/// changed), in one transaction.
pub async fn save(
    store: &Store,
    row: &EntryRow,
    replace: bool,
    audit: &Audit,
) -> Result<Saved, StoreError> {
    match store {
        Store::Postgres(s) => {
            let mut tx = s.pool().begin().await?;
            let before = current_pg(&mut tx, &row.name).await?.map(Result::ok);
            if before.is_some() && !replace {
                return Ok(Saved::Exists);
            }
            insert_pg(&mut tx, row, replace).await?;
            let (action, detail) = save_event(before.as_ref(), row);
            history::insert_pg(&mut tx, &row.name, action, audit, &detail).await?;
            tx.commit().await?;
            Ok(before.map_or(Saved::Added, |_| Saved::Replaced))
        }
        Store::Sqlite(s) => {
            let mut tx = s.pool().begin_with("BEGIN IMMEDIATE").await?;
            let before = current_lite(&mut tx, &row.name).await?.map(Result::ok);
            if before.is_some() && !replace {
                return Ok(Saved::Exists);
            }
            insert_lite(&mut tx, row, replace).await?;
            let (action, detail) = save_event(before.as_ref(), row);
            history::insert_lite(&mut tx, &row.name, action, audit, &detail).await?;
            tx.commit().await?;
            Ok(before.map_or(Saved::Added, |_| Saved::Replaced))
        }
    }
}

/// Enables or disables an entry, and records it; false if there is no
/// such entry.
pub async fn set_enabled(
    store: &Store,
    name: &str,
    enabled: bool,
    audit: &Audit,
) -> Result<bool, StoreError> {
    let action = if enabled {
        Action::Enable
    } else {
        Action::Disable
    };
    match store {
        Store::Postgres(s) => {
            let mut tx = s.pool().begin().await?;
            let was: Option<bool> =
                sqlx::query_scalar("SELECT enabled FROM entries WHERE name = $1 FOR UPDATE")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(was) = was else { return Ok(false) };
            sqlx::query("UPDATE entries SET enabled = $2, updated_at = now() WHERE name = $1")
                .bind(name)
                .bind(enabled)
                .execute(&mut *tx)
                .await?;
            let detail = field_change("enabled", was.into(), enabled.into());
            history::insert_pg(&mut tx, name, action, audit, &detail).await?;
            tx.commit().await?;
        }
        Store::Sqlite(s) => {
            let mut tx = s.pool().begin_with("BEGIN IMMEDIATE").await?;
            let was: Option<bool> =
                sqlx::query_scalar("SELECT enabled FROM entries WHERE name = ?1")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(was) = was else { return Ok(false) };
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE entries SET enabled = ?2, updated_at = {NOW} WHERE name = ?1"
            )))
            .bind(name)
            .bind(enabled)
            .execute(&mut *tx)
            .await?;
            let detail = field_change("enabled", was.into(), enabled.into());
            history::insert_lite(&mut tx, name, action, audit, &detail).await?;
            tx.commit().await?;
        }
    }
    Ok(true)
}

/// Deletes an entry, and records it with the row it removed; false if
/// there is no such entry. Its ledger history stays.
pub async fn remove(store: &Store, name: &str, audit: &Audit) -> Result<bool, StoreError> {
    let detail = |before: Result<EntryRow, StoreError>| match before {
        Ok(b) => row_change(Some(&b), None),
        Err(e) => json!({"before": format!("the row could not be read: {e}")}),
    };
    match store {
        Store::Postgres(s) => {
            let mut tx = s.pool().begin().await?;
            let Some(before) = current_pg(&mut tx, name).await? else {
                return Ok(false);
            };
            sqlx::query("DELETE FROM entries WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            history::insert_pg(&mut tx, name, Action::Remove, audit, &detail(before)).await?;
            tx.commit().await?;
        }
        Store::Sqlite(s) => {
            let mut tx = s.pool().begin_with("BEGIN IMMEDIATE").await?;
            let Some(before) = current_lite(&mut tx, name).await? else {
                return Ok(false);
            };
            sqlx::query("DELETE FROM entries WHERE name = ?1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            history::insert_lite(&mut tx, name, Action::Remove, audit, &detail(before)).await?;
            tx.commit().await?;
        }
    }
    Ok(true)
}
