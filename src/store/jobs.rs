//! The jobs table on either backend: insert (idempotent by id), query,
//! cancel, and the releaser's claim.
//!
//! On PostgreSQL a claim is a transaction holding the claimed rows with
//! `FOR UPDATE SKIP LOCKED` until their sends are settled, so replicas share
//! the work without sending a job twice; a crash before commit leaves the
//! rows pending, and they are sent again with the same task id. SQLite
//! serves one process, so a claim is a plain read and the settling a short
//! transaction, with the same at-least-once outcome.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::Row;
use uuid::Uuid;

use crate::jobs::{JobSpec, MAX_DELAY_SECONDS};
use crate::store::{Store, StoreError};

/// A row of the jobs table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRow {
    pub id: Uuid,
    pub task: String,
    pub args: Value,
    pub kwargs: Value,
    pub queue: String,
    pub due_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub priority: i64,
    pub headers: Value,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub released_at: Option<DateTime<Utc>>,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub scheduled_by: String,
}

impl JobRow {
    /// The job as a spec; a row that is not a valid job (written by hand)
    /// says why, and is marked failed rather than sent.
    pub fn spec(&self) -> Result<JobSpec, String> {
        let args = match &self.args {
            Value::Array(a) => a.clone(),
            other => return Err(format!("args must be a JSON array, found {other}")),
        };
        let obj = |name: &str, v: &Value| -> Result<Map<String, Value>, String> {
            match v {
                Value::Object(m) => Ok(m.clone()),
                other => Err(format!("{name} must be a JSON object, found {other}")),
            }
        };
        Ok(JobSpec {
            id: self.id,
            task: self.task.clone(),
            args,
            kwargs: obj("kwargs", &self.kwargs)?,
            queue: self.queue.clone(),
            due_at: self.due_at,
            expires_at: self.expires_at,
            priority: u8::try_from(self.priority)
                .map_err(|_| format!("priority {} is out of range 0..=255", self.priority))?,
            headers: obj("headers", &self.headers)?,
        })
    }

    /// Same job, whatever its status: what `--id` idempotency compares.
    pub fn same_payload(&self, s: &JobSpec) -> bool {
        self.task == s.task
            && self.args == Value::Array(s.args.clone())
            && self.kwargs == Value::Object(s.kwargs.clone())
            && self.queue == s.queue
            && self.due_at == s.due_at
            && self.expires_at == s.expires_at
            && self.priority == i64::from(s.priority)
            && self.headers == Value::Object(s.headers.clone())
    }
}

/// Which jobs `pending` lists.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub task: Option<String>,
    pub queue: Option<String>,
    pub status: Option<String>,
    pub due_after: Option<DateTime<Utc>>,
    pub due_before: Option<DateTime<Utc>>,
    pub limit: i64,
}

pub enum Inserted {
    Created,
    /// The same id with the same payload already exists: nothing written.
    Existing(JobRow),
    /// The same id holds a different job.
    Conflict(JobRow),
}

pub enum Cancelled {
    Done,
    NotPending(String),
    Missing,
}

const COLS: &str = "id, task, args, kwargs, queue, due_at, expires_at, priority, headers, status, created_at, released_at, attempts, last_error, scheduled_by";

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn decode_err(what: String) -> StoreError {
    StoreError::Db(sqlx::Error::Decode(what.into()))
}

fn pg_row(r: &sqlx::postgres::PgRow) -> Result<JobRow, StoreError> {
    Ok(JobRow {
        id: r.try_get("id")?,
        task: r.try_get("task")?,
        args: r.try_get("args")?,
        kwargs: r.try_get("kwargs")?,
        queue: r.try_get("queue")?,
        due_at: r.try_get("due_at")?,
        expires_at: r.try_get("expires_at")?,
        priority: i64::from(r.try_get::<i32, _>("priority")?),
        headers: r.try_get("headers")?,
        status: r.try_get("status")?,
        created_at: r.try_get("created_at")?,
        released_at: r.try_get("released_at")?,
        attempts: i64::from(r.try_get::<i32, _>("attempts")?),
        last_error: r.try_get("last_error")?,
        scheduled_by: r.try_get("scheduled_by")?,
    })
}

