//! The PostgreSQL store: migrations, the run ledger, per-entry cursors, and
//! the leader row. Functions take a pool (or a connection) and do one
//! thing; the leadership campaign lives in `leader`.
//!
//! Every object lives in sqsbeat's own schema (default `sqsbeat`): each
//! connection sets `search_path` to it, so the SQL is unqualified and an
//! application database can host sqsbeat safely.
//!
//! Fencing: `record_decision` checks the leader row's epoch in the same
//! transaction that claims fires, holding the row's lock until commit. A
//! new leader bumps the epoch only after taking the advisory lock, which
//! the previous leader's session held; so once a new epoch exists, no
//! claim under an older one can commit.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Row};
use uuid::Uuid;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

use super::{Claim, Cursor, Miss, StoreError};

/// A connection pool to sqsbeat's schema.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    /// Shared: connect options are large and cloned with every store handle.
    options: std::sync::Arc<PgConnectOptions>,
    schema: String,
}

fn valid_schema(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}

impl PgStore {
    /// Connects, creates the schema if needed and applies pending
    /// migrations (idempotent: applied ones are skipped).
    pub async fn connect(url: &str, schema: &str) -> Result<Self, StoreError> {
        Self::connect_sized(url, schema, 8).await
    }

    /// Like `connect`, with at most `connections` connections: a one-shot
    /// CLI command needs one, and one handshake is cheaper than two.
    pub async fn connect_sized(
        url: &str,
        schema: &str,
        connections: u32,
    ) -> Result<Self, StoreError> {
        if !valid_schema(schema) {
            return Err(StoreError::Schema(schema.to_string()));
        }
        let base = PgConnectOptions::from_str(url).map_err(|e| StoreError::Url(e.to_string()))?;
        let options = base.options([("search_path", schema)]);
        // One pool for everything: each new connection may cost a TLS
        // handshake. A search_path naming a schema that does not exist yet
        // is allowed, so the pool can create it.
        let pool = PgPoolOptions::new()
            .max_connections(connections.max(1))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await?;
        // CREATE SCHEMA IF NOT EXISTS races when replicas start together
        // (a unique violation), so creation is serialized on a lock.
        // Schema and migrations on one connection: another would be another
        // handshake.
        let mut conn = pool.acquire().await?;
        let mut tx = conn.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(schema_lock_key(schema))
            .execute(&mut *tx)
            .await?;
        // A claimed fire later decided missed (it expired while failing, was
        // superseded, or its entry was removed) settles its row; `sent` stays.
        sqlx::query(AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
        )))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        // run_direct: `run` on a borrowed connection is not Send in a spawned task.
        MIGRATOR.run_direct(None, &mut *conn, false).await?;
        drop(conn);
        Ok(PgStore {
            pool,
            options: std::sync::Arc::new(options),
            schema: schema.to_string(),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Options for a dedicated (non-pooled) session in sqsbeat's schema.
    pub fn connect_options(&self) -> PgConnectOptions {
        (*self.options).clone()
    }

    /// The advisory lock key of this schema's leadership, so deployments in
    /// different schemas of one database never contend.
    pub fn lock_key(&self) -> i64 {
        key(&format!("sqsbeat-leader:{}", self.schema))
    }
}

fn schema_lock_key(schema: &str) -> i64 {
    key(&format!("sqsbeat-schema:{schema}"))
}

/// A stable 64-bit advisory lock key for a name (FNV-1a).
fn key(name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// Records one tick's decision under leadership `epoch`: claims, misses
/// and cursors in one transaction. Returns the claims that are this
/// leader's to send: a fire already sent (by anyone) is not returned.
pub async fn record_decision(
    pool: &PgPool,
    epoch: i64,
    claims: &[Claim],
    misses: &[Miss],
    cursors: &[Cursor],
) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
    let mut tx = pool.begin().await?;
    let current: Option<i64> =
        sqlx::query_scalar("SELECT epoch FROM leader WHERE id = 1 FOR UPDATE")
            .fetch_optional(&mut *tx)
            .await?;
    if current != Some(epoch) {
        return Err(StoreError::Fenced {
            mine: epoch,
            current,
        });
    }
    let mut ours = Vec::with_capacity(claims.len());
    if !claims.is_empty() {
        let entries: Vec<&str> = claims.iter().map(|c| c.entry.as_str()).collect();
        let slots: Vec<DateTime<Utc>> = claims.iter().map(|c| c.slot).collect();
        let ids: Vec<Uuid> = claims.iter().map(|c| c.task_id).collect();
        let queues: Vec<&str> = claims.iter().map(|c| c.queue.as_str()).collect();
        // A row still 'claimed' (never confirmed) is taken over; a 'sent'
        // or 'missed' row is final and not returned.
        let rows = sqlx::query(
            "INSERT INTO ledger (entry, slot, task_id, queue, epoch, outcome)
             SELECT e, s, t, q, $5, 'claimed' FROM UNNEST($1::text[], $2::timestamptz[], $3::uuid[], $4::text[]) AS u(e, s, t, q)
             ON CONFLICT (entry, slot) DO UPDATE SET epoch = EXCLUDED.epoch, claimed_at = now()
               WHERE ledger.outcome = 'claimed'
             RETURNING entry, slot",
        )
        .bind(&entries)
        .bind(&slots)
        .bind(&ids)
        .bind(&queues)
        .bind(epoch)
        .fetch_all(&mut *tx)
        .await?;
        for r in rows {
            ours.push((r.try_get("entry")?, r.try_get("slot")?));
        }
    }
    if !misses.is_empty() {
        let entries: Vec<&str> = misses.iter().map(|m| m.entry.as_str()).collect();
        let slots: Vec<DateTime<Utc>> = misses.iter().map(|m| m.slot).collect();
        let reasons: Vec<&str> = misses.iter().map(|m| m.reason.as_str()).collect();
        sqlx::query(
            "INSERT INTO ledger (entry, slot, task_id, queue, epoch, outcome, reason)
             SELECT e, s, '00000000-0000-0000-0000-000000000000', '', $4, 'missed', r
             FROM UNNEST($1::text[], $2::timestamptz[], $3::text[]) AS u(e, s, r)
             ON CONFLICT (entry, slot) DO UPDATE SET outcome = 'missed', reason = EXCLUDED.reason
               WHERE ledger.outcome = 'claimed'",
        )
        .bind(&entries)
        .bind(&slots)
        .bind(&reasons)
        .bind(epoch)
        .execute(&mut *tx)
        .await?;
    }
    if !cursors.is_empty() {
        save_cursors(&mut tx, cursors).await?;
    }
    tx.commit().await?;
    Ok(ours)
}

async fn save_cursors(tx: &mut sqlx::PgConnection, cursors: &[Cursor]) -> Result<(), StoreError> {
    let entries: Vec<&str> = cursors.iter().map(|c| c.entry.as_str()).collect();
    let at: Vec<DateTime<Utc>> = cursors.iter().map(|c| c.cursor).collect();
    let enabled: Vec<bool> = cursors.iter().map(|c| c.enabled).collect();
    // A cursor never moves back: a late writer cannot un-decide a slot.
    sqlx::query(
        "INSERT INTO entry_state (entry, cursor, enabled)
         SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::bool[])
         ON CONFLICT (entry) DO UPDATE
           SET cursor = GREATEST(entry_state.cursor, EXCLUDED.cursor), enabled = EXCLUDED.enabled, updated_at = now()",
    )
    .bind(&entries)
    .bind(&at)
    .bind(&enabled)
    .execute(tx)
    .await?;
    Ok(())
}

