//! Jobs read from the intake queue (`python/INTAKE.md`): every message of a
//! received batch is stored in one short transaction, keyed by its Celery
//! task id and decided by its `retries`, so a message SQS delivers twice is
//! one job. The caller deletes the messages from the queue only after
//! [`store_batch`] returned, and holds no transaction across any SQS call.
//!
//! | existing job with that id | action |
//! | --- | --- |
//! | none | insert |
//! | `cancelled`, no envelope (cancelled before it arrived) | store the message, still `cancelled` |
//! | `cancelled`, lower `retries` | replace the message, still `cancelled` |
//! | any status, same or higher `retries` | nothing: a duplicate or a stale copy |
//! | any other status, lower `retries` | replace it and make it pending again, lease cleared: a Celery retry of a task that ran |
//!
//! Clearing the lease matters: a replica that sent the previous attempt
//! and died before settling it left the row `releasing`; its late
//! settlement only touches rows still under its lease token.
//!
//! A cancelled job stays cancelled, as a Celery `revoke` drops every
//! message of its task id: `sqsbeat_celery.cancel()` may run before the
//! intake has read the task, and then leaves a `cancelled` row with no
//! envelope for the message to land on.
//!
//! Each message is written under its own savepoint: a row the database
//! refuses (a data or constraint error, such as a NUL character in a text
//! column) is [`Stored::Refused`] and the rest of the batch is stored.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::Row;
use uuid::Uuid;

use super::jobs::{IntakeMessage, JobStatus};
use super::sqlite::codec::NOW;
use super::{Id, Store, StoreError, Ts};
use crate::wire::intake::{Diverted, Known, Malformed};

/// One intake message as a jobs row.
#[derive(Debug, Clone, PartialEq)]
pub struct IntakeJob {
    pub id: Uuid,
    pub task: String,
    pub args: Value,
    pub kwargs: Value,
    pub queue: String,
    pub due_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub priority: i64,
    /// `pending`, or `failed` for a malformed message kept with its reason.
    pub status: JobStatus,
    pub last_error: Option<String>,
    pub retries: i64,
    pub scheduled_by: String,
    pub message: IntakeMessage,
}

/// Who a job read from the intake says scheduled it: the sending process.
fn by(origin: Option<&str>) -> String {
    match origin {
        Some(o) => format!("intake:{o}"),
        None => "intake".to_string(),
    }
}

impl IntakeJob {
    /// A message to release when due.
    pub fn pending(d: &Diverted) -> Self {
        IntakeJob {
            id: d.id,
            task: d.task.clone(),
            args: d.args.clone(),
            kwargs: d.kwargs.clone(),
            queue: d.queue.logical.clone(),
            due_at: d.due_at,
            expires_at: d.expires_at,
            priority: d.priority,
            status: JobStatus::Pending,
            last_error: None,
            retries: d.retries,
            scheduled_by: by(d.origin.as_deref()),
            message: IntakeMessage {
                envelope: d.envelope.clone(),
                body_base64: d.base64,
                sqs_queue: Some(d.queue.sqs.clone()),
                queue_url: d.queue_url.clone(),
                message_attributes: d.message_attributes.clone().map(Value::Object),
                group_id: d.group_id.clone(),
                dedup_id: d.dedup_id.clone(),
            },
        }
    }

    /// A malformed message, kept as a `failed` job with its reason and the
    /// envelope as received. `intake_queue` stands in for a destination
    /// that cannot be read.
    pub fn failed(k: &Known, m: &Malformed, message_id: &str, intake_queue: &str) -> Self {
        IntakeJob {
            id: k.id,
            task: k.task.clone(),
            args: json!([]),
            kwargs: json!({}),
            queue: k.queue.clone().unwrap_or_else(|| intake_queue.to_string()),
            due_at: k.due_at,
            expires_at: None,
            priority: 0,
            status: JobStatus::Failed,
            last_error: Some(format!(
                "intake message {message_id} is malformed: {}",
                m.reason
            )),
            retries: k.retries,
            scheduled_by: by(k.origin.as_deref()),
            message: IntakeMessage {
                envelope: m.text.clone(),
                body_base64: false,
                sqs_queue: None,
                queue_url: None,
                message_attributes: None,
                group_id: None,
                dedup_id: None,
            },
        }
    }
}

/// What storing one message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Inserted,
    /// A Celery retry: the job it replaced had this status and `retries`.
    Replaced {
        status: String,
        retries: i64,
    },
    /// Written into a job cancelled before (or after) the message came:
    /// it stays cancelled.
    Cancelled,
    /// Nothing written: a job with that id and as many `retries` or more
    /// exists (its status and `retries`, when this transaction saw it).
    Duplicate {
        existing: Option<(String, i64)>,
    },
    /// The database refused this row (its reason); nothing written for it.
    Refused {
        reason: String,
    },
}