fn lite_row(r: &sqlx::sqlite::SqliteRow) -> Result<JobRow, StoreError> {
    let json = |col: &str| -> Result<Value, StoreError> {
        let t: String = r.try_get(col)?;
        serde_json::from_str(&t).map_err(|e| decode_err(format!("jobs.{col} is not JSON: {e}")))
    };
    let instant = |col: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        let t: Option<String> = r.try_get(col)?;
        t.map(|t| {
            DateTime::parse_from_rfc3339(&t)
                .map(|d| d.to_utc())
                .map_err(|e| decode_err(format!("jobs.{col}: {e}")))
        })
        .transpose()
    };
    let id: String = r.try_get("id")?;
    Ok(JobRow {
        id: Uuid::parse_str(&id).map_err(|e| decode_err(format!("jobs.id {id:?}: {e}")))?,
        task: r.try_get("task")?,
        args: json("args")?,
        kwargs: json("kwargs")?,
        queue: r.try_get("queue")?,
        due_at: instant("due_at")?.ok_or_else(|| decode_err("jobs.due_at is NULL".into()))?,
        expires_at: instant("expires_at")?,
        priority: r.try_get("priority")?,
        headers: json("headers")?,
        status: r.try_get("status")?,
        created_at: instant("created_at")?.unwrap_or_default(),
        released_at: instant("released_at")?,
        attempts: r.try_get("attempts")?,
        last_error: r.try_get("last_error")?,
        scheduled_by: r.try_get("scheduled_by")?,
    })
}

/// Stores a new pending job; with an id already present, compares payloads.
pub async fn insert(store: &Store, s: &JobSpec, by: &str) -> Result<Inserted, StoreError> {
    let args = Value::Array(s.args.clone());
    let kwargs = Value::Object(s.kwargs.clone());
    let headers = Value::Object(s.headers.clone());
    let n = match store {
        Store::Postgres(pg) => sqlx::query(
            "INSERT INTO jobs (id, task, args, kwargs, queue, due_at, expires_at, priority, headers, scheduled_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING",
        )
        .bind(s.id)
        .bind(&s.task)
        .bind(&args)
        .bind(&kwargs)
        .bind(&s.queue)
        .bind(s.due_at)
        .bind(s.expires_at)
        .bind(i32::from(s.priority))
        .bind(&headers)
        .bind(by)
        .execute(pg.pool())
        .await?
        .rows_affected(),
        Store::Sqlite(lite) => sqlx::query(
            "INSERT INTO jobs (id, task, args, kwargs, queue, due_at, expires_at, priority, headers, scheduled_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT (id) DO NOTHING",
        )
        .bind(s.id.to_string())
        .bind(&s.task)
        .bind(args.to_string())
        .bind(kwargs.to_string())
        .bind(&s.queue)
        .bind(ts(s.due_at))
        .bind(s.expires_at.map(ts))
        .bind(i64::from(s.priority))
        .bind(headers.to_string())
        .bind(by)
        .bind(ts(crate::clock::system_now()))
        .execute(lite.pool())
        .await?
        .rows_affected(),
    };
    if n == 1 {
        return Ok(Inserted::Created);
    }
    let existing = get(store, s.id)
        .await?
        .ok_or_else(|| decode_err(format!("job {} vanished during insert", s.id)))?;
    Ok(if existing.same_payload(s) {
        Inserted::Existing(existing)
    } else {
        Inserted::Conflict(existing)
    })
}

pub async fn get(store: &Store, id: Uuid) -> Result<Option<JobRow>, StoreError> {
    let sql = format!("SELECT {COLS} FROM jobs WHERE id = $1");
    match store {
        Store::Postgres(pg) => sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(pg.pool())
            .await?
            .map(|r| pg_row(&r))
            .transpose(),
        Store::Sqlite(l) => sqlx::query(sqlx::AssertSqlSafe(sql.replace('$', "?")))
            .bind(id.to_string())
            .fetch_optional(l.pool())
            .await?
            .map(|r| lite_row(&r))
            .transpose(),
    }
}

/// Jobs matching `f`, by due instant.
pub async fn list(store: &Store, f: &Filter) -> Result<Vec<JobRow>, StoreError> {
    let sql = format!(
        "SELECT {COLS} FROM jobs WHERE ($1 IS NULL OR task = $1) AND ($2 IS NULL OR queue = $2) AND ($3 IS NULL OR status = $3)
         AND ($4 IS NULL OR due_at >= $4) AND ($5 IS NULL OR due_at < $5) ORDER BY due_at, id LIMIT $6"
    );
    match store {
        Store::Postgres(pg) => {
            let sql = sql
                .replace("$1 IS NULL", "$1::text IS NULL")
                .replace("$2 IS NULL", "$2::text IS NULL")
                .replace("$3 IS NULL", "$3::text IS NULL")
                .replace("$4 IS NULL", "$4::timestamptz IS NULL")
                .replace("$5 IS NULL", "$5::timestamptz IS NULL");
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&f.task)
                .bind(&f.queue)
                .bind(&f.status)
                .bind(f.due_after)
                .bind(f.due_before)
                .bind(f.limit)
                .fetch_all(pg.pool())
                .await?;
            rows.iter().map(pg_row).collect()
        }
        Store::Sqlite(l) => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.replace('$', "?")))
                .bind(&f.task)
                .bind(&f.queue)
                .bind(&f.status)
                .bind(f.due_after.map(ts))
                .bind(f.due_before.map(ts))
                .bind(f.limit)
                .fetch_all(l.pool())
                .await?;
            rows.iter().map(lite_row).collect()
        }
    }
}

