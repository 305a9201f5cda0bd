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

/// Columns by position (`row_key` first, then [`COLUMNS`]): by name, each
/// of 21 columns of each row was looked up in a map (about 3.7 µs a row on
/// PostgreSQL with the decoding). An error reads the row again by name
/// ([`read_row`]), so it names its column.
fn record_at<R>(r: &R) -> Result<Record, sqlx::Error>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Value: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Ts: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Record {
        name: r.try_get(1)?,
        task: r.try_get(2)?,
        cron: r.try_get(3)?,
        crontab: r.try_get(4)?,
        every: r.try_get(5)?,
        timezone: r.try_get(6)?,
        args: r.try_get(7)?,
        kwargs: r.try_get(8)?,
        queue: r.try_get(9)?,
        priority: r.try_get(10)?,
        headers: r.try_get(11)?,
        expires: r.try_get(12)?,
        enabled: r.try_get(13)?,
        start_at: r.try_get(14)?,
        end_at: r.try_get(15)?,
        catch_up: r.try_get(16)?,
        grace: r.try_get(17)?,
        jitter: r.try_get(18)?,
        anchor: r.try_get(19)?,
        group_id: r.try_get(20)?,
        sentry_monitor: r.try_get(21)?,
    })
}

/// One row of a `SELECT name AS row_key, {COLUMNS}` as an [`EntryRow`].
fn read_row<R>(r: &R) -> Result<EntryRow, StoreError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    &'static str: sqlx::ColumnIndex<R>,
    for<'r> Record: sqlx::FromRow<'r, R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Value: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Ts: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    record_at(r)
        .or_else(|_| decode_row::<_, Record>("entries", r))
        .map(EntryRow::from)
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
            .map(read_row)
            .collect(),
        Store::Sqlite(s) => sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(s.pool())
            .await?
            .iter()
            .map(read_row)
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
    if let Some(rows) = plain_page(store, after, limit).await {
        let last = rows.last().map(|r| r.name.clone());
        return Ok((rows.into_iter().map(Ok).collect(), last));
    }
    Ok(match store {
        Store::Postgres(s) => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(pg))
                .bind(after)
                .bind(limit)
                .fetch_all(s.pool())
                .await?;
            let decoded = rows.iter().map(read_row).collect();
            (decoded, last_key(&rows))
        }
        Store::Sqlite(s) => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(lite))
                .bind(after)
                .bind(limit)
                .fetch_all(s.pool())
                .await?;
            let decoded = rows.iter().map(read_row).collect();
            (decoded, last_key(&rows))
        }
    })
}

