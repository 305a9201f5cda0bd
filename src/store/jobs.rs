//! The jobs table on either backend: insert (idempotent by id), query,
//! cancel, and the releaser's lease. Jobs read from the intake queue are
//! written by [`super::intake`]; they carry the message to release
//! ([`IntakeMessage`]) and are read, listed and cancelled here like any
//! other.
//!
//! A release is a lease, not a transaction held across the send to SQS:
//! [`claim`] marks rows `releasing` under a token until an instant, in one
//! short transaction (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so replicas
//! share the work; SQLite: `BEGIN IMMEDIATE`); the caller sends outside any
//! transaction; [`settle`] then records each outcome on the rows still
//! under its token. A replica that dies mid-send leaves its rows
//! `releasing` until the lease ends; the next claim after that takes them
//! again, and they go out with the same task id. `cancel` never touches a
//! row being released.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::Row;
use uuid::Uuid;

use super::sqlite::codec as text_form;
use super::sqlite::codec::{GLOB, NOW};
use super::{Failure, Id, Store, StoreError, Ts, decode_row};
use crate::jobs::{JobSpec, MAX_DELAY_SECONDS};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting in the database for its release window.
    Pending,
    /// Claimed by a releaser, which is handing it to SQS now.
    Releasing,
    /// In SQS.
    Released,
    Cancelled,
    /// Can never be sent as it stands (expired, a row that is not a valid job).
    Failed,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Pending,
        JobStatus::Releasing,
        JobStatus::Released,
        JobStatus::Cancelled,
        JobStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Releasing => "releasing",
            JobStatus::Released => "released",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a job status (pending, releasing, released, cancelled, failed)"
                )
            })
    }
}

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
    pub status: JobStatus,
    pub created_at: DateTime<Utc>,
    pub released_at: Option<DateTime<Utc>>,
    pub attempts: i64,
    pub last_error: Option<String>,
    /// After a failed send: not tried again before this instant.
    #[serde(skip)]
    pub retry_at: Option<DateTime<Utc>>,
    pub scheduled_by: String,
    /// The Celery message's `retries` (0 for jobs not read from the intake).
    pub retries: i64,
    /// A task diverted to the intake queue: the message to release.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intake: Option<IntakeMessage>,
}

/// What a job read from the intake queue is released as (python/INTAKE.md):
/// the message Celery would have sent, byte for byte, and where it goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntakeMessage {
    /// kombu's envelope as `json.dumps` wrote it. On a job set aside as a
    /// malformed intake message, the envelope as received.
    pub envelope: String,
    /// Whether the SQS body is base64 of the envelope.
    pub body_base64: bool,
    /// The application's SQS name for the queue, its prefix applied.
    pub sqs_queue: Option<String>,
    pub queue_url: Option<String>,
    pub message_attributes: Option<Value>,
    pub group_id: Option<String>,
    pub dedup_id: Option<String>,
}

impl JobRow {
    /// The job as a spec; a row that is not a valid job (written by hand)
    /// says why, and is marked failed rather than sent.
    pub fn spec(&self) -> Result<JobSpec, String> {
        let args = match &self.args {
            Value::Array(a) => a.clone(),
            other => {
                return Err(format!(
                    "args must be a JSON array, found {}",
                    json_kind(other)
                ));
            }
        };
        let obj = |name: &str, v: &Value| -> Result<Map<String, Value>, String> {
            match v {
                Value::Object(m) => Ok(m.clone()),
                other => Err(format!(
                    "{name} must be a JSON object, found {}",
                    json_kind(other)
                )),
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

/// What a JSON value is, never what it holds: job errors are shown on the
/// status page, and a payload may hold secrets.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A jobs row as both backends decode it (see [`super::sqlite::codec`]).
#[derive(sqlx::FromRow)]
struct Record {
    id: Id,
    task: String,
    args: Value,
    kwargs: Value,
    queue: String,
    due_at: Ts,
    expires_at: Option<Ts>,
    priority: i32,
    headers: Value,
    status: JobStatus,
    created_at: Ts,
    released_at: Option<Ts>,
    attempts: i32,
    last_error: Option<String>,
    retry_at: Option<Ts>,
    scheduled_by: String,
    retries: i32,
    envelope: Option<String>,
    body_base64: bool,
    sqs_queue: Option<String>,
    queue_url: Option<String>,
    message_attributes: Option<Value>,
    group_id: Option<String>,
    dedup_id: Option<String>,
}

impl From<Record> for JobRow {
    fn from(r: Record) -> Self {
        JobRow {
            id: r.id.0,
            task: r.task,
            args: r.args,
            kwargs: r.kwargs,
            queue: r.queue,
            due_at: r.due_at.0,
            expires_at: r.expires_at.map(|t| t.0),
            priority: i64::from(r.priority),
            headers: r.headers,
            status: r.status,
            created_at: r.created_at.0,
            released_at: r.released_at.map(|t| t.0),
            // A count written by hand below zero means none.
            attempts: i64::from(r.attempts.max(0)),
            last_error: r.last_error,
            retry_at: r.retry_at.map(|t| t.0),
            scheduled_by: r.scheduled_by,
            retries: i64::from(r.retries),
            intake: r.envelope.map(|envelope| IntakeMessage {
                envelope,
                body_base64: r.body_base64,
                sqs_queue: r.sqs_queue,
                queue_url: r.queue_url,
                message_attributes: r.message_attributes,
                group_id: r.group_id,
                dedup_id: r.dedup_id,
            }),
        }
    }
}

/// The columns of [`Record`], after each backend's `row_key`: the id as
/// text, even where it was written as something else, so the row can be
/// named.
pub(super) const COLS: &str = "id, task, args, kwargs, queue, due_at, expires_at, priority, headers, status, created_at, released_at, attempts, last_error, retry_at,
     scheduled_by, retries, envelope, body_base64, sqs_queue, queue_url, message_attributes, group_id, dedup_id";

fn decode<R>(row: &R) -> Result<JobRow, StoreError>
where
    R: Row,
    for<'r> Record: sqlx::FromRow<'r, R>,
    &'static str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    decode_row::<R, Record>("jobs", row).map(JobRow::from)
}

/// Which jobs `pending` lists.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub task: Option<String>,
    pub queue: Option<String>,
    pub status: Option<JobStatus>,
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

#[derive(Debug, PartialEq, Eq)]
pub enum Cancelled {
    Done,
    /// A releaser is handing it to SQS now: it cannot be taken back. If
    /// the send fails it becomes pending again, and can be cancelled then.
    BeingReleased,
    NotPending(JobStatus),
    Missing,
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
        Store::Sqlite(lite) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO jobs (id, task, args, kwargs, queue, due_at, expires_at, priority, headers, scheduled_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, {NOW}) ON CONFLICT (id) DO NOTHING"
        )))
        .bind(Id(s.id))
        .bind(&s.task)
        .bind(&args)
        .bind(&kwargs)
        .bind(&s.queue)
        .bind(Ts(s.due_at))
        .bind(s.expires_at.map(Ts))
        .bind(i32::from(s.priority))
        .bind(&headers)
        .bind(by)
        .execute(lite.pool())
        .await?
        .rows_affected(),
    };
    if n == 1 {
        return Ok(Inserted::Created);
    }
    let Some(existing) = get(store, s.id).await? else {
        // Deleted between the two statements: say so rather than guess.
        return Err(StoreError::Decode {
            table: "jobs",
            column: "id".into(),
            row: s.id.to_string(),
            reason: "the row existed and then vanished while scheduling; schedule it again".into(),
        });
    };
    Ok(if existing.same_payload(s) {
        Inserted::Existing(existing)
    } else {
        Inserted::Conflict(existing)
    })
}