/// Cancels a pending job; a released one is already in SQS.
pub async fn cancel(store: &Store, id: Uuid) -> Result<Cancelled, StoreError> {
    let n = match store {
        Store::Postgres(pg) => {
            sqlx::query("UPDATE jobs SET status = 'cancelled' WHERE id = $1 AND status = 'pending'")
                .bind(id)
                .execute(pg.pool())
                .await?
                .rows_affected()
        }
        Store::Sqlite(l) => {
            sqlx::query("UPDATE jobs SET status = 'cancelled' WHERE id = ?1 AND status = 'pending'")
                .bind(id.to_string())
                .execute(l.pool())
                .await?
                .rows_affected()
        }
    };
    if n == 1 {
        return Ok(Cancelled::Done);
    }
    Ok(match get(store, id).await? {
        Some(row) => Cancelled::NotPending(row.status),
        None => Cancelled::Missing,
    })
}

/// When the releaser should look again: the earliest window opening (or
/// retry) among the first pending jobs by due instant. Reads the head of
/// the pending index only, so it stays cheap at millions of rows.
pub async fn next_wake(
    store: &Store,
    window: Duration,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    const HEAD: i64 = 100;
    let rows: Vec<(String, DateTime<Utc>, Option<DateTime<Utc>>)> = match store {
        Store::Postgres(pg) => {
            sqlx::query_as("SELECT queue, due_at, retry_at FROM jobs WHERE status = 'pending' ORDER BY due_at LIMIT $1")
                .bind(HEAD)
                .fetch_all(pg.pool())
                .await?
        }
        Store::Sqlite(l) => {
            let raw: Vec<(String, String, Option<String>)> =
                sqlx::query_as("SELECT queue, due_at, retry_at FROM jobs WHERE status = 'pending' ORDER BY due_at LIMIT ?1")
                    .bind(HEAD)
                    .fetch_all(l.pool())
                    .await?;
            let p = |t: &str| DateTime::parse_from_rfc3339(t).map(|d| d.to_utc()).map_err(|e| decode_err(format!("jobs instant {t:?}: {e}")));
            raw.iter()
                .map(|(q, d, r)| Ok((q.clone(), p(d)?, r.as_deref().map(p).transpose()?)))
                .collect::<Result<_, StoreError>>()?
        }
    };
    let window = window.min(Duration::seconds(MAX_DELAY_SECONDS));
    let opening = |queue: &str, due: DateTime<Utc>| {
        if queue.ends_with(".fifo") {
            due
        } else {
            due - window
        }
    };
    let mut wake = rows
        .iter()
        .map(|(q, d, r)| opening(q, *d).max(r.unwrap_or(DateTime::<Utc>::MIN_UTC)))
        .min();
    // Rows past the head are due no earlier than its last one.
    if rows.len() as i64 == HEAD
        && let Some((_, last, _)) = rows.last()
    {
        wake = wake.map(|w| w.min(*last - window));
    }
    Ok(wake)
}

/// Jobs claimed by one release pass, held until `settle`.
pub struct Batch {
    pub jobs: Vec<JobRow>,
    tx: Option<sqlx::Transaction<'static, sqlx::Postgres>>,
    store: Store,
}