/// Stores a batch in one transaction; one outcome per job, in order. On
/// an error nothing is stored (the messages come back from the queue);
/// a row the database refuses is one [`Stored::Refused`] outcome.
pub async fn store_batch(store: &Store, jobs: &[IntakeJob]) -> Result<Vec<Stored>, StoreError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    match store {
        Store::Postgres(pg) => store_pg(pg, jobs).await,
        Store::Sqlite(l) => store_lite(l, jobs).await,
    }
}

/// The columns every upsert writes, and what a replacement resets. A
/// cancelled job keeps its status and reason whatever comes.
const INSERT: &str = "INSERT INTO jobs (id, task, args, kwargs, queue, due_at, expires_at, priority, status, last_error,
                   scheduled_by, retries, envelope, body_base64, sqs_queue, queue_url, message_attributes, group_id, dedup_id";
const REPLACE: &str = "ON CONFLICT (id) DO UPDATE SET
        task = excluded.task, args = excluded.args, kwargs = excluded.kwargs, queue = excluded.queue,
        due_at = excluded.due_at, expires_at = excluded.expires_at, priority = excluded.priority,
        headers = excluded.headers,
        status = CASE WHEN jobs.status = 'cancelled' THEN jobs.status ELSE excluded.status END,
        last_error = CASE WHEN jobs.status = 'cancelled' THEN jobs.last_error ELSE excluded.last_error END,
        scheduled_by = excluded.scheduled_by, retries = excluded.retries, envelope = excluded.envelope,
        body_base64 = excluded.body_base64, sqs_queue = excluded.sqs_queue, queue_url = excluded.queue_url,
        message_attributes = excluded.message_attributes, group_id = excluded.group_id,
        dedup_id = excluded.dedup_id, attempts = 0, retry_at = NULL, released_at = NULL,
        lease = NULL, lease_until = NULL
      WHERE jobs.retries < excluded.retries
         OR (jobs.status = 'cancelled' AND jobs.envelope IS NULL)
      RETURNING status";

/// Decides each outcome from the rows seen before writing, kept current
/// through the batch (two messages of one task may arrive together).
struct Seen(std::collections::HashMap<Uuid, (String, i64)>);

impl Seen {
    /// `written`: the status the row has after the upsert, if it wrote.
    fn outcome(&mut self, j: &IntakeJob, written: Option<String>) -> Stored {
        let before = self.0.get(&j.id).cloned();
        if let Some(status) = &written {
            self.0.insert(j.id, (status.clone(), j.retries));
        }
        match (written, before) {
            (Some(s), _) if s == JobStatus::Cancelled.as_str() => Stored::Cancelled,
            (Some(_), None) => Stored::Inserted,
            (Some(_), Some((status, retries))) => Stored::Replaced { status, retries },
            (None, existing) => Stored::Duplicate { existing },
        }
    }
}

fn retries_i32(j: &IntakeJob) -> i32 {
    // The reader refuses a count beyond i64; beyond i32 is no retry count
    // Celery reaches (its max_retries defaults to 3).
    i32::try_from(j.retries).unwrap_or(i32::MAX)
}

/// Whether the database refused one row for what it holds, not for the
/// transaction or the connection: a data exception (SQLSTATE class 22,
/// such as a NUL character in text or `\u0000` in jsonb) or an integrity
/// constraint (class 23; on SQLite, any constraint). The reason names the
/// code and the constraint, not PostgreSQL's message, which can quote the
/// value (`invalid input syntax for type ...: "..."`).
fn refused(e: &sqlx::Error) -> Option<String> {
    let sqlx::Error::Database(d) = e else {
        return None;
    };
    let code = d.code().unwrap_or_default();
    if d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
    {
        let kind = match code.get(..2) {
            Some("22") => "a value the column cannot hold",
            Some("23") => "a constraint",
            _ => return None,
        };
        let constraint = d.constraint().map(|c| format!(" {c}")).unwrap_or_default();
        return Some(format!(
            "the database refused the row: {kind}{constraint} (SQLSTATE {code})"
        ));
    }
    // SQLite: the primary result code is the low byte of the extended one;
    // SQLITE_TOOBIG 18, SQLITE_CONSTRAINT 19, SQLITE_MISMATCH 20. Its
    // messages name the constraint or the column, not the value.
    code.parse::<i32>()
        .is_ok_and(|c| matches!(c & 0xff, 18..=20))
        .then(|| format!("the database refused the row: {}", d.message()))
}