/// One job; a row that cannot be read is [`StoreError::Decode`].
pub async fn get(store: &Store, id: Uuid) -> Result<Option<JobRow>, StoreError> {
    match store {
        Store::Postgres(pg) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id::text AS row_key, {COLS} FROM jobs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(pg.pool())
        .await?
        .map(|r| decode(&r))
        .transpose(),
        Store::Sqlite(l) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT CAST(id AS TEXT) AS row_key, {COLS} FROM jobs WHERE id = ?1"
        )))
        .bind(Id(id))
        .fetch_optional(l.pool())
        .await?
        .map(|r| decode(&r))
        .transpose(),
    }
}

/// Jobs matching `f`, by due instant; each row on its own, so one that
/// cannot be read is an error in its place and the others still list.
pub async fn list(
    store: &Store,
    f: &Filter,
) -> Result<Vec<Result<JobRow, StoreError>>, StoreError> {
    Ok(match store {
        Store::Postgres(pg) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id::text AS row_key, {COLS} FROM jobs
              WHERE ($1::text IS NULL OR task = $1) AND ($2::text IS NULL OR queue = $2)
                AND ($3::text IS NULL OR status = $3)
                AND ($4::timestamptz IS NULL OR due_at >= $4) AND ($5::timestamptz IS NULL OR due_at < $5)
              ORDER BY due_at, id LIMIT $6"
        )))
        .bind(&f.task)
        .bind(&f.queue)
        .bind(f.status)
        .bind(f.due_after)
        .bind(f.due_before)
        .bind(f.limit)
        .fetch_all(pg.pool())
        .await?
        .iter()
        .map(decode)
        .collect(),
        Store::Sqlite(l) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT CAST(id AS TEXT) AS row_key, {COLS} FROM jobs
              WHERE (?1 IS NULL OR task = ?1) AND (?2 IS NULL OR queue = ?2) AND (?3 IS NULL OR status = ?3)
                AND (?4 IS NULL OR due_at >= ?4) AND (?5 IS NULL OR due_at < ?5)
              ORDER BY due_at, id {}",
            lite_limit(f.limit)
        )))
        .bind(&f.task)
        .bind(&f.queue)
        .bind(f.status)
        .bind(f.due_after.map(Ts))
        .bind(f.due_before.map(Ts))
        .fetch_all(l.pool())
        .await?
        .iter()
        .map(decode)
        .collect(),
    })
}

/// A row no pass holds: pending, or `releasing` without a lease token
/// (set by hand; no pass can settle it, so no send of it is under way).
const UNHELD: &str = "(status = 'pending' OR (status = 'releasing' AND lease IS NULL))";

/// Cancels a pending job. A job being released is not cancelled (it may
/// be in SQS already); a released one is in SQS.
pub async fn cancel(store: &Store, id: Uuid) -> Result<Cancelled, StoreError> {
    let (n, status): (u64, Option<JobStatus>) = match store {
        Store::Postgres(pg) => {
            let n = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE jobs SET status = 'cancelled', lease_until = NULL WHERE id = $1 AND {UNHELD}"
            )))
            .bind(id)
            .execute(pg.pool())
            .await?
            .rows_affected();
            let status = sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_optional(pg.pool())
                .await?;
            (n, status)
        }
        Store::Sqlite(l) => {
            let n = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE jobs SET status = 'cancelled', lease_until = NULL WHERE id = ?1 AND {UNHELD}"
            )))
            .bind(Id(id))
            .execute(l.pool())
            .await?
            .rows_affected();
            let status = sqlx::query_scalar("SELECT status FROM jobs WHERE id = ?1")
                .bind(Id(id))
                .fetch_optional(l.pool())
                .await?;
            (n, status)
        }
    };
    Ok(match (n, status) {
        (1, _) => Cancelled::Done,
        (_, Some(JobStatus::Releasing)) => Cancelled::BeingReleased,
        (_, Some(s)) => Cancelled::NotPending(s),
        (_, None) => Cancelled::Missing,
    })
}

/// What [`reschedule`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Rescheduled {
    Done,
    /// A releaser is handing it to SQS now: its instant cannot change.
    BeingReleased,
    NotPending(JobStatus),
    Missing,
}