/// Claims up to `limit` pending jobs whose window may be open at `now`
/// (`only`: just that job).
pub async fn claim(
    store: &Store,
    now: DateTime<Utc>,
    window: Duration,
    limit: i64,
    only: Option<Uuid>,
) -> Result<Batch, StoreError> {
    let horizon = now + window.min(Duration::seconds(MAX_DELAY_SECONDS));
    match store {
        Store::Postgres(pg) => {
            let mut tx = pg.pool().begin().await?;
            let sql = format!(
                "SELECT {COLS} FROM jobs WHERE status = 'pending' AND due_at <= $1 AND (retry_at IS NULL OR retry_at <= $2)
                 AND ($3::uuid IS NULL OR id = $3) ORDER BY due_at LIMIT $4 FOR UPDATE SKIP LOCKED"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(horizon)
                .bind(now)
                .bind(only)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
            let jobs = rows.iter().map(pg_row).collect::<Result<_, _>>()?;
            Ok(Batch {
                jobs,
                tx: Some(tx),
                store: store.clone(),
            })
        }
        Store::Sqlite(l) => {
            let sql = format!(
                "SELECT {COLS} FROM jobs WHERE status = 'pending' AND due_at <= ?1 AND (retry_at IS NULL OR retry_at <= ?2)
                 AND (?3 IS NULL OR id = ?3) ORDER BY due_at LIMIT ?4"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(ts(horizon))
                .bind(ts(now))
                .bind(only.map(|u| u.to_string()))
                .bind(limit)
                .fetch_all(l.pool())
                .await?;
            let jobs = rows.iter().map(lite_row).collect::<Result<_, _>>()?;
            Ok(Batch {
                jobs,
                tx: None,
                store: store.clone(),
            })
        }
    }
}

/// How each claimed job ended this pass.
#[derive(Debug, Default)]
pub struct Settlement {
    pub released: Vec<Uuid>,
    /// Send failed: try again at the given instant.
    pub retry: Vec<(Uuid, String, DateTime<Utc>)>,
    /// Cannot ever be sent (expired, invalid row): marked failed.
    pub failed: Vec<(Uuid, String)>,
}

impl Batch {
    /// Records the outcomes and releases the claim.
    pub async fn settle(self, s: &Settlement) -> Result<(), StoreError> {
        match (self.tx, &self.store) {
            (Some(mut tx), _) => {
                sqlx::query("UPDATE jobs SET status = 'released', released_at = now(), attempts = attempts + 1, last_error = NULL, retry_at = NULL WHERE id = ANY($1)")
                    .bind(&s.released)
                    .execute(&mut *tx)
                    .await?;
                for (id, err, at) in &s.retry {
                    sqlx::query("UPDATE jobs SET attempts = attempts + 1, last_error = $2, retry_at = $3 WHERE id = $1")
                        .bind(id)
                        .bind(err)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?;
                }
                for (id, err) in &s.failed {
                    sqlx::query("UPDATE jobs SET status = 'failed', last_error = $2 WHERE id = $1")
                        .bind(id)
                        .bind(err)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
            (None, Store::Sqlite(l)) => {
                let mut tx = l.pool().begin().await?;
                let now = ts(crate::clock::system_now());
                for id in &s.released {
                    sqlx::query("UPDATE jobs SET status = 'released', released_at = ?2, attempts = attempts + 1, last_error = NULL, retry_at = NULL WHERE id = ?1")
                        .bind(id.to_string())
                        .bind(&now)
                        .execute(&mut *tx)
                        .await?;
                }
                for (id, err, at) in &s.retry {
                    sqlx::query("UPDATE jobs SET attempts = attempts + 1, last_error = ?2, retry_at = ?3 WHERE id = ?1")
                        .bind(id.to_string())
                        .bind(err)
                        .bind(ts(*at))
                        .execute(&mut *tx)
                        .await?;
                }
                for (id, err) in &s.failed {
                    sqlx::query("UPDATE jobs SET status = 'failed', last_error = ?2 WHERE id = ?1")
                        .bind(id.to_string())
                        .bind(err)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
            (None, Store::Postgres(_)) => {}
        }
        Ok(())
    }
}

/// Pending jobs by how soon they are due: overdue, within 15 minutes, an
/// hour, a day, a week, later.
pub async fn pending_by_bucket(
    store: &Store,
    now: DateTime<Utc>,
) -> Result<Vec<(&'static str, i64)>, StoreError> {
    const EDGES: [(&str, i64); 5] = [
        ("overdue", 0),
        ("15m", 15 * 60),
        ("1h", 3600),
        ("1d", 86_400),
        ("7d", 7 * 86_400),
    ];
    let mut out = Vec::with_capacity(EDGES.len() + 1);
    let mut below = 0i64;
    for (name, secs) in EDGES {
        let edge = now + Duration::seconds(secs);
        let n: i64 = match store {
            Store::Postgres(pg) => {
                sqlx::query_scalar(
                    "SELECT count(*) FROM jobs WHERE status = 'pending' AND due_at < $1",
                )
                .bind(edge)
                .fetch_one(pg.pool())
                .await?
            }
            Store::Sqlite(l) => {
                sqlx::query_scalar(
                    "SELECT count(*) FROM jobs WHERE status = 'pending' AND due_at < ?1",
                )
                .bind(ts(edge))
                .fetch_one(l.pool())
                .await?
            }
        };
        out.push((name, n - below));
        below = n;
    }
    let total: i64 = match store {
        Store::Postgres(pg) => {
            sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'pending'")
                .fetch_one(pg.pool())
                .await?
        }
        Store::Sqlite(l) => {
            sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'pending'")
                .fetch_one(l.pool())
                .await?
        }
    };
    out.push(("later", total - below));
    Ok(out)
}