async fn store_pg(pg: &super::PgStore, jobs: &[IntakeJob]) -> Result<Vec<Stored>, StoreError> {
    use sqlx::Acquire as _;
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    let mut tx = pg.pool().begin().await?;
    let rows = sqlx::query("SELECT id, status, retries FROM jobs WHERE id = ANY($1) FOR UPDATE")
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
    let mut seen = Seen(
        rows.iter()
            .filter_map(|r| {
                let id: Uuid = r.try_get("id").ok()?;
                let status: String = r.try_get("status").ok()?;
                let retries: i32 = r.try_get("retries").ok()?;
                Some((id, (status, i64::from(retries))))
            })
            .collect(),
    );
    let sql = format!(
        "{INSERT}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) {REPLACE}"
    );
    let mut out = Vec::with_capacity(jobs.len());
    for j in jobs {
        let mut one = (&mut tx).begin().await?;
        let written = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(j.id)
            .bind(&j.task)
            .bind(&j.args)
            .bind(&j.kwargs)
            .bind(&j.queue)
            .bind(j.due_at)
            .bind(j.expires_at)
            .bind(i32::try_from(j.priority).unwrap_or(0))
            .bind(j.status)
            .bind(&j.last_error)
            .bind(&j.scheduled_by)
            .bind(retries_i32(j))
            .bind(&j.message.envelope)
            .bind(j.message.body_base64)
            .bind(&j.message.sqs_queue)
            .bind(&j.message.queue_url)
            .bind(&j.message.message_attributes)
            .bind(&j.message.group_id)
            .bind(&j.message.dedup_id)
            .fetch_optional(&mut *one)
            .await;
        out.push(settle_one(one, written, j, &mut seen).await?);
    }
    tx.commit().await?;
    Ok(out)
}

/// Releases one message's savepoint, or rolls back to it when the
/// database refused the row; any other error fails the batch.
async fn settle_one<DB: sqlx::Database>(
    one: sqlx::Transaction<'_, DB>,
    written: Result<Option<String>, sqlx::Error>,
    j: &IntakeJob,
    seen: &mut Seen,
) -> Result<Stored, StoreError> {
    match written {
        Ok(w) => {
            one.commit().await?;
            Ok(seen.outcome(j, w))
        }
        Err(e) => match refused(&e) {
            Some(reason) => {
                one.rollback().await?;
                Ok(Stored::Refused { reason })
            }
            None => Err(e.into()),
        },
    }
}

/// SQLite: the messages are deleted from SQS once this returns, so the
/// commit is synced to disk first (FULL), whatever the daemon's NORMAL,
/// which a power cut can undo.
async fn store_lite(l: &super::SqliteStore, jobs: &[IntakeJob]) -> Result<Vec<Stored>, StoreError> {
    let mut conn = l.pool().acquire().await?;
    l.set_durable(&mut conn, true).await?;
    let stored = write_lite(&mut conn, jobs).await;
    // Committed (or rolled back) by now: a failure here leaves only a
    // slower connection, not a reason to have the messages come back.
    let _ = l.set_durable(&mut conn, false).await;
    stored
}

async fn write_lite(
    conn: &mut sqlx::SqliteConnection,
    jobs: &[IntakeJob],
) -> Result<Vec<Stored>, StoreError> {
    use sqlx::{Acquire as _, Connection as _};
    let ids: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
    // IMMEDIATE: the write lock from the start, so the rows read are the
    // rows the upserts meet.
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let rows = sqlx::query(
        "SELECT CAST(id AS TEXT) AS id, status, retries FROM jobs WHERE id IN (SELECT value FROM json_each(?1))",
    )
    .bind(Value::from(ids).to_string())
    .fetch_all(&mut *tx)
    .await?;
    let mut seen = Seen(
        rows.iter()
            .filter_map(|r| {
                let id: String = r.try_get("id").ok()?;
                let status: String = r.try_get("status").ok()?;
                let retries: i64 = r.try_get("retries").ok()?;
                Some((Uuid::parse_str(&id).ok()?, (status, retries)))
            })
            .collect(),
    );
    let sql = format!(
        "{INSERT}, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, {NOW}) {REPLACE}"
    );
    let mut out = Vec::with_capacity(jobs.len());
    for j in jobs {
        let mut one = (&mut tx).begin().await?;
        let written = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(Id(j.id))
            .bind(&j.task)
            .bind(&j.args)
            .bind(&j.kwargs)
            .bind(&j.queue)
            .bind(Ts(j.due_at))
            .bind(j.expires_at.map(Ts))
            .bind(i32::try_from(j.priority).unwrap_or(0))
            .bind(j.status)
            .bind(&j.last_error)
            .bind(&j.scheduled_by)
            .bind(retries_i32(j))
            .bind(&j.message.envelope)
            .bind(j.message.body_base64)
            .bind(&j.message.sqs_queue)
            .bind(&j.message.queue_url)
            .bind(&j.message.message_attributes)
            .bind(&j.message.group_id)
            .bind(&j.message.dedup_id)
            .fetch_optional(&mut *one)
            .await;
        out.push(settle_one(one, written, j, &mut seen).await?);
    }
    tx.commit().await?;
    Ok(out)
}