/// Moves a pending job to `due_at`, keeping its id; a pending retry's
/// backoff is dropped (the job is due anew). Only a row no pass holds
/// changes: one being released is on its way to SQS. A task diverted to
/// the intake queue is released as its stored envelope, whose
/// `headers.eta` the worker waits for: it is rewritten to the new instant
/// in the same transaction, or the worker would hold the message until
/// the old one.
pub async fn reschedule(
    store: &Store,
    id: Uuid,
    due_at: DateTime<Utc>,
) -> Result<Rescheduled, StoreError> {
    const READ: &str = "SELECT status, lease IS NULL AS unheld, envelope FROM jobs WHERE id = ";
    match store {
        Store::Postgres(pg) => {
            let mut tx = pg.pool().begin().await?;
            let row = sqlx::query_as(sqlx::AssertSqlSafe(format!("{READ} $1 FOR UPDATE")))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let (verdict, envelope) = rescheduling(row, due_at);
            if verdict == Rescheduled::Done {
                sqlx::query(
                    "UPDATE jobs SET due_at = $2, retry_at = NULL, status = 'pending', lease_until = NULL,
                            envelope = coalesce($3, envelope) WHERE id = $1",
                )
                .bind(id)
                .bind(due_at)
                .bind(envelope)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(verdict)
        }
        Store::Sqlite(l) => {
            let mut tx = l.pool().begin_with("BEGIN IMMEDIATE").await?;
            let row = sqlx::query_as(sqlx::AssertSqlSafe(format!("{READ} ?1")))
                .bind(Id(id))
                .fetch_optional(&mut *tx)
                .await?;
            let (verdict, envelope) = rescheduling(row, due_at);
            if verdict == Rescheduled::Done {
                sqlx::query(
                    "UPDATE jobs SET due_at = ?2, retry_at = NULL, status = 'pending', lease_until = NULL,
                            envelope = coalesce(?3, envelope) WHERE id = ?1",
                )
                .bind(Id(id))
                .bind(Ts(due_at))
                .bind(envelope)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(verdict)
        }
    }
}

/// Whether a row (status, unheld, envelope) can be rescheduled to
/// `due_at`, and its envelope with the new `headers.eta` (`None`: keep it
/// as stored, when there is none or it has no eta to move).
fn rescheduling(
    row: Option<(JobStatus, bool, Option<String>)>,
    due_at: DateTime<Utc>,
) -> (Rescheduled, Option<String>) {
    match row {
        None => (Rescheduled::Missing, None),
        Some((JobStatus::Pending, _, env)) | Some((JobStatus::Releasing, true, env)) => (
            Rescheduled::Done,
            env.and_then(|e| crate::wire::intake::with_eta(&e, due_at)),
        ),
        Some((JobStatus::Releasing, false, _)) => (Rescheduled::BeingReleased, None),
        Some((s, _, _)) => (Rescheduled::NotPending(s), None),
    }
}

/// Which pending jobs a bulk cancel takes: one task, optionally one queue
/// and a due range (`due_after` inclusive, `due_before` exclusive, as
/// `sqsbeat pending` reads them).
#[derive(Debug, Clone, Default)]
pub struct Match {
    pub task: String,
    pub queue: Option<String>,
    pub due_after: Option<DateTime<Utc>>,
    pub due_before: Option<DateTime<Utc>>,
}

/// Cancels every pending job matching `m` in one statement, or with
/// `dry_run` counts them; returns how many. Jobs being released are not
/// pending and are left alone.
pub async fn cancel_matching(store: &Store, m: &Match, dry_run: bool) -> Result<u64, StoreError> {
    let verb = if dry_run {
        "SELECT count(*) FROM jobs"
    } else {
        "UPDATE jobs SET status = 'cancelled'"
    };
    Ok(match store {
        Store::Postgres(pg) => {
            let sql = format!(
                "{verb} WHERE status = 'pending' AND task = $1 AND ($2::text IS NULL OR queue = $2)
                   AND ($3::timestamptz IS NULL OR due_at >= $3) AND ($4::timestamptz IS NULL OR due_at < $4)"
            );
            let q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&m.task)
                .bind(&m.queue)
                .bind(m.due_after)
                .bind(m.due_before);
            if dry_run {
                let n: i64 = q.fetch_one(pg.pool()).await?.try_get(0)?;
                u64::try_from(n).unwrap_or(0)
            } else {
                q.execute(pg.pool()).await?.rows_affected()
            }
        }
        Store::Sqlite(l) => {
            let sql = format!(
                "{verb} WHERE status = 'pending' AND task = ?1 AND (?2 IS NULL OR queue = ?2)
                   AND (?3 IS NULL OR due_at >= ?3) AND (?4 IS NULL OR due_at < ?4)"
            );
            let q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&m.task)
                .bind(&m.queue)
                .bind(m.due_after.map(Ts))
                .bind(m.due_before.map(Ts));
            if dry_run {
                let n: i64 = q.fetch_one(l.pool()).await?.try_get(0)?;
                u64::try_from(n).unwrap_or(0)
            } else {
                q.execute(l.pool()).await?.rows_affected()
            }
        }
    })
}

/// The earliest instant a release pass may find work: a window opening
/// or a retry instant among pending jobs, or the end of a lease (a
/// releaser that died mid-send). A FIFO queue's window opens when its job
/// is due. Reads only the head of each pending index (FIFO and delayed
/// queues apart), so it stays cheap at millions of rows; rows that cannot
/// be read are left to the claim, which marks them failed.
pub async fn next_wake(
    store: &Store,
    window: Duration,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let window = window.min(Duration::seconds(MAX_DELAY_SECONDS));
    let (delayed, fifo, lease) = match store {
        Store::Postgres(pg) => {
            let head = |fifo: &'static str| async move {
                let sql = format!(
                    "SELECT id::text AS row_key, due_at, retry_at FROM jobs
                      WHERE status = 'pending' AND right(queue, 5) {fifo} '.fifo' ORDER BY due_at LIMIT $1"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(HEAD)
                    .fetch_all(pg.pool())
                    .await?;
                Ok::<_, StoreError>(head_of(&rows))
            };
            // A lease without an end that can be read is over.
            let lease = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT min(CASE WHEN lease_until IS NULL OR lease_until > {PG_LATEST} THEN 'epoch'
                                 ELSE lease_until END) AS t
                   FROM jobs WHERE status = 'releasing'"
            )))
            .fetch_one(pg.pool())
            .await?
            .try_get::<Option<Ts>, _>("t")
            .ok()
            .flatten();
            (head("<>").await?, head("=").await?, lease)
        }
        Store::Sqlite(l) => {
            let head = |fifo: &'static str| async move {
                // The limit a literal (see [`lite_limit`]).
                let sql = format!(
                    "SELECT CAST(id AS TEXT) AS row_key, due_at, retry_at FROM jobs
                      WHERE status = 'pending' AND substr(queue, -5) {fifo} '.fifo' ORDER BY due_at {}",
                    lite_limit(HEAD)
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(l.pool())
                    .await?;
                Ok::<_, StoreError>(head_of(&rows))
            };
            let lease = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT min(CASE WHEN lease_until IS NULL OR lease_until NOT GLOB {GLOB}
                                 THEN '1970-01-01T00:00:00.000000Z' ELSE lease_until END) AS t
                   FROM jobs WHERE status = 'releasing'"
            )))
            .fetch_one(l.pool())
            .await?
            .try_get::<Option<Ts>, _>("t")
            .ok()
            .flatten();
            (head("<>").await?, head("=").await?, lease)
        }
    };
    Ok([
        delayed.wake(window),
        fifo.wake(Duration::zero()),
        lease.map(|t| t.0),
    ]
    .into_iter()
    .flatten()
    .min())
}

