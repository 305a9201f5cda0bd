//! The entry_pauses table: one pause per entry, whatever defines the entry
//! (so a schedule file's entry can be paused too). A resume ends the pause
//! at its instant instead of deleting the row: the interval stays as data
//! for [`crate::beat::tick::Pause`], so slots inside it are never caught
//! up, even by a leader that decides them after the pause ended.
//!
//! Every change is written with its history row in one transaction. A
//! running leader hears of it within a second: PostgreSQL notifies
//! `sqsbeat_pauses`, SQLite bumps `pauses_version` ([`version`]).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::history::{self, Action, Audit, iso};
use super::sqlite::codec::NOW;
use super::{Store, StoreError, Ts, decode_row};
use crate::beat::tick::Pause;

/// One row of entry_pauses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PauseRow {
    pub entry: String,
    pub paused_at: DateTime<Utc>,
    /// `None`: until resumed.
    pub paused_until: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    pub paused_by: String,
}

impl PauseRow {
    /// The interval the beat honours.
    pub fn pause(&self) -> Pause {
        Pause {
            from: self.paused_at,
            until: self.paused_until,
        }
    }

    /// Whether the entry is paused at `now`.
    pub fn active(&self, now: DateTime<Utc>) -> bool {
        self.pause().covers(now)
    }

    fn json(&self) -> Value {
        json!({
            "paused_at": iso(self.paused_at),
            "paused_until": self.paused_until.map(iso),
            "reason": self.reason,
        })
    }
}

#[derive(sqlx::FromRow)]
struct Record {
    entry: String,
    paused_at: Ts,
    paused_until: Option<Ts>,
    reason: Option<String>,
    paused_by: String,
}

impl From<Record> for PauseRow {
    fn from(r: Record) -> Self {
        PauseRow {
            entry: r.entry,
            paused_at: r.paused_at.0,
            paused_until: r.paused_until.map(|t| t.0),
            reason: r.reason,
            paused_by: r.paused_by,
        }
    }
}

const COLUMNS: &str = "entry AS row_key, entry, paused_at, paused_until, reason, paused_by";

/// Every pause row, by entry; one that cannot be read is an error in its
/// place.
pub async fn list(store: &Store) -> Result<Vec<Result<PauseRow, StoreError>>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM entry_pauses ORDER BY entry");
    Ok(match store {
        Store::Postgres(s) => sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(s.pool())
            .await?
            .iter()
            .map(|r| decode_row::<_, Record>("entry_pauses", r).map(PauseRow::from))
            .collect(),
        Store::Sqlite(s) => sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(s.pool())
            .await?
            .iter()
            .map(|r| decode_row::<_, Record>("entry_pauses", r).map(PauseRow::from))
            .collect(),
    })
}

/// The pause rows of `entries` (one index probe each, for a page of the
/// status); one that cannot be read is an error in its place.
pub async fn of(
    store: &Store,
    entries: &[String],
) -> Result<Vec<Result<PauseRow, StoreError>>, StoreError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    Ok(match store {
        Store::Postgres(s) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM entry_pauses WHERE entry = ANY($1)"
        )))
        .bind(entries)
        .fetch_all(s.pool())
        .await?
        .iter()
        .map(|r| decode_row::<_, Record>("entry_pauses", r).map(PauseRow::from))
        .collect(),
        Store::Sqlite(s) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM entry_pauses WHERE entry IN (SELECT value FROM json_each(?1))"
        )))
        .bind(Value::from(entries.to_vec()).to_string())
        .fetch_all(s.pool())
        .await?
        .iter()
        .map(|r| decode_row::<_, Record>("entry_pauses", r).map(PauseRow::from))
        .collect(),
    })
}

/// The pauses as the beat takes them, by entry name, and the rows that
/// cannot be read (for the caller to report; they pause nothing).
pub async fn intervals(
    store: &Store,
) -> Result<(HashMap<String, Pause>, Vec<StoreError>), StoreError> {
    let mut ok = HashMap::new();
    let mut bad = Vec::new();
    for row in list(store).await? {
        match row {
            Ok(r) => {
                ok.insert(r.entry.clone(), r.pause());
            }
            Err(e) => bad.push(e),
        }
    }
    Ok((ok, bad))
}

/// What [`pause`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Paused {
    /// The entry was not paused; now it is.
    New(PauseRow),
    /// It was paused already: `until` and `reason` replaced, its start kept.
    Updated { before: PauseRow, after: PauseRow },
}

