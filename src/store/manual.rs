//! The manual_runs table: the ledger of `sqsbeat entries run`. A manual
//! run has no slot, so it is keyed by its own (random) task id rather than
//! the ledger's (entry, slot): it can never take a real slot's place, it
//! moves no cursor, and a leader never re-sends it as an unconfirmed claim
//! (it could not: the id is not derived from anything). Claimed before the
//! send, settled after, like a fire.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::sqlite::codec::NOW;
use super::{Id, Store, StoreError, Ts, decode_row};

/// One manual run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManualRun {
    pub task_id: Uuid,
    pub entry: String,
    /// When it was asked for: its `sqsbeat_scheduled_at`.
    pub requested_at: DateTime<Utc>,
    pub queue: String,
    pub actor: String,
    /// `claimed` (being sent, or the sender died before knowing), `sent`
    /// or `failed`.
    pub outcome: String,
    pub error: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Record {
    task_id: Id,
    entry: String,
    requested_at: Ts,
    queue: String,
    actor: String,
    outcome: String,
    error: Option<String>,
}

impl From<Record> for ManualRun {
    fn from(r: Record) -> Self {
        ManualRun {
            task_id: r.task_id.0,
            entry: r.entry,
            requested_at: r.requested_at.0,
            queue: r.queue,
            actor: r.actor,
            outcome: r.outcome,
            error: r.error,
        }
    }
}

/// Records a run about to be sent (outcome `claimed`).
pub async fn claim(store: &Store, run: &ManualRun) -> Result<(), StoreError> {
    match store {
        Store::Postgres(s) => {
            sqlx::query(
                "INSERT INTO manual_runs (task_id, entry, requested_at, queue, actor, outcome)
                 VALUES ($1, $2, $3, $4, $5, 'claimed')",
            )
            .bind(run.task_id)
            .bind(&run.entry)
            .bind(run.requested_at)
            .bind(&run.queue)
            .bind(&run.actor)
            .execute(s.pool())
            .await?;
        }
        Store::Sqlite(s) => {
            sqlx::query(
                "INSERT INTO manual_runs (task_id, entry, requested_at, queue, actor, outcome)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'claimed')",
            )
            .bind(Id(run.task_id))
            .bind(&run.entry)
            .bind(Ts(run.requested_at))
            .bind(&run.queue)
            .bind(&run.actor)
            .execute(s.pool())
            .await?;
        }
    }
    Ok(())
}

/// Records the outcome of the send: `sent`, or `failed` with the error.
pub async fn settle(
    store: &Store,
    task_id: Uuid,
    outcome: Result<(), &str>,
) -> Result<(), StoreError> {
    let (status, error) = match outcome {
        Ok(()) => ("sent", None),
        Err(e) => ("failed", Some(e)),
    };
    match store {
        Store::Postgres(s) => {
            sqlx::query(
                "UPDATE manual_runs SET outcome = $2, error = $3,
                   sent_at = CASE WHEN $2 = 'sent' THEN now() END WHERE task_id = $1",
            )
            .bind(task_id)
            .bind(status)
            .bind(error)
            .execute(s.pool())
            .await?;
        }
        Store::Sqlite(s) => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE manual_runs SET outcome = ?2, error = ?3,
                   sent_at = CASE WHEN ?2 = 'sent' THEN {NOW} END WHERE task_id = ?1"
            )))
            .bind(Id(task_id))
            .bind(status)
            .bind(error)
            .execute(s.pool())
            .await?;
        }
    }
    Ok(())
}

const LATEST: &str = "SELECT task_id AS row_key, task_id, entry, requested_at, queue, actor, outcome, error FROM (
    SELECT *, row_number() OVER (PARTITION BY entry ORDER BY requested_at DESC) AS n FROM manual_runs
) AS m WHERE n = 1";

/// Each entry's latest manual run (what `sqsbeat status` shows). Rows that
/// cannot be read are left out.
pub async fn latest(store: &Store) -> Result<HashMap<String, ManualRun>, StoreError> {
    let runs: Vec<ManualRun> = match store {
        Store::Postgres(s) => sqlx::query(sqlx::AssertSqlSafe(
            LATEST.replace("task_id AS row_key", "task_id::text AS row_key"),
        ))
        .fetch_all(s.pool())
        .await?
        .iter()
        .filter_map(|r| decode_row::<_, Record>("manual_runs", r).ok())
        .map(ManualRun::from)
        .collect(),
        Store::Sqlite(s) => sqlx::query(sqlx::AssertSqlSafe(
            LATEST.replace("task_id AS row_key", "CAST(task_id AS TEXT) AS row_key"),
        ))
        .fetch_all(s.pool())
        .await?
        .iter()
        .filter_map(|r| decode_row::<_, Record>("manual_runs", r).ok())
        .map(ManualRun::from)
        .collect(),
    };
    Ok(runs.into_iter().map(|r| (r.entry.clone(), r)).collect())
}

/// The latest manual run of each of `entries` that has one: one probe of
/// the (entry, requested_at) index each, for a page of the status. Rows
/// that cannot be read are left out.
pub async fn latest_of(
    store: &Store,
    entries: &[String],
) -> Result<HashMap<String, ManualRun>, StoreError> {
    if entries.is_empty() {
        return Ok(HashMap::new());
    }
    let runs: Vec<ManualRun> = match store {
        Store::Postgres(s) => sqlx::query(
            "SELECT m.task_id::text AS row_key, m.task_id, m.entry, m.requested_at, m.queue, m.actor, m.outcome, m.error
               FROM UNNEST($1::text[]) AS u(e)
               CROSS JOIN LATERAL (
                 SELECT * FROM manual_runs WHERE entry = u.e ORDER BY requested_at DESC LIMIT 1
               ) AS m",
        )
        .bind(entries)
        .fetch_all(s.pool())
        .await?
        .iter()
        .filter_map(|r| decode_row::<_, Record>("manual_runs", r).ok())
        .map(ManualRun::from)
        .collect(),
        Store::Sqlite(s) => sqlx::query(
            "SELECT CAST(m.task_id AS TEXT) AS row_key, m.task_id, m.entry, m.requested_at, m.queue, m.actor, m.outcome, m.error
               FROM json_each(?1) AS j
               JOIN manual_runs AS m ON m.task_id = (
                 SELECT task_id FROM manual_runs WHERE entry = j.value ORDER BY requested_at DESC LIMIT 1
               )",
        )
        .bind(serde_json::Value::from(entries.to_vec()).to_string())
        .fetch_all(s.pool())
        .await?
        .iter()
        .filter_map(|r| decode_row::<_, Record>("manual_runs", r).ok())
        .map(ManualRun::from)
        .collect(),
    };
    Ok(runs.into_iter().map(|r| (r.entry.clone(), r)).collect())
}