/// The latest instant sqsbeat can read (chrono's), as a PostgreSQL
/// literal. Later ones (`infinity`, the year 270000) are valid
/// `timestamptz` values no job can be released at: the claim takes such
/// rows to mark them failed. A literal, not a parameter, so the planner
/// sees how few rows lie beyond it and reads the index.
const PG_LATEST: &str = "'262142-12-31 23:59:59.999999+00'";

/// Rows read from the head of a pending index.
const HEAD: i64 = 100;

/// A `LIMIT` clause for SQLite with the number written into the SQL. A
/// `LIMIT` bound as a parameter makes SQLite prepare the statement again at every
/// execution: its planner reads the bound value (`sqlite3ExprIsInteger`)
/// and marks the statement expired whenever that parameter is bound
/// again. That cost about 300 000 instructions per run, and the
/// releaser's polls on an idle store were a third of everything the
/// process did. The limits are few (a pass's batch, an index's head), so
/// each is one cached statement.
pub(super) fn lite_limit(n: i64) -> String {
    format!("LIMIT {n}")
}

/// The readable rows at the head of a pending index, and whether it was full.
struct Head {
    rows: Vec<HeadRow>,
    full: bool,
}

#[derive(sqlx::FromRow)]
struct HeadRow {
    due_at: Ts,
    retry_at: Option<Ts>,
}

fn head_of<R>(rows: &[R]) -> Head
where
    R: Row,
    for<'r> HeadRow: sqlx::FromRow<'r, R>,
    &'static str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Head {
        rows: rows
            .iter()
            .filter_map(|r| decode_row::<R, HeadRow>("jobs", r).ok())
            .collect(),
        full: rows.len() as i64 == HEAD,
    }
}

impl Head {
    /// The earliest opening (`due - window`, after any retry instant); rows
    /// past a full head are due no earlier than its last one.
    fn wake(&self, window: Duration) -> Option<DateTime<Utc>> {
        let first = self
            .rows
            .iter()
            .map(|h| {
                (h.due_at.0 - window).max(h.retry_at.map_or(DateTime::<Utc>::MIN_UTC, |t| t.0))
            })
            .min();
        let past = self
            .rows
            .last()
            .filter(|_| self.full)
            .map(|last| last.due_at.0 - window);
        first.into_iter().chain(past).min()
    }
}

/// What a release pass asks for.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub now: DateTime<Utc>,
    /// The release window (at most SQS's 15 minutes is used).
    pub window: Duration,
    pub limit: i64,
    /// How long the claimed rows stay this pass's: longer than its sends
    /// may take. A pass still sending after that may see them claimed
    /// again, and sent twice with the same task id.
    pub lease_for: Duration,
    /// Just this job (what `sqsbeat schedule` does for a job due at once).
    pub only: Option<Uuid>,
    /// This pass's lease token; [`settle`] needs it.
    pub token: Uuid,
}

/// What a claim took.
#[derive(Debug, Default)]
pub struct Claimed {
    /// Leased to this pass, by due instant.
    pub rows: Vec<JobRow>,
    /// Rows that could not be read (an instant out of range, JSON or a
    /// UUID that does not parse), marked failed in the same transaction:
    /// the row's id as stored, and the reason.
    pub failed: Vec<(String, String)>,
}

/// Leases up to `limit` jobs to the pass `r.token`, in one short
/// transaction: pending rows whose window is open at `r.now` (a FIFO queue
/// takes no delay, so its jobs only once due) and whose retry instant has
/// passed, and rows whose lease ended (their releaser died mid-send).
pub async fn claim(store: &Store, r: &ClaimRequest) -> Result<Claimed, StoreError> {
    let horizon = r.now + r.window.min(Duration::seconds(MAX_DELAY_SECONDS));
    let lease_until = r.now + r.lease_for;
    match store {
        Store::Postgres(pg) => claim_pg(pg, r, horizon, lease_until).await,
        Store::Sqlite(l) => claim_lite(l, r, horizon, lease_until).await,
    }
}

/// How a claim's transaction opens on PostgreSQL. The only good plan for
/// the claim walks the pending indexes in due order and stops at the
/// limit. Statistics that lag a bulk insert (a million rows due at once,
/// not yet analyzed) made the planner bitmap-scan and sort every due row
/// instead: 0.9 s per claim of 500, under 900 jobs/s. Ruled out for this
/// transaction only, in the same round trip as BEGIN.
const CLAIM_BEGIN_PG: &str =
    "BEGIN; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off";

/// The claim on PostgreSQL: $1 now, $2 horizon, $3 token, $4 lease end,
/// $5 only this job, $6 limit.
fn claim_pg_sql() -> String {
    format!(
        "WITH delayed AS (
            SELECT id, due_at AS rank FROM jobs
             WHERE status = 'pending' AND right(queue, 5) <> '.fifo' AND due_at <= $2
               AND (retry_at IS NULL OR retry_at <= $1 OR retry_at > {PG_LATEST}) AND ($5::uuid IS NULL OR id = $5)
             ORDER BY due_at LIMIT $6 FOR UPDATE SKIP LOCKED),
         fifo AS (
            SELECT id, due_at AS rank FROM jobs
             WHERE status = 'pending' AND right(queue, 5) = '.fifo' AND due_at <= $1
               AND (retry_at IS NULL OR retry_at <= $1 OR retry_at > {PG_LATEST}) AND ($5::uuid IS NULL OR id = $5)
             ORDER BY due_at LIMIT $6 FOR UPDATE SKIP LOCKED),
         never AS (
            SELECT id, due_at AS rank FROM jobs
             WHERE status = 'pending' AND due_at > {PG_LATEST} AND ($5::uuid IS NULL OR id = $5)
             ORDER BY due_at LIMIT $6 FOR UPDATE SKIP LOCKED),
         stale AS (
            SELECT id, lease_until AS rank FROM jobs
             WHERE status = 'releasing' AND (lease_until <= $1 OR lease_until IS NULL OR lease_until > {PG_LATEST})
               AND ($5::uuid IS NULL OR id = $5)
             ORDER BY lease_until LIMIT $6 FOR UPDATE SKIP LOCKED)
         UPDATE jobs SET status = 'releasing', lease = $3, lease_until = $4
          WHERE id IN (SELECT id FROM (SELECT * FROM delayed UNION ALL SELECT * FROM fifo
                                       UNION ALL SELECT * FROM never UNION ALL SELECT * FROM stale) AS c
                        ORDER BY rank LIMIT $6)
         RETURNING id::text AS row_key, {COLS}"
    )
}