/// Pauses `entry` from `audit.at` until `until` (`None`: until resumed),
/// or updates the pause it is under; records the change in the history.
pub async fn pause(
    store: &Store,
    entry: &str,
    until: Option<DateTime<Utc>>,
    reason: Option<&str>,
    audit: &Audit,
) -> Result<Paused, StoreError> {
    let decide = |current: Option<PauseRow>| {
        let after = |paused_at| PauseRow {
            entry: entry.to_string(),
            paused_at,
            paused_until: until,
            reason: reason.map(str::to_string),
            paused_by: audit.actor.clone(),
        };
        match current.filter(|c| c.active(audit.at)) {
            Some(before) => Paused::Updated {
                after: after(before.paused_at),
                before,
            },
            None => Paused::New(after(audit.at)),
        }
    };
    let detail = |p: &Paused| match p {
        Paused::New(after) => json!({"after": after.json()}),
        Paused::Updated { before, after } => {
            json!({"before": before.json(), "after": after.json()})
        }
    };
    match store {
        Store::Postgres(s) => {
            let mut tx = s.pool().begin().await?;
            let current = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM entry_pauses WHERE entry = $1 FOR UPDATE"
            )))
            .bind(entry)
            .fetch_optional(&mut *tx)
            .await?
            .and_then(|r| decode_row::<_, Record>("entry_pauses", &r).ok())
            .map(PauseRow::from);
            let outcome = decide(current);
            let row = match &outcome {
                Paused::New(r) | Paused::Updated { after: r, .. } => r,
            };
            sqlx::query(
                "INSERT INTO entry_pauses (entry, paused_at, paused_until, reason, paused_by, updated_at)
                 VALUES ($1, $2, $3, $4, $5, now())
                 ON CONFLICT (entry) DO UPDATE SET paused_at = excluded.paused_at, paused_until = excluded.paused_until,
                   reason = excluded.reason, paused_by = excluded.paused_by, updated_at = excluded.updated_at",
            )
            .bind(&row.entry)
            .bind(row.paused_at)
            .bind(row.paused_until)
            .bind(&row.reason)
            .bind(&row.paused_by)
            .execute(&mut *tx)
            .await?;
            history::insert_pg(&mut tx, entry, Action::Pause, audit, &detail(&outcome)).await?;
            tx.commit().await?;
            Ok(outcome)
        }
        Store::Sqlite(s) => {
            let mut tx = s.pool().begin_with("BEGIN IMMEDIATE").await?;
            let current = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM entry_pauses WHERE entry = ?1"
            )))
            .bind(entry)
            .fetch_optional(&mut *tx)
            .await?
            .and_then(|r| decode_row::<_, Record>("entry_pauses", &r).ok())
            .map(PauseRow::from);
            let outcome = decide(current);
            let row = match &outcome {
                Paused::New(r) | Paused::Updated { after: r, .. } => r,
            };
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO entry_pauses (entry, paused_at, paused_until, reason, paused_by, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, {NOW})
                 ON CONFLICT (entry) DO UPDATE SET paused_at = excluded.paused_at, paused_until = excluded.paused_until,
                   reason = excluded.reason, paused_by = excluded.paused_by, updated_at = excluded.updated_at"
            )))
            .bind(&row.entry)
            .bind(Ts(row.paused_at))
            .bind(row.paused_until.map(Ts))
            .bind(&row.reason)
            .bind(&row.paused_by)
            .execute(&mut *tx)
            .await?;
            history::insert_lite(&mut tx, entry, Action::Pause, audit, &detail(&outcome)).await?;
            tx.commit().await?;
            Ok(outcome)
        }
    }
}

/// Ends the pause `entry` is under at `audit.at`, and records it; `None`
/// (and nothing recorded) if it was not paused then.
pub async fn resume(
    store: &Store,
    entry: &str,
    audit: &Audit,
) -> Result<Option<PauseRow>, StoreError> {
    let detail = |r: &PauseRow| {
        json!({
            "before": {"paused_until": r.paused_until.map(iso)},
            "after": {"paused_until": iso(audit.at)},
            "paused_at": iso(r.paused_at),
        })
    };
    match store {
        Store::Postgres(s) => {
            let mut tx = s.pool().begin().await?;
            let current = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM entry_pauses WHERE entry = $1 FOR UPDATE"
            )))
            .bind(entry)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| decode_row::<_, Record>("entry_pauses", &r).map(PauseRow::from))
            .transpose()?;
            let Some(row) = current.filter(|c| c.active(audit.at)) else {
                return Ok(None);
            };
            sqlx::query(
                "UPDATE entry_pauses SET paused_until = $2, updated_at = now() WHERE entry = $1",
            )
            .bind(entry)
            .bind(audit.at)
            .execute(&mut *tx)
            .await?;
            history::insert_pg(&mut tx, entry, Action::Resume, audit, &detail(&row)).await?;
            tx.commit().await?;
            Ok(Some(row))
        }
        Store::Sqlite(s) => {
            let mut tx = s.pool().begin_with("BEGIN IMMEDIATE").await?;
            let current = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM entry_pauses WHERE entry = ?1"
            )))
            .bind(entry)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| decode_row::<_, Record>("entry_pauses", &r).map(PauseRow::from))
            .transpose()?;
            let Some(row) = current.filter(|c| c.active(audit.at)) else {
                return Ok(None);
            };
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE entry_pauses SET paused_until = ?2, updated_at = {NOW} WHERE entry = ?1"
            )))
            .bind(entry)
            .bind(Ts(audit.at))
            .execute(&mut *tx)
            .await?;
            history::insert_lite(&mut tx, entry, Action::Resume, audit, &detail(&row)).await?;
            tx.commit().await?;
            Ok(Some(row))
        }
    }
}

/// The change counter of entry_pauses, which SQLite's triggers bump on
/// every change (`None` on PostgreSQL, which notifies instead).
pub async fn version(store: &Store) -> Result<Option<i64>, StoreError> {
    match store {
        Store::Postgres(_) => Ok(None),
        Store::Sqlite(s) => Ok(Some(
            sqlx::query_scalar("SELECT version FROM pauses_version WHERE id = 1")
                .fetch_one(s.pool())
                .await?,
        )),
    }
}
