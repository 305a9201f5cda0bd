//! The entry_history table: every change made through the CLI to an entry
//! (add, replace, remove, enable, disable, pause, resume, run, backfill),
//! with who, when and what changed. A change to a table is written with
//! its history row in one transaction (see `store::entries`,
//! `store::pauses`); a send (run, backfill) is recorded once its outcome is
//! known.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, SqliteConnection};

use super::{Store, StoreError, Ts, decode_row};

/// What was done to an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Add,
    Replace,
    Remove,
    Enable,
    Disable,
    Pause,
    Resume,
    Run,
    Backfill,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Add => "add",
            Action::Replace => "replace",
            Action::Remove => "remove",
            Action::Enable => "enable",
            Action::Disable => "disable",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Run => "run",
            Action::Backfill => "backfill",
        }
    }
}

/// Who makes a change, and when: what every recorded change takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    pub at: DateTime<Utc>,
    /// `--by`, else `user@host`.
    pub actor: String,
}

/// An instant as the history's JSON writes it.
pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// One recorded change, oldest first in [`list`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: i64,
    pub entry: String,
    pub at: DateTime<Utc>,
    pub actor: String,
    /// As stored: one of [`Action`]'s names (a row written by hand may hold
    /// another).
    pub action: String,
    pub detail: Value,
}

#[derive(sqlx::FromRow)]
struct Record {
    id: i64,
    entry: String,
    at: Ts,
    actor: String,
    action: String,
    detail: Value,
}

/// Writes one history row on a PostgreSQL connection (inside the caller's
/// transaction).
pub(crate) async fn insert_pg(
    conn: &mut PgConnection,
    entry: &str,
    action: Action,
    audit: &Audit,
    detail: &Value,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO entry_history (entry, at, actor, action, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(entry)
    .bind(audit.at)
    .bind(&audit.actor)
    .bind(action.as_str())
    .bind(detail)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes one history row on a SQLite connection (inside the caller's
/// transaction).
pub(crate) async fn insert_lite(
    conn: &mut SqliteConnection,
    entry: &str,
    action: Action,
    audit: &Audit,
    detail: &Value,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO entry_history (entry, at, actor, action, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .bind(entry)
    .bind(Ts(audit.at))
    .bind(&audit.actor)
    .bind(action.as_str())
    .bind(detail)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a change on its own (a run or a backfill, once its sends are
/// settled).
pub async fn record(
    store: &Store,
    entry: &str,
    action: Action,
    audit: &Audit,
    detail: &Value,
) -> Result<(), StoreError> {
    match store {
        Store::Postgres(s) => {
            let mut c = s.pool().acquire().await?;
            insert_pg(&mut c, entry, action, audit, detail).await
        }
        Store::Sqlite(s) => {
            let mut c = s.pool().acquire().await?;
            insert_lite(&mut c, entry, action, audit, detail).await
        }
    }
}

/// The history of `entry`, oldest first; a row that cannot be read is an
/// error in its place.
pub async fn list(
    store: &Store,
    entry: &str,
) -> Result<Vec<Result<Event, StoreError>>, StoreError> {
    let decode = |r: Record| Event {
        id: r.id,
        entry: r.entry,
        at: r.at.0,
        actor: r.actor,
        action: r.action,
        detail: r.detail,
    };
    Ok(match store {
        Store::Postgres(s) => sqlx::query(
            "SELECT id::text AS row_key, id, entry, at, actor, action, detail FROM entry_history
              WHERE entry = $1 ORDER BY id",
        )
        .bind(entry)
        .fetch_all(s.pool())
        .await?
        .iter()
        .map(|r| decode_row::<_, Record>("entry_history", r).map(decode))
        .collect(),
        Store::Sqlite(s) => sqlx::query(
            "SELECT CAST(id AS TEXT) AS row_key, id, entry, at, actor, action, detail FROM entry_history
              WHERE entry = ?1 ORDER BY id",
        )
        .bind(entry)
        .fetch_all(s.pool())
        .await?
        .iter()
        .map(|r| decode_row::<_, Record>("entry_history", r).map(decode))
        .collect(),
    })
}
