//! The replicas table: each running replica says every few seconds that it
//! is alive and in which role, so `sqsbeat status` can list the leader and
//! the standbys.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Store, StoreError, Ts, decode_row};
use crate::runtime::leader::Role;

/// A replica that reported in.
#[derive(Debug, Clone, Serialize)]
pub struct Replica {
    pub holder: String,
    pub role: String,
    pub epoch: Option<i64>,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub seen_at: DateTime<Utc>,
    /// The leader's count of overdue entries at its last heartbeat.
    pub overdue: Option<i64>,
    /// The first of them by name.
    pub overdue_entries: Vec<String>,
}

/// What the leader found overdue, as a heartbeat publishes it.
#[derive(Debug, Clone, Copy)]
pub struct Overdue<'a> {
    pub count: i64,
    pub names: &'a [String],
}

#[derive(sqlx::FromRow)]
struct Record {
    holder: String,
    role: String,
    epoch: Option<i64>,
    version: String,
    started_at: Ts,
    seen_at: Ts,
    overdue: Option<i64>,
    overdue_entries: Option<serde_json::Value>,
}

/// Records that this replica is alive, in its current role, with what it
/// found overdue if it leads; replicas not seen for a day are forgotten.
/// Returns the database's `now()` on PostgreSQL, to compare with the host
/// clock (SQLite has no other clock).
pub async fn heartbeat(
    store: &Store,
    holder: &str,
    role: Role,
    started_at: DateTime<Utc>,
    now: DateTime<Utc>,
    overdue: Option<Overdue<'_>>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let (overdue, overdue_entries) = match overdue {
        Some(o) => (
            Some(o.count),
            Some(serde_json::Value::from(o.names.to_vec())),
        ),
        None => (None, None),
    };
    let (name, epoch) = match role {
        Role::Leader { epoch, .. } => ("leader", Some(epoch)),
        Role::Standby => ("standby", None),
    };
    let version = env!("CARGO_PKG_VERSION");
    let forget = now - chrono::Duration::days(1);
    match store {
        Store::Postgres(s) => {
            let database_now: Ts = sqlx::query_scalar(
                "INSERT INTO replicas (holder, role, epoch, version, started_at, seen_at, overdue, overdue_entries)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (holder) DO UPDATE SET role = $2, epoch = $3, version = $4, seen_at = $6,
                   overdue = $7, overdue_entries = $8
                 RETURNING now()",
            )
            .bind(holder)
            .bind(name)
            .bind(epoch)
            .bind(version)
            .bind(started_at)
            .bind(now)
            .bind(overdue)
            .bind(&overdue_entries)
            .fetch_one(s.pool())
            .await?;
            sqlx::query("DELETE FROM replicas WHERE seen_at < $1")
                .bind(forget)
                .execute(s.pool())
                .await?;
            Ok(Some(database_now.0))
        }
        Store::Sqlite(s) => {
            sqlx::query(
                "INSERT INTO replicas (holder, role, epoch, version, started_at, seen_at, overdue, overdue_entries)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (holder) DO UPDATE SET role = ?2, epoch = ?3, version = ?4, seen_at = ?6,
                   overdue = ?7, overdue_entries = ?8",
            )
            .bind(holder)
            .bind(name)
            .bind(epoch)
            .bind(version)
            .bind(Ts(started_at))
            .bind(Ts(now))
            .bind(overdue)
            .bind(&overdue_entries)
            .execute(s.pool())
            .await?;
            sqlx::query("DELETE FROM replicas WHERE seen_at < ?1")
                .bind(Ts(forget))
                .execute(s.pool())
                .await?;
            Ok(None)
        }
    }
}

/// Every replica that reported in, most recently seen first.
pub async fn replicas(store: &Store) -> Result<Vec<Replica>, StoreError> {
    const SQL: &str = "SELECT holder AS row_key, holder, role, epoch, version, started_at, seen_at, overdue, overdue_entries
                         FROM replicas ORDER BY seen_at DESC";
    let rows: Vec<Record> = match store {
        Store::Postgres(s) => sqlx::query(SQL)
            .fetch_all(s.pool())
            .await?
            .iter()
            .map(|r| decode_row("replicas", r))
            .collect::<Result<_, _>>()?,
        Store::Sqlite(s) => sqlx::query(SQL)
            .fetch_all(s.pool())
            .await?
            .iter()
            .map(|r| decode_row("replicas", r))
            .collect::<Result<_, _>>()?,
    };
    Ok(rows
        .into_iter()
        .map(|r| Replica {
            holder: r.holder,
            role: r.role,
            epoch: r.epoch,
            version: r.version,
            started_at: r.started_at.0,
            seen_at: r.seen_at.0,
            overdue: r.overdue,
            overdue_entries: match r.overdue_entries {
                Some(serde_json::Value::Array(names)) => names
                    .into_iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            },
        })
        .collect())
}
