//! Jobs read from the intake queue (`python/INTAKE.md`): every message of a
//! received batch is stored in one short transaction, keyed by its Celery
//! task id and decided by its `retries`, so a message SQS delivers twice is
//! one job. The caller deletes the messages from the queue only after
//! [`store_batch`] returned, and holds no transaction across any SQS call.
//!
//! | existing job with that id | action |
//! | --- | --- |
//! | none | insert |
//! | any status, same or higher `retries` | nothing: a duplicate or a stale copy |
//! | any status, lower `retries` | replace it and make it pending again, lease cleared: a Celery retry of a task that ran |
//!
//! Clearing the lease matters: a replica that sent the previous attempt
//! and died before settling it left the row `releasing`; its late
//! settlement only touches rows still under its lease token.

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
    /// Nothing written: a job with that id and as many `retries` or more
    /// exists (its status and `retries`, when this transaction saw it).
    Duplicate {
        existing: Option<(String, i64)>,
    },
}

/// Stores a batch in one transaction; one outcome per job, in order. On
/// an error nothing is stored (the messages come back from the queue).
pub async fn store_batch(store: &Store, jobs: &[IntakeJob]) -> Result<Vec<Stored>, StoreError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    match store {
        Store::Postgres(pg) => store_pg(pg, jobs).await,
        Store::Sqlite(l) => store_lite(l, jobs).await,
    }
}

/// The columns every upsert writes, and what a replacement resets.
const INSERT: &str = "INSERT INTO jobs (id, task, args, kwargs, queue, due_at, expires_at, priority, status, last_error,
                   scheduled_by, retries, envelope, body_base64, sqs_queue, queue_url, message_attributes, group_id, dedup_id";
const REPLACE: &str = "ON CONFLICT (id) DO UPDATE SET
        task = excluded.task, args = excluded.args, kwargs = excluded.kwargs, queue = excluded.queue,
        due_at = excluded.due_at, expires_at = excluded.expires_at, priority = excluded.priority,
        headers = excluded.headers, status = excluded.status, last_error = excluded.last_error,
        scheduled_by = excluded.scheduled_by, retries = excluded.retries, envelope = excluded.envelope,
        body_base64 = excluded.body_base64, sqs_queue = excluded.sqs_queue, queue_url = excluded.queue_url,
        message_attributes = excluded.message_attributes, group_id = excluded.group_id,
        dedup_id = excluded.dedup_id, attempts = 0, retry_at = NULL, released_at = NULL,
        lease = NULL, lease_until = NULL
      WHERE jobs.retries < excluded.retries";

/// Decides each outcome from the rows seen before writing, kept current
/// through the batch (two messages of one task may arrive together).
struct Seen(std::collections::HashMap<Uuid, (String, i64)>);

impl Seen {
    fn outcome(&mut self, j: &IntakeJob, written: bool) -> Stored {
        let before = self.0.get(&j.id).cloned();
        if written {
            self.0
                .insert(j.id, (j.status.as_str().to_string(), j.retries));
        }
        match (written, before) {
            (true, None) => Stored::Inserted,
            (true, Some((status, retries))) => Stored::Replaced { status, retries },
            (false, existing) => Stored::Duplicate { existing },
        }
    }
}

fn retries_i32(j: &IntakeJob) -> i32 {
    // The reader refuses a count beyond i64; beyond i32 is no retry count
    // Celery reaches (its max_retries defaults to 3).
    i32::try_from(j.retries).unwrap_or(i32::MAX)
}

async fn store_pg(pg: &super::PgStore, jobs: &[IntakeJob]) -> Result<Vec<Stored>, StoreError> {
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
        let n = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
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
            .execute(&mut *tx)
            .await?
            .rows_affected();
        out.push(seen.outcome(j, n == 1));
    }
    tx.commit().await?;
    Ok(out)
}

async fn store_lite(l: &super::SqliteStore, jobs: &[IntakeJob]) -> Result<Vec<Stored>, StoreError> {
    let ids: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
    // IMMEDIATE: the write lock from the start, so the rows read are the
    // rows the upserts meet.
    let mut tx = l.pool().begin_with("BEGIN IMMEDIATE").await?;
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
        let n = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
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
            .execute(&mut *tx)
            .await?
            .rows_affected();
        out.push(seen.outcome(j, n == 1));
    }
    tx.commit().await?;
    Ok(out)
}