/// One entries row as [`plain_page`]'s JSON holds it, column by position.
#[derive(serde::Deserialize)]
struct Plain(
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    String,
    Option<String>,
    Option<i64>,
    String,
    Option<String>,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

impl Plain {
    /// The row, or `None` if one of its instants or JSON texts does not
    /// read as one (read as the column decoders read them).
    fn into_row(self) -> Option<EntryRow> {
        let json = |t: &str| serde_json::from_str::<Value>(t).ok();
        let ts = |t: Option<String>| -> Option<Option<DateTime<Utc>>> {
            match t {
                None => Some(None),
                Some(t) => super::sqlite::codec::parse(&t).ok().map(Some),
            }
        };
        Some(EntryRow {
            name: self.0,
            task: self.1,
            cron: self.2,
            // JSON null is no crontab, like SQL NULL.
            crontab: match self.3 {
                None => None,
                Some(t) => Some(json(&t)?).filter(|v| !v.is_null()),
            },
            every: self.4,
            timezone: self.5,
            args: json(&self.6)?,
            kwargs: json(&self.7)?,
            queue: self.8,
            priority: self.9,
            headers: json(&self.10)?,
            expires: self.11,
            enabled: self.12 != 0,
            start_at: ts(self.13)?,
            end_at: ts(self.14)?,
            catch_up: self.15,
            grace: self.16,
            jitter: self.17,
            anchor: ts(self.18)?,
            group_id: self.19,
            sentry_monitor: self.20.map(|v| v != 0),
        })
    }
}

/// SQLite: a page of rows as one JSON text, each row an array of its
/// columns by position, with the number of rows and of rows every column
/// of which has the type [`Record`] reads. JSON columns come as JSON
/// strings of their text (`json_array` quotes text), parsed apart as the
/// column decoder parses them: embedded as they are, a text such as `"`
/// would read as part of the next column.
const PLAIN_LITE: &str = "SELECT count(*), coalesce(sum(ok), 0), '[' || coalesce(group_concat(r, ',' ORDER BY name), '') || ']' FROM (
  SELECT name,
    (typeof(name) = 'text' AND typeof(task) = 'text'
     AND typeof(crontab) IN ('text', 'null') AND typeof(args) = 'text' AND typeof(kwargs) = 'text'
     AND typeof(headers) = 'text'
     AND (priority IS NULL OR (typeof(priority) = 'integer' AND priority BETWEEN -2147483648 AND 2147483647))
     AND typeof(enabled) = 'integer' AND typeof(sentry_monitor) IN ('integer', 'null')
     AND typeof(cron) IN ('text', 'null') AND typeof(every) IN ('text', 'null') AND typeof(timezone) IN ('text', 'null')
     AND typeof(queue) IN ('text', 'null') AND typeof(expires) IN ('text', 'null') AND typeof(start_at) IN ('text', 'null')
     AND typeof(end_at) IN ('text', 'null') AND typeof(catch_up) IN ('text', 'null') AND typeof(grace) IN ('text', 'null')
     AND typeof(jitter) IN ('text', 'null') AND typeof(anchor) IN ('text', 'null') AND typeof(group_id) IN ('text', 'null')) AS ok,
    json_array(name, task, cron, crontab, every, timezone, args, kwargs, queue, priority, headers, expires, enabled,
      start_at, end_at, catch_up, grace, jitter, anchor, group_id, sentry_monitor) AS r
  FROM entries WHERE {from} ORDER BY name LIMIT ?2)";