/// The plan PostgreSQL runs a claim with (`EXPLAIN`, JSON), in a
/// transaction opened as a claim's is, then rolled back: nothing is leased.
pub async fn explain_claim(pg: &super::PgStore, r: &ClaimRequest) -> Result<Value, StoreError> {
    let horizon = r.now + r.window.min(Duration::seconds(MAX_DELAY_SECONDS));
    let mut tx = pg.pool().begin_with(CLAIM_BEGIN_PG).await?;
    let plan: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (FORMAT JSON) {}",
        claim_pg_sql()
    )))
    .bind(r.now)
    .bind(horizon)
    .bind(r.token)
    .bind(r.now + r.lease_for)
    .bind(r.only)
    .bind(r.limit)
    .fetch_one(&mut *tx)
    .await?;
    tx.rollback().await?;
    Ok(plan)
}

async fn claim_pg(
    pg: &super::PgStore,
    r: &ClaimRequest,
    horizon: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Claimed, StoreError> {
    let mut tx = pg.pool().begin_with(CLAIM_BEGIN_PG).await?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(claim_pg_sql()))
        .bind(r.now)
        .bind(horizon)
        .bind(r.token)
        .bind(lease_until)
        .bind(r.only)
        .bind(r.limit)
        .fetch_all(&mut *tx)
        .await?;
    let claimed = split(rows.iter().map(|row| (row.try_get("row_key"), decode(row))));
    if !claimed.failed.is_empty() {
        // A PostgreSQL id is always a UUID; only the text came back.
        let ids: Vec<Uuid> = claimed
            .failed
            .iter()
            .filter_map(|(id, _)| Uuid::parse_str(id).ok())
            .collect();
        let why: Vec<&str> = claimed.failed.iter().map(|f| f.1.as_str()).collect();
        sqlx::query(
            "UPDATE jobs SET status = 'failed', last_error = u.why, lease = NULL, lease_until = NULL
               FROM UNNEST($1::uuid[], $2::text[]) AS u(id, why) WHERE jobs.id = u.id AND jobs.lease = $3",
        )
        .bind(&ids)
        .bind(&why)
        .bind(r.token)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(claimed)
}

async fn claim_lite(
    l: &super::SqliteStore,
    r: &ClaimRequest,
    horizon: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Claimed, StoreError> {
    // IMMEDIATE: the write lock from the start, so two processes
    // (a running releaser, `sqsbeat schedule`) cannot both lease a row.
    let mut tx = l.pool().begin_with("BEGIN IMMEDIATE").await?;
    let unordered = order_lite(&mut tx, r.limit).await?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE jobs SET status = 'releasing', lease = ?3, lease_until = ?4
          WHERE id IN (
            SELECT id FROM (
              SELECT id, due_at AS rank FROM jobs
               WHERE status = 'pending' AND substr(queue, -5) <> '.fifo' AND due_at <= ?2
                 AND (retry_at IS NULL OR retry_at <= ?1) AND (?5 IS NULL OR id = ?5)
              UNION ALL
              SELECT id, due_at FROM jobs
               WHERE status = 'pending' AND substr(queue, -5) = '.fifo' AND due_at <= ?1
                 AND (retry_at IS NULL OR retry_at <= ?1) AND (?5 IS NULL OR id = ?5)
              UNION ALL
              SELECT id, lease_until FROM jobs
               WHERE status = 'releasing' AND (lease_until <= ?1 OR lease_until IS NULL OR lease_until NOT GLOB {GLOB})
                 AND (?5 IS NULL OR id = ?5))
            ORDER BY rank {})
         RETURNING CAST(id AS TEXT) AS row_key, {COLS}",
        lite_limit(r.limit)
    )))
    .bind(Ts(r.now))
    .bind(Ts(horizon))
    .bind(Id(r.token))
    .bind(Ts(lease_until))
    .bind(r.only.map(Id))
    .fetch_all(&mut *tx)
    .await?;
    let mut claimed = split(rows.iter().map(|row| (row.try_get("row_key"), decode(row))));
    if !claimed.failed.is_empty() {
        let failed: Vec<Value> = claimed
            .failed
            .iter()
            .map(|(id, why)| serde_json::json!([id, why]))
            .collect();
        sqlx::query(
            "UPDATE jobs SET status = 'failed', last_error = j.value ->> 1, lease = NULL, lease_until = NULL
               FROM json_each(?1) AS j WHERE jobs.id = j.value ->> 0 AND jobs.lease = ?2",
        )
        .bind(Value::Array(failed).to_string())
        .bind(Id(r.token))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    // RETURNING gives no order on SQLite.
    claimed.rows.sort_by_key(|j| j.due_at);
    claimed.failed.extend(unordered);
    Ok(claimed)
}

/// Pending SQLite rows whose `due_at` or `retry_at` is not in
/// [`text_form::text`]'s form (written by hand: an offset, no fraction,
/// `infinity`). SQLite compares instants as text, which is time order only
/// in that form, so such a row would be claimed hours early or late, or
/// never. Each is rewritten in that form here, in the claim's transaction,
/// or marked failed with the reason when it holds no instant that form
/// can order; the failed ones are returned as [`Claimed::failed`] lists
/// them.
async fn order_lite(
    tx: &mut sqlx::SqliteConnection,
    limit: i64,
) -> Result<Vec<(String, String)>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT rowid, CAST(id AS TEXT) AS row_key, due_at, retry_at FROM jobs
          WHERE status = 'pending' AND (due_at NOT GLOB {GLOB} OR retry_at NOT GLOB {GLOB}) {}",
        lite_limit(limit)
    )))
    .fetch_all(&mut *tx)
    .await?;
    let mut failed = Vec::new();
    for row in &rows {
        let rowid: i64 = row.try_get("rowid")?;
        match in_order(row, "due_at").and_then(|due| Ok((due, in_order(row, "retry_at")?))) {
            Ok((due, retry)) => {
                sqlx::query(
                    "UPDATE jobs SET due_at = coalesce(?2, due_at), retry_at = ?3 WHERE rowid = ?1",
                )
                .bind(rowid)
                .bind(due)
                .bind(retry)
                .execute(&mut *tx)
                .await?;
            }
            Err(why) => {
                sqlx::query("UPDATE jobs SET status = 'failed', last_error = ?2 WHERE rowid = ?1")
                    .bind(rowid)
                    .bind(&why)
                    .execute(&mut *tx)
                    .await?;
                let key = row
                    .try_get("row_key")
                    .unwrap_or_else(|_| format!("rowid {rowid}"));
                failed.push((key, why));
            }
        }
    }
    Ok(failed)
}