/// Cursors for entries, fenced like a decision (used when a new leader
/// starts, to record where each entry begins).
pub async fn record_cursors(
    pool: &PgPool,
    epoch: i64,
    cursors: &[Cursor],
) -> Result<(), StoreError> {
    record_decision(pool, epoch, &[], &[], cursors)
        .await
        .map(|_| ())
}

/// Marks fires as accepted by SQS.
pub async fn confirm_sent(
    pool: &PgPool,
    sent: &[(String, DateTime<Utc>)],
) -> Result<(), StoreError> {
    if sent.is_empty() {
        return Ok(());
    }
    let entries: Vec<&str> = sent.iter().map(|s| s.0.as_str()).collect();
    let slots: Vec<DateTime<Utc>> = sent.iter().map(|s| s.1).collect();
    sqlx::query(
        "UPDATE ledger SET outcome = 'sent', sent_at = now(), attempts = attempts + 1, reason = NULL
         FROM UNNEST($1::text[], $2::timestamptz[]) AS u(e, s)
         WHERE ledger.entry = u.e AND ledger.slot = u.s",
    )
    .bind(&entries)
    .bind(&slots)
    .execute(pool)
    .await?;
    Ok(())
}

/// Notes a failed attempt; the row stays claimed, to be sent again.
pub async fn record_failure(
    pool: &PgPool,
    entry: &str,
    slot: DateTime<Utc>,
    error: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE ledger SET attempts = attempts + 1, reason = $3 WHERE entry = $1 AND slot = $2 AND outcome = 'claimed'")
        .bind(entry)
        .bind(slot)
        .bind(error)
        .execute(pool)
        .await?;
    Ok(())
}

/// Each entry's stored cursor and whether it was enabled then.
pub async fn load_cursors(
    pool: &PgPool,
) -> Result<HashMap<String, (DateTime<Utc>, bool)>, StoreError> {
    let rows = sqlx::query("SELECT entry, cursor, enabled FROM entry_state")
        .fetch_all(pool)
        .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        out.insert(
            r.try_get("entry")?,
            (r.try_get("cursor")?, r.try_get("enabled")?),
        );
    }
    Ok(out)
}

/// Fires claimed but never confirmed: a leader died between claim and
/// confirm. They are sent again with their original task id.
pub async fn unconfirmed(pool: &PgPool) -> Result<Vec<(String, DateTime<Utc>, i32)>, StoreError> {
    let rows = sqlx::query(
        "SELECT entry, slot, attempts FROM ledger WHERE outcome = 'claimed' ORDER BY slot",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok((
                r.try_get("entry")?,
                r.try_get("slot")?,
                r.try_get("attempts")?,
            ))
        })
        .collect()
}

/// Deletes settled ledger rows whose slot is older than `before`.
pub async fn prune(pool: &PgPool, before: DateTime<Utc>) -> Result<u64, StoreError> {
    let r = sqlx::query("DELETE FROM ledger WHERE slot < $1 AND outcome <> 'claimed'")
        .bind(before)
        .execute(pool)
        .await?;
    Ok(r.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        assert!(valid_schema("sqsbeat"));
        assert!(valid_schema("_x1"));
        assert!(!valid_schema("Bad"));
        assert!(!valid_schema("a-b"));
        assert!(!valid_schema("x\"; drop"));
        assert!(!valid_schema(""));
    }
}