/// SQLite: a page of rows read the cheap way, one value for the whole
/// page, columns by position: row by row, each row crossed from SQLite's
/// thread to the runtime and was decoded by column name (two thirds of a
/// second and 17 000 context switches at 100 000 rows). `None` when any
/// row of the page is not plainly readable, or the query fails: the caller
/// reads the page the general way, which names each bad row and column as
/// before. PostgreSQL reads the general way: the same page built as JSON
/// by the server took longer than the rows.
async fn plain_page(store: &Store, after: Option<&str>, limit: i64) -> Option<Vec<EntryRow>> {
    let Store::Sqlite(s) = store else {
        return None;
    };
    // Two texts, so that each can use the primary key's order.
    let from = if after.is_some() {
        "name > ?1"
    } else {
        "?1 IS NULL"
    };
    let (rows, ok, text): (i64, i64, String) =
        sqlx::query_as(sqlx::AssertSqlSafe(PLAIN_LITE.replace("{from}", from)))
            .bind(after)
            .bind(limit)
            .fetch_one(s.pool())
            .await
            .ok()?;
    if rows != ok {
        return None;
    }
    let plain: Vec<Plain> = serde_json::from_str(&text).ok()?;
    drop(text);
    let out: Option<Vec<EntryRow>> = plain.into_iter().map(Plain::into_row).collect();
    out.filter(|o| o.len() as i64 == rows)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row as the general, row-by-row read gives it: rows, or each
    /// bad row's table, column, key and reason.
    fn summary(rows: &[Result<EntryRow, StoreError>]) -> Vec<String> {
        rows.iter()
            .map(|r| match r {
                Ok(r) => format!("{r:?}"),
                Err(e) => format!("error {e:?}"),
            })
            .collect()
    }

    async fn store_with(rows: &str) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = super::super::sqlite::SqliteStore::open(&dir.path().join("s.db"))
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(rows.to_string()))
            .execute(s.pool())
            .await
            .unwrap();
        (dir, Store::Sqlite(s))
    }

    const FULL: &str = "INSERT INTO entries (name, task, cron, crontab, every, timezone, args, kwargs, queue, priority, headers, expires, enabled, start_at, end_at, catch_up, grace, jitter, anchor, group_id, sentry_monitor)
        VALUES ('full', 'app.t', NULL, '{\"minute\": \"*/5\", \"hour\": \"*\"}', NULL, 'Europe/Paris', '[1, 2.50, \"\\u00e9\\\"\", null]',
                '{\"b\": 1, \"a\": {\"x\": [true]}}', 'q', 7, '{\"h\": \"v\"}', '30s', 0, '2026-01-01T00:00:00Z', '2027-01-01T00:00:00.123456+02:00',
                'all', '1m', '2s', '2026-01-01T00:00:00.000000Z', 'g', 1);
        INSERT INTO entries (name, task, every) VALUES ('plain', 'app.t', '1m');
        INSERT INTO entries (name, task, every, crontab, sentry_monitor) VALUES ('nulls', 'app.t', '1m', 'null', 0);";

    /// Plainly readable rows are read the cheap way, one value for the
    /// page, and come out as the row-by-row read gives them.
    #[tokio::test]
    async fn the_cheap_page_read_gives_the_rows_the_general_read_gives() {
        let (_dir, store) = store_with(FULL).await;
        let plain = plain_page(&store, None, 100)
            .await
            .expect("read the cheap way");
        let general = list(&store).await.unwrap();
        assert_eq!(
            summary(&plain.into_iter().map(Ok).collect::<Vec<_>>()),
            summary(&general)
        );
        let after = plain_page(&store, Some("full"), 100).await.unwrap();
        let names: Vec<&str> = after.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["nulls", "plain"]);
        let (paged, last) = page(&store, None, 2).await.unwrap();
        assert_eq!(summary(&paged), summary(&general[..2]));
        assert_eq!(last.as_deref(), Some("nulls"));
    }

    /// A page with a row the cheap read cannot take whole is read row by
    /// row: each bad row is the same error, naming its column, as before,
    /// and the good rows load around it. Among them, JSON texts that,
    /// pasted into the page's JSON, would have read as other columns.
    #[tokio::test]
    async fn a_page_with_an_unreadable_row_is_read_row_by_row() {
        let odd = [
            "INSERT INTO entries (name, task, every, args) VALUES ('notjson', 'app.t', '1m', '[1,')",
            "INSERT INTO entries (name, task, every, args, kwargs) VALUES ('quote', 'app.t', '1m', '\"', '\"')",
            "INSERT INTO entries (name, task, every, args) VALUES ('two', 'app.t', '1m', '[], {}')",
            "INSERT INTO entries (name, task, every, priority) VALUES ('prio', 'app.t', '1m', 'high')",
            "INSERT INTO entries (name, task, every, priority) VALUES ('big', 'app.t', '1m', 3000000000)",
            "INSERT INTO entries (name, task, every, enabled) VALUES ('yes', 'app.t', '1m', 'yes')",
            "INSERT INTO entries (name, task, every, start_at) VALUES ('soon', 'app.t', '1m', 'soon')",
            "INSERT INTO entries (name, task, every) VALUES ('blob', X'00ff', '1m')",
        ];
        for row in odd {
            let (_dir, store) = store_with(&format!("{FULL}; {row}")).await;
            assert!(plain_page(&store, None, 100).await.is_none(), "{row}");
            let general = list(&store).await.unwrap();
            assert_eq!(general.len(), 4, "{row}");
            assert_eq!(general.iter().filter(|r| r.is_err()).count(), 1, "{row}");
            let (paged, _) = page(&store, None, 100).await.unwrap();
            assert_eq!(summary(&paged), summary(&general), "{row}");
        }
    }

    /// Values written by hand with sqlite3 (NUL and control characters,
    /// text that is not UTF-8, integers past 2^53 and i64's ends in JSON
    /// texts, reals and texts in integer columns, blobs, names that are
    /// NULL, integers or empty, instants of other precisions and zones):
    /// a page gives each row, or its error, exactly as the row-by-row read.
    #[tokio::test]
    async fn hand_written_odd_values_read_the_same_through_the_page_as_row_by_row() {
        let odd = [
            "INSERT INTO entries (name, task, every) VALUES ('a' || char(0) || 'b', 'app.t', '1m')",
            "INSERT INTO entries (name, task, every) VALUES ('nul', 'app' || char(0) || 't', '1m')",
            "INSERT INTO entries (name, task, every) VALUES ('ctl', 'a\"b\\c' || char(1) || char(10) || char(127) || char(8232) || char(65533) || char(128512), '1m')",
            "INSERT INTO entries (name, task, every) VALUES ('bad8', CAST(X'61ff62' AS TEXT), '1m')",
            "INSERT INTO entries (name, task, every) VALUES (CAST(X'62ff' AS TEXT), 'app.t', '1m')",
            "INSERT INTO entries (name, task, every) VALUES ('bad8args', 'app.t', '1m'); UPDATE entries SET args = CAST(X'5b22ff225d' AS TEXT) WHERE name = 'bad8args'",
            "INSERT INTO entries (name, task, every, args) VALUES ('big', 'app.t', '1m', '[18446744073709551616, 9223372036854775807, -9223372036854775808, 18446744073709551615, 1.0, 1e308, 0.1]')",
            "INSERT INTO entries (name, task, every, args) VALUES ('huge', 'app.t', '1m', '[1e400]')",
            "INSERT INTO entries (name, task, every, args) VALUES ('dup', 'app.t', '1m', '{\"a\":1,\"a\":2}')",
            "INSERT INTO entries (name, task, every, args) VALUES ('esc', 'app.t', '1m', '[\"\\u0000\\ud83d\\ude00\"]')",
            "INSERT INTO entries (name, task, every, args) VALUES ('lone', 'app.t', '1m', '[\"\\ud800\"]')",
            "INSERT INTO entries (name, task, every, args) VALUES ('json5', 'app.t', '1m', '[1,]')",
            "INSERT INTO entries (name, task, every, args) VALUES ('ws', 'app.t', '1m', ' [1] ')",
            "INSERT INTO entries (name, task, every, args) VALUES ('ws2', 'app.t', '1m', '[1]' || char(0))",
            "INSERT INTO entries (name, task, every, enabled, sentry_monitor) VALUES ('ints', 'app.t', '1m', 4294967296, -9223372036854775808)",
            "INSERT INTO entries (name, task, every, enabled) VALUES ('real', 'app.t', '1m', 1.0)",
            "INSERT INTO entries (name, task, every, enabled) VALUES ('realt', 'app.t', '1m', '1.0')",
            "INSERT INTO entries (name, task, every, priority) VALUES ('pmin', 'app.t', '1m', -2147483648)",
            "INSERT INTO entries (name, task, every, priority) VALUES ('preal', 'app.t', '1m', 7.5)",
            "INSERT INTO entries (name, task, every, priority) VALUES ('ptext', 'app.t', '1m', '7')",
            "INSERT INTO entries (name, task, every, cron, queue) VALUES ('empty', 'app.t', '', '', '')",
            "INSERT INTO entries (name, task, every) VALUES ('', 'app.t', '1m')",
            "INSERT INTO entries (name, task, every) VALUES (5, 'app.t', '1m')",
            "INSERT INTO entries (name, task, every) VALUES (NULL, 'app.t', '1m')",
            "INSERT INTO entries (name, task, every, start_at) VALUES ('ns', 'app.t', '1m', '2026-01-01T00:00:00.123456789123Z')",
            "INSERT INTO entries (name, task, every, start_at) VALUES ('tz', 'app.t', '1m', '2026-01-01t00:00:00+14:00')",
            "INSERT INTO entries (name, task, every, start_at) VALUES ('sp', 'app.t', '1m', '2026-01-01 00:00:00Z')",
            "INSERT INTO entries (name, task, every, start_at) VALUES ('int', 'app.t', '1m', 1767225600)",
            "INSERT INTO entries (name, task, every, crontab) VALUES ('ctb', 'app.t', NULL, '  null ')",
            "INSERT INTO entries (name, task, every, crontab) VALUES ('ctb2', 'app.t', NULL, '\"x\"')",
            "INSERT INTO entries (name, task, every, headers) VALUES ('h', 'app.t', '1m', 'null')",
            "INSERT INTO entries (name, task, every, timezone) VALUES ('blobtz', 'app.t', '1m', X'00')",
            "INSERT INTO entries (name, task, every, sentry_monitor) VALUES ('smt', 'app.t', '1m', 'true')",
        ];
        let mut bad = Vec::new();
        for row in odd {
            let (_dir, store) = store_with(&format!(
                "INSERT INTO entries (name, task, every) VALUES ('plain', 'app.t', '1m'); {row}"
            ))
            .await;
            let general = list(&store).await.unwrap();
            let (paged, _) = page(&store, None, 100).await.unwrap();
            let plain = plain_page(&store, None, 100).await.is_some();
            if summary(&paged) != summary(&general) {
                bad.push(format!(
                    "{row}\n plain={plain}\n paged={:?}\n list={:?}",
                    summary(&paged),
                    summary(&general)
                ));
            }
        }
        assert!(bad.is_empty(), "{}", bad.join("\n\n"));
    }

    /// Loading a page at a time, the next page read ahead, gives the
    /// entries and diagnostics of the whole table read at once: tables of
    /// 0, 1, 1999, 2000, 2001 and 4000 rows, with a NULL, blob or non-UTF-8
    /// name (one at the end of the first page).
    #[tokio::test]
    async fn the_table_read_a_page_at_a_time_is_the_whole_table_at_page_edges() {
        let mut bad = Vec::new();
        for n in [0, 1, 1999, 2000, 2001, 4000] {
            for extra in [
                "",
                "INSERT INTO entries (name, task, every) VALUES (NULL, 'app.t', '1m');",
                "INSERT INTO entries (name, task, every) VALUES (X'7a7a', 'app.t', '1m');",
                "INSERT INTO entries (name, task, every) VALUES (CAST(X'72ff' AS TEXT), 'app.t', '1m');",
                "UPDATE entries SET name = CAST(X'7230313939397f80' AS TEXT) WHERE name = 'r01999';",
            ] {
                let dir = tempfile::tempdir().unwrap();
                let s = super::super::sqlite::SqliteStore::open(&dir.path().join("s.db"))
                    .await
                    .unwrap();
                let sql = format!(
                    "INSERT INTO entries (name, task, every)
                       WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < {n} - 1)
                       SELECT printf('r%05d', i), 'app.t', '1m' FROM c WHERE {n} > 0; {extra}"
                );
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(s.pool())
                    .await
                    .unwrap();
                let store = Store::Sqlite(s);
                let ctx = crate::entry::Context::default();
                let paged = crate::runtime::reload::load_table(&store, &ctx)
                    .await
                    .unwrap();
                let all = crate::entry::merge::validate(&list(&store).await.unwrap(), &ctx);
                let names = |l: &crate::entry::file::Loaded| {
                    (
                        l.entries.iter().map(|e| e.name.clone()).collect::<Vec<_>>(),
                        l.diagnostics
                            .iter()
                            .map(|d| d.to_string())
                            .collect::<Vec<_>>(),
                    )
                };
                if names(&paged) != names(&all) {
                    let (p, a) = (names(&paged), names(&all));
                    bad.push(format!(
                        "n={n} {extra}: paged {} entries {:?}; list {} entries {:?}",
                        p.0.len(),
                        p.1,
                        a.0.len(),
                        a.1
                    ));
                }
            }
        }
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }
}