/// A column's instant in [`text_form::text`]'s form, or why it has none.
fn in_order(row: &sqlx::sqlite::SqliteRow, column: &str) -> Result<Option<String>, String> {
    let why = |reason: String| format!("cannot read column {column}: {reason}");
    let Some(s) = row
        .try_get::<Option<String>, _>(column)
        .map_err(|e| why(e.to_string()))?
    else {
        return Ok(None);
    };
    let t = text_form::text(text_form::parse(&s).map_err(why)?);
    if text_form::is_canonical(&t) {
        Ok(Some(t))
    } else {
        Err(why(format!(
            "{s:?} is outside the years 0 to 9999, which SQLite's text instants cannot order"
        )))
    }
}

/// Splits decoded rows into those leased and those to mark failed.
fn split(
    rows: impl Iterator<Item = (Result<String, sqlx::Error>, Result<JobRow, StoreError>)>,
) -> Claimed {
    let mut out = Claimed::default();
    for (key, row) in rows {
        match (key, row) {
            (_, Ok(job)) => out.rows.push(job),
            (Ok(key), Err(StoreError::Decode { column, reason, .. })) => out
                .failed
                .push((key, format!("cannot read column {column}: {reason}"))),
            (Ok(key), Err(e)) => out.failed.push((key, e.to_string())),
            // The key is selected as text from a NOT NULL column: unreachable
            // in practice, and such a row stays leased until its lease ends.
            (Err(_), Err(_)) => {}
        }
    }
    out
}

/// How each leased job ended this pass.
#[derive(Debug, Default)]
pub struct Settlement {
    pub released: Vec<Uuid>,
    /// Send failed: pending again, to be tried at the given instant.
    pub retry: Vec<(Uuid, String, DateTime<Utc>)>,
    /// Cannot ever be sent (expired, invalid row): marked failed.
    pub failed: Vec<(Uuid, String)>,
    /// Claimed but not sent this pass (its window not open after all):
    /// pending again, attempts unchanged.
    pub unclaimed: Vec<Uuid>,
}

impl Settlement {
    fn len(&self) -> usize {
        self.released.len() + self.retry.len() + self.failed.len() + self.unclaimed.len()
    }
}

/// What a settle wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SettleOutcome {
    pub settled: u64,
    /// Rows no longer under this token (the lease ended and another pass
    /// claimed them, or someone changed them by hand): left as they are.
    pub lost: u64,
    /// Rows whose outcome the database refused to record, and its answer:
    /// marked failed instead where it took that, else left `releasing`
    /// until their lease ends. The other rows of the pass are settled.
    pub refused: Vec<(Uuid, String)>,
}

/// Records the outcomes of the pass `token` at `now`, in one short
/// transaction, on the rows still under its lease. An empty settlement
/// writes nothing. Should the database refuse the transaction (a value
/// in one row it cannot write), each row is settled on its own: one row
/// must not leave the whole pass `releasing`, to be sent again when its
/// lease ends.
pub async fn settle(
    store: &Store,
    token: Uuid,
    s: &Settlement,
    now: DateTime<Utc>,
) -> Result<SettleOutcome, StoreError> {
    let wanted = s.len() as u64;
    if wanted == 0 {
        return Ok(SettleOutcome::default());
    }
    let (settled, refused) = match settle_once(store, token, s, now).await {
        Ok(n) => (n, Vec::new()),
        Err(e) if refused_for_a_value(&e) => settle_each(store, token, s, now).await?,
        Err(e) => return Err(e),
    };
    Ok(SettleOutcome {
        settled,
        lost: wanted.saturating_sub(settled + refused.len() as u64),
        refused,
    })
}

async fn settle_once(
    store: &Store,
    token: Uuid,
    s: &Settlement,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    match store {
        Store::Postgres(pg) => settle_pg(pg, token, s, now).await,
        Store::Sqlite(l) => settle_lite(l, token, s, now).await,
    }
}

/// [`settle`] one row at a time. A row whose outcome the database still
/// refuses is marked failed with its answer where it takes that, so it is
/// not sent again and again; such rows are returned, not counted settled.
async fn settle_each(
    store: &Store,
    token: Uuid,
    s: &Settlement,
    now: DateTime<Utc>,
) -> Result<(u64, Vec<(Uuid, String)>), StoreError> {
    let mut rows: Vec<(Uuid, &str, Settlement)> = Vec::with_capacity(s.len());
    for id in &s.released {
        let mut one = Settlement::default();
        one.released.push(*id);
        rows.push((*id, "it was sent to SQS", one));
    }
    for r in &s.retry {
        let mut one = Settlement::default();
        one.retry.push(r.clone());
        rows.push((r.0, "its send failed", one));
    }
    for f in &s.failed {
        let mut one = Settlement::default();
        one.failed.push(f.clone());
        rows.push((f.0, "it cannot be sent", one));
    }
    for id in &s.unclaimed {
        let mut one = Settlement::default();
        one.unclaimed.push(*id);
        rows.push((*id, "it was not sent", one));
    }
    let (mut settled, mut refused) = (0, Vec::new());
    for (id, what, row) in rows {
        let e = match settle_once(store, token, &row, now).await {
            Ok(n) => {
                settled += n;
                continue;
            }
            Err(e) if refused_for_a_value(&e) => e.to_string(),
            Err(e) => return Err(e),
        };
        let why =
            format!("{what}, but the database refused to record that: {e}; fix or delete this row");
        let failed = Settlement {
            failed: vec![(id, why)],
            ..Settlement::default()
        };
        match settle_once(store, token, &failed, now).await {
            Ok(_) => {}
            Err(e) if refused_for_a_value(&e) => {}
            Err(e) => return Err(e),
        }
        refused.push((id, e));
    }
    Ok((settled, refused))
}

