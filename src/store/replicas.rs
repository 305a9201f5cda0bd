//! What `sqsbeat status` reports, read from the store: replicas and their
//! roles, the leader row, each entry's last fire, pending jobs, recent
//! failures. Also the replica heartbeat that feeds it.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::runtime::leader::Role;
use crate::store::{Store, StoreError};

/// A replica that reported in.
#[derive(Debug, Clone, Serialize)]
pub struct Replica {
    pub holder: String,
    pub role: String,
    pub epoch: Option<i64>,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub seen_at: DateTime<Utc>,
}

/// A recent failure: a fire or a job that did not get out (yet).
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub kind: &'static str,
    pub name: String,
    pub at: DateTime<Utc>,
    pub attempts: i64,
    pub error: String,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .map_err(|e| StoreError::Db(sqlx::Error::Decode(e.to_string().into())))
}

/// Records that this replica is alive, in its current role.
pub async fn heartbeat(
    store: &Store,
    holder: &str,
    role: Role,
    started_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let (name, epoch) = match role {
        Role::Leader { epoch, .. } => ("leader", Some(epoch)),
        Role::Standby => ("standby", None),
    };
    let version = env!("CARGO_PKG_VERSION");
    match store {
        Store::Postgres(s) => {
            sqlx::query(
                "INSERT INTO replicas (holder, role, epoch, version, started_at, seen_at) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (holder) DO UPDATE SET role = $2, epoch = $3, version = $4, seen_at = $6",
            )
            .bind(holder)
            .bind(name)
            .bind(epoch)
            .bind(version)
            .bind(started_at)
            .bind(now)
            .execute(s.pool())
            .await?;
            // Replicas gone for a day are forgotten.
            sqlx::query("DELETE FROM replicas WHERE seen_at < $1")
                .bind(now - chrono::Duration::days(1))
                .execute(s.pool())
                .await?;
        }
        Store::Sqlite(s) => {
            sqlx::query(
                "INSERT INTO replicas (holder, role, epoch, version, started_at, seen_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (holder) DO UPDATE SET role = ?2, epoch = ?3, version = ?4, seen_at = ?6",
            )
            .bind(holder)
            .bind(name)
            .bind(epoch)
            .bind(version)
            .bind(ts(started_at))
            .bind(ts(now))
            .execute(s.pool())
            .await?;
            sqlx::query("DELETE FROM replicas WHERE seen_at < ?1")
                .bind(ts(now - chrono::Duration::days(1)))
                .execute(s.pool())
                .await?;
        }
    }
    Ok(())
}

/// A `replicas` row: holder, role, epoch, version, started, seen (instants
/// typed per backend).
type ReplicaRow<T> = (String, String, Option<i64>, String, T, T);

pub async fn replicas(store: &Store) -> Result<Vec<Replica>, StoreError> {
    match store {
        Store::Postgres(s) => {
            let rows: Vec<ReplicaRow<DateTime<Utc>>> =
                sqlx::query_as("SELECT holder, role, epoch, version, started_at, seen_at FROM replicas ORDER BY seen_at DESC").fetch_all(s.pool()).await?;
            Ok(rows
                .into_iter()
                .map(|r| Replica {
                    holder: r.0,
                    role: r.1,
                    epoch: r.2,
                    version: r.3,
                    started_at: r.4,
                    seen_at: r.5,
                })
                .collect())
        }
        Store::Sqlite(s) => {
            let rows: Vec<ReplicaRow<String>> =
                sqlx::query_as("SELECT holder, role, epoch, version, started_at, seen_at FROM replicas ORDER BY seen_at DESC").fetch_all(s.pool()).await?;
            rows.into_iter()
                .map(|r| {
                    Ok(Replica {
                        holder: r.0,
                        role: r.1,
                        epoch: r.2,
                        version: r.3,
                        started_at: parse(&r.4)?,
                        seen_at: parse(&r.5)?,
                    })
                })
                .collect()
        }
    }
}

/// The last sent slot of each entry.
pub async fn last_fires(store: &Store) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
    match store {
        Store::Postgres(s) => {
            let rows: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
                "SELECT entry, max(slot) FROM ledger WHERE outcome = 'sent' GROUP BY entry",
            )
            .fetch_all(s.pool())
            .await?;
            Ok(rows.into_iter().collect())
        }
        Store::Sqlite(s) => {
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT entry, max(slot) FROM ledger WHERE outcome = 'sent' GROUP BY entry",
            )
            .fetch_all(s.pool())
            .await?;
            rows.into_iter().map(|(e, t)| Ok((e, parse(&t)?))).collect()
        }
    }
}

/// Fires still unsent after a failed attempt, and jobs failing or failed, newest first.
pub async fn recent_failures(store: &Store, limit: i64) -> Result<Vec<Failure>, StoreError> {
    let fires_sql = "SELECT entry, slot, attempts, reason FROM ledger WHERE outcome = 'claimed' AND reason IS NOT NULL ORDER BY slot DESC LIMIT $1";
    let jobs_sql = "SELECT id, due_at, attempts, last_error FROM jobs WHERE last_error IS NOT NULL AND status IN ('pending', 'failed') ORDER BY due_at DESC LIMIT $1";
    let mut out = Vec::new();
    match store {
        Store::Postgres(s) => {
            let f: Vec<(String, DateTime<Utc>, i32, String)> = sqlx::query_as(fires_sql)
                .bind(limit)
                .fetch_all(s.pool())
                .await?;
            out.extend(f.into_iter().map(|r| Failure {
                kind: "fire",
                name: r.0,
                at: r.1,
                attempts: i64::from(r.2),
                error: r.3,
            }));
            let j: Vec<(uuid::Uuid, DateTime<Utc>, i32, String)> = sqlx::query_as(jobs_sql)
                .bind(limit)
                .fetch_all(s.pool())
                .await?;
            out.extend(j.into_iter().map(|r| Failure {
                kind: "job",
                name: r.0.to_string(),
                at: r.1,
                attempts: i64::from(r.2),
                error: r.3,
            }));
        }
        Store::Sqlite(s) => {
            let f: Vec<(String, String, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(fires_sql.replace('$', "?")))
                    .bind(limit)
                    .fetch_all(s.pool())
                    .await?;
            for r in f {
                out.push(Failure {
                    kind: "fire",
                    name: r.0,
                    at: parse(&r.1)?,
                    attempts: r.2,
                    error: r.3,
                });
            }
            let j: Vec<(String, String, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(jobs_sql.replace('$', "?")))
                    .bind(limit)
                    .fetch_all(s.pool())
                    .await?;
            for r in j {
                out.push(Failure {
                    kind: "job",
                    name: r.0,
                    at: parse(&r.1)?,
                    attempts: r.2,
                    error: r.3,
                });
            }
        }
    }
    out.sort_by_key(|f| std::cmp::Reverse(f.at));
    out.truncate(limit as usize);
    Ok(out)
}