/// Whether the database refused a statement for what a row holds (a
/// value out of range, a constraint, a trigger's exception) rather than
/// for the moment (a lock, a conflict, a shutdown: the pass fails and its
/// rows are settled by a later one). Only the former is worth settling
/// row by row, and only it may mark a row failed.
fn refused_for_a_value(e: &StoreError) -> bool {
    let StoreError::Db(sqlx::Error::Database(db)) = e else {
        return false;
    };
    let Some(code) = db.code() else {
        return false;
    };
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // Primary codes: SQLITE_TOOBIG, SQLITE_CONSTRAINT (RAISE in a
        // trigger too), SQLITE_MISMATCH.
        return code
            .parse::<i64>()
            .is_ok_and(|c| matches!(c & 0xff, 18..=20));
    }
    // SQLSTATE classes: data exception, integrity constraint violation,
    // an exception raised in PL/pgSQL.
    ["22", "23", "P0"]
        .iter()
        .any(|class| code.starts_with(class))
}

/// Each UPDATE only touches rows still under `token`'s lease.
async fn settle_pg(
    pg: &super::PgStore,
    token: Uuid,
    s: &Settlement,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let mut tx = pg.pool().begin().await?;
    let mut n = 0;
    if !s.released.is_empty() {
        n += sqlx::query(
            "UPDATE jobs SET status = 'released', released_at = $3, attempts = least(attempts, 2147483646) + 1, last_error = NULL,
                    retry_at = NULL, lease = NULL, lease_until = NULL
              WHERE id = ANY($1) AND status = 'releasing' AND lease = $2",
        )
        .bind(&s.released)
        .bind(token)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    if !s.retry.is_empty() {
        let ids: Vec<Uuid> = s.retry.iter().map(|r| r.0).collect();
        let why: Vec<&str> = s.retry.iter().map(|r| r.1.as_str()).collect();
        let at: Vec<DateTime<Utc>> = s.retry.iter().map(|r| r.2).collect();
        n += sqlx::query(
            "UPDATE jobs SET status = 'pending', attempts = least(jobs.attempts, 2147483646) + 1, last_error = u.why, retry_at = u.at,
                    lease = NULL, lease_until = NULL
               FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[]) AS u(id, why, at)
              WHERE jobs.id = u.id AND jobs.status = 'releasing' AND jobs.lease = $4",
        )
        .bind(&ids)
        .bind(&why)
        .bind(&at)
        .bind(token)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    if !s.failed.is_empty() {
        let ids: Vec<Uuid> = s.failed.iter().map(|r| r.0).collect();
        let why: Vec<&str> = s.failed.iter().map(|r| r.1.as_str()).collect();
        n += sqlx::query(
            "UPDATE jobs SET status = 'failed', last_error = u.why, lease = NULL, lease_until = NULL
               FROM UNNEST($1::uuid[], $2::text[]) AS u(id, why)
              WHERE jobs.id = u.id AND jobs.status = 'releasing' AND jobs.lease = $3",
        )
        .bind(&ids)
        .bind(&why)
        .bind(token)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    if !s.unclaimed.is_empty() {
        n += sqlx::query(
            "UPDATE jobs SET status = 'pending', lease = NULL, lease_until = NULL
              WHERE id = ANY($1) AND status = 'releasing' AND lease = $2",
        )
        .bind(&s.unclaimed)
        .bind(token)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(n)
}

async fn settle_lite(
    l: &super::SqliteStore,
    token: Uuid,
    s: &Settlement,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let mut tx = l.pool().begin_with("BEGIN IMMEDIATE").await?;
    let mut n = 0;
    if !s.released.is_empty() {
        let ids: Vec<String> = s.released.iter().map(Uuid::to_string).collect();
        n += sqlx::query(
            "UPDATE jobs SET status = 'released', released_at = ?3, attempts = min(attempts, 2147483646) + 1, last_error = NULL,
                    retry_at = NULL, lease = NULL, lease_until = NULL
              WHERE id IN (SELECT value FROM json_each(?1)) AND status = 'releasing' AND lease = ?2",
        )
        .bind(Value::from(ids).to_string())
        .bind(Id(token))
        .bind(Ts(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    if !s.retry.is_empty() {
        let rows: Vec<Value> = s
            .retry
            .iter()
            .map(|(id, why, at)| {
                serde_json::json!([id.to_string(), why, super::sqlite::codec::text(*at)])
            })
            .collect();
        n += sqlx::query(
            "UPDATE jobs SET status = 'pending', attempts = min(jobs.attempts, 2147483646) + 1, last_error = j.value ->> 1,
                    retry_at = j.value ->> 2, lease = NULL, lease_until = NULL
               FROM json_each(?1) AS j
              WHERE jobs.id = j.value ->> 0 AND jobs.status = 'releasing' AND jobs.lease = ?2",
        )
        .bind(Value::Array(rows).to_string())
        .bind(Id(token))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    if !s.failed.is_empty() {
        let rows: Vec<Value> = s
            .failed
            .iter()
            .map(|(id, why)| serde_json::json!([id.to_string(), why]))
            .collect();
        n += sqlx::query(
            "UPDATE jobs SET status = 'failed', last_error = j.value ->> 1, lease = NULL, lease_until = NULL
               FROM json_each(?1) AS j
              WHERE jobs.id = j.value ->> 0 AND jobs.status = 'releasing' AND jobs.lease = ?2",
        )
        .bind(Value::Array(rows).to_string())
        .bind(Id(token))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    if !s.unclaimed.is_empty() {
        let ids: Vec<String> = s.unclaimed.iter().map(Uuid::to_string).collect();
        n += sqlx::query(
            "UPDATE jobs SET status = 'pending', lease = NULL, lease_until = NULL
              WHERE id IN (SELECT value FROM json_each(?1)) AND status = 'releasing' AND lease = ?2",
        )
        .bind(Value::from(ids).to_string())
        .bind(Id(token))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(n)
}

/// Extends the lease of the pass `token` to `until`, while its sends are
/// still under way; returns how many rows it still holds.
pub async fn renew(store: &Store, token: Uuid, until: DateTime<Utc>) -> Result<u64, StoreError> {
    let n = match store {
        Store::Postgres(pg) => sqlx::query(
            "UPDATE jobs SET lease_until = $2 WHERE lease = $1 AND status = 'releasing'",
        )
        .bind(token)
        .bind(until)
        .execute(pg.pool())
        .await?
        .rows_affected(),
        Store::Sqlite(l) => sqlx::query(
            "UPDATE jobs SET lease_until = ?2 WHERE lease = ?1 AND status = 'releasing'",
        )
        .bind(Id(token))
        .bind(Ts(until))
        .execute(l.pool())
        .await?
        .rows_affected(),
    };
    Ok(n)
}

/// Pending jobs by how soon they are due: overdue, within 15 minutes, an
/// hour, a day, a week, later.
pub async fn pending_by_bucket(
    store: &Store,
    now: DateTime<Utc>,
) -> Result<Vec<(&'static str, i64)>, StoreError> {
    const NAMES: [&str; 6] = ["overdue", "15m", "1h", "1d", "7d", "later"];
    let edge = |secs: i64| now + Duration::seconds(secs);
    let edges = [
        edge(0),
        edge(15 * 60),
        edge(3600),
        edge(86_400),
        edge(7 * 86_400),
    ];
    // Cumulative counts below each edge, and the total, in one statement.
    let counts: (i64, i64, i64, i64, i64, i64) = match store {
        Store::Postgres(pg) => {
            sqlx::query_as(
                "SELECT coalesce(sum(CASE WHEN due_at < $1 THEN 1 ELSE 0 END), 0),
                        coalesce(sum(CASE WHEN due_at < $2 THEN 1 ELSE 0 END), 0),
                        coalesce(sum(CASE WHEN due_at < $3 THEN 1 ELSE 0 END), 0),
                        coalesce(sum(CASE WHEN due_at < $4 THEN 1 ELSE 0 END), 0),
                        coalesce(sum(CASE WHEN due_at < $5 THEN 1 ELSE 0 END), 0),
                        count(*)
                   FROM jobs WHERE status = 'pending'",
            )
            .bind(edges[0])
            .bind(edges[1])
            .bind(edges[2])
            .bind(edges[3])
            .bind(edges[4])
            .fetch_one(pg.pool())
            .await?
        }
        Store::Sqlite(l) => {
            sqlx::query_as(
                "SELECT coalesce(sum(CASE WHEN due_at < ?1 THEN 1 ELSE 0 END), 0),
                        coalesce(sum(CASE WHEN due_at < ?2 THEN 1 ELSE 0 END), 0),
                        coalesce(sum(CASE WHEN due_at < ?3 THEN 1 ELSE 0 END), 0),
                        coalesce(sum(CASE WHEN due_at < ?4 THEN 1 ELSE 0 END), 0),
                        coalesce(sum(CASE WHEN due_at < ?5 THEN 1 ELSE 0 END), 0),
                        count(*)
                   FROM jobs WHERE status = 'pending'",
            )
            .bind(Ts(edges[0]))
            .bind(Ts(edges[1]))
            .bind(Ts(edges[2]))
            .bind(Ts(edges[3]))
            .bind(Ts(edges[4]))
            .fetch_one(l.pool())
            .await?
        }
    };
    let cumulative = [counts.0, counts.1, counts.2, counts.3, counts.4, counts.5];
    let mut below = 0;
    Ok(NAMES
        .into_iter()
        .zip(cumulative)
        .map(|(name, n)| {
            let here = n - below;
            below = n;
            (name, here)
        })
        .collect())
}

/// Jobs failing (pending with an error: retrying) or failed, newest due
/// first. A row whose due instant cannot be read is listed without one.
pub async fn failing(store: &Store, limit: i64) -> Result<Vec<Failure>, StoreError> {
    fn failure<R>(row: &R) -> Result<Failure, StoreError>
    where
        R: Row,
        &'static str: sqlx::ColumnIndex<R>,
        for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> Ts: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        Ok(Failure {
            kind: "job",
            name: row.try_get("row_key")?,
            at: row.try_get::<Ts, _>("due_at").ok().map(|t| t.0),
            attempts: i64::from(row.try_get::<i32, _>("attempts")?),
            error: row.try_get("last_error")?,
        })
    }
    match store {
        Store::Postgres(pg) => sqlx::query(
            "SELECT id::text AS row_key, due_at, attempts, last_error FROM jobs
              WHERE last_error IS NOT NULL AND status IN ('pending', 'failed') ORDER BY due_at DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(pg.pool())
        .await?
        .iter()
        .map(failure)
        .collect(),
        Store::Sqlite(l) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT CAST(id AS TEXT) AS row_key, due_at, attempts, last_error FROM jobs
              WHERE last_error IS NOT NULL AND status IN ('pending', 'failed') ORDER BY due_at DESC {}",
            lite_limit(limit)
        )))
        .fetch_all(l.pool())
        .await?
        .iter()
        .map(failure)
        .collect(),
    }
}

mod codec {
    //! [`JobStatus`] as text on both backends.
    use super::JobStatus;
    use sqlx::encode::IsNull;
    use sqlx::error::BoxDynError;
    use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef, Postgres};
    use sqlx::sqlite::{Sqlite, SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};
    use sqlx::{Decode, Encode, Type};

    impl Type<Postgres> for JobStatus {
        fn type_info() -> PgTypeInfo {
            <String as Type<Postgres>>::type_info()
        }
        fn compatible(ty: &PgTypeInfo) -> bool {
            <String as Type<Postgres>>::compatible(ty)
        }
    }
    impl Encode<'_, Postgres> for JobStatus {
        fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
            Encode::<Postgres>::encode(self.as_str(), buf)
        }
    }
    impl<'r> Decode<'r, Postgres> for JobStatus {
        fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
            <&str as Decode<Postgres>>::decode(value)?
                .parse()
                .map_err(Into::into)
        }
    }
    impl Type<Sqlite> for JobStatus {
        fn type_info() -> SqliteTypeInfo {
            <String as Type<Sqlite>>::type_info()
        }
        fn compatible(ty: &SqliteTypeInfo) -> bool {
            <String as Type<Sqlite>>::compatible(ty)
        }
    }
    impl Encode<'_, Sqlite> for JobStatus {
        fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
            Encode::<Sqlite>::encode(self.as_str(), buf)
        }
    }
    impl<'r> Decode<'r, Sqlite> for JobStatus {
        fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
            <&str as Decode<Sqlite>>::decode(value)?
                .parse()
                .map_err(Into::into)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_as_text() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!("done".parse::<JobStatus>().is_err());
    }

    /// A bound `LIMIT` makes SQLite prepare its statement again at every
    /// run (see [`lite_limit`]); the releaser runs these every second.
    #[test]
    fn no_sqlite_statement_binds_its_limit() {
        let source = include_str!("jobs.rs");
        let bound = ["LIMIT ", "?"].concat();
        let lines: Vec<&str> = source.lines().filter(|l| l.contains(&bound)).collect();
        assert!(lines.is_empty(), "{lines:#?}");
        assert_eq!(lite_limit(HEAD), "LIMIT 100");
    }
}
