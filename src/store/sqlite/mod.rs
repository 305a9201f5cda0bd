//! The embedded SQLite store: one file, one replica, the same ledger and
//! rules as PostgreSQL. `run` holds an exclusive lock on `<file>.lock` for
//! its lifetime, so a second process on the same file refuses to start
//! instead of firing everything twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::{Claim, Cursor, Miss, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// An open SQLite store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
}

/// Held by `run` for its lifetime: the file lock that makes this process
/// the one replica.
#[derive(Debug)]
pub struct RunLock {
    _file: Arc<std::fs::File>,
}

/// Instants as fixed-width UTC text: equal instants are equal strings, and
/// string order is time order.
/// Rows per batched statement (bounds one statement's JSON parameter).
const ROWS_PER_STATEMENT: usize = 10_000;

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .map_err(|e| {
            StoreError::Db(sqlx::Error::Decode(
                format!("bad instant {s:?} in the database: {e}").into(),
            ))
        })
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Locked(format!("cannot create {}: {e}", dir.display())))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode NORMAL syncs at checkpoints, not at every commit;
            // a power cut can then undo the last commits, which only re-sends
            // fires with the task ids they already had (the one duplicate
            // the ledger allows), while FULL cost an fsync per tick.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        // One connection: a single replica writes, and SQLite serializes
        // writers anyway; this avoids SQLITE_BUSY between our own tasks.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(SqliteStore {
            pool,
            path: path.to_path_buf(),
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Takes the one-replica lock and a new epoch. Fails, with a message
    /// that says what to do, if another process holds the lock.
    pub async fn lock_for_run(&self, holder: &str) -> Result<(RunLock, i64), StoreError> {
        let lock_path = PathBuf::from(format!("{}.lock", self.path.display()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::Locked(format!("cannot open {}: {e}", lock_path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked(format!(
                    "another sqsbeat process is running on {} (it holds {}); the SQLite store serves one replica: stop the other process, or use PostgreSQL ([database] url) for several",
                    self.path.display(),
                    lock_path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Locked(format!(
                    "cannot lock {}: {e}",
                    lock_path.display()
                )));
            }
        }
        let now = ts(crate::clock::system_now());
        let epoch: i64 = sqlx::query_scalar(
            "INSERT INTO leader (id, epoch, holder, since, heartbeat) VALUES (1, 1, ?1, ?2, ?2)
             ON CONFLICT (id) DO UPDATE SET epoch = leader.epoch + 1, holder = ?1, since = ?2, heartbeat = ?2
             RETURNING epoch",
        )
        .bind(holder)
        .bind(&now)
        .fetch_one(&self.pool)
        .await?;
        Ok((
            RunLock {
                _file: Arc::new(file),
            },
            epoch,
        ))
    }

    pub async fn record_decision(
        &self,
        epoch: i64,
        claims: &[Claim],
        misses: &[Miss],
        cursors: &[Cursor],
    ) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let current: Option<i64> = sqlx::query_scalar("SELECT epoch FROM leader WHERE id = 1")
            .fetch_optional(&mut *tx)
            .await?;
        if current != Some(epoch) {
            return Err(StoreError::Fenced {
                mine: epoch,
                current,
            });
        }
        let now = ts(crate::clock::system_now());
        // One statement per chunk, rows passed as JSON: a statement per
        // row cost a round trip to SQLite's worker thread each (3.7 s for
        // the 100 000 cursors of a first start).
        let mut ours = Vec::with_capacity(claims.len());
        for chunk in claims.chunks(ROWS_PER_STATEMENT) {
            let rows: Vec<serde_json::Value> = chunk
                .iter()
                .map(|c| serde_json::json!([c.entry, ts(c.slot), c.task_id.to_string(), c.queue]))
                .collect();
            let won: Vec<(String, String)> = sqlx::query_as(
                "INSERT INTO ledger (entry, slot, task_id, queue, epoch, outcome, claimed_at)
                 SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, ?2, 'claimed', ?3
                   FROM json_each(?1) WHERE true
                 ON CONFLICT (entry, slot) DO UPDATE SET epoch = excluded.epoch, claimed_at = excluded.claimed_at
                   WHERE ledger.outcome = 'claimed'
                 RETURNING entry, slot",
            )
            .bind(serde_json::Value::Array(rows).to_string())
            .bind(epoch)
            .bind(&now)
            .fetch_all(&mut *tx)
            .await?;
            for (entry, slot) in won {
                ours.push((entry, parse_ts(&slot)?));
            }
        }
        for m in misses {
            // A claimed fire later decided missed (it expired while failing, was
            // superseded, or its entry was removed) settles its row; `sent` stays.
            sqlx::query(
                "INSERT INTO ledger (entry, slot, task_id, queue, epoch, outcome, reason, claimed_at)
                 VALUES (?1, ?2, '00000000-0000-0000-0000-000000000000', '', ?3, 'missed', ?4, ?5)
                 ON CONFLICT (entry, slot) DO UPDATE SET outcome = 'missed', reason = excluded.reason
               WHERE ledger.outcome = 'claimed'",
            )
            .bind(&m.entry)
            .bind(ts(m.slot))
            .bind(epoch)
            .bind(&m.reason)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        }
        for chunk in cursors.chunks(ROWS_PER_STATEMENT) {
            let rows: Vec<serde_json::Value> = chunk
                .iter()
                .map(|c| serde_json::json!([c.entry, ts(c.cursor), c.enabled]))
                .collect();
            // A cursor never moves back (fixed-width text compares as time).
            sqlx::query(
                "INSERT INTO entry_state (entry, cursor, enabled, updated_at)
                 SELECT value ->> 0, value ->> 1, value ->> 2, ?2 FROM json_each(?1) WHERE true
                 ON CONFLICT (entry) DO UPDATE SET cursor = max(entry_state.cursor, excluded.cursor),
                   enabled = excluded.enabled, updated_at = excluded.updated_at",
            )
            .bind(serde_json::Value::Array(rows).to_string())
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(ours)
    }

    pub async fn confirm_sent(&self, sent: &[(String, DateTime<Utc>)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = ts(crate::clock::system_now());
        for chunk in sent.chunks(ROWS_PER_STATEMENT) {
            let rows: Vec<serde_json::Value> = chunk
                .iter()
                .map(|(entry, slot)| serde_json::json!([entry, ts(*slot)]))
                .collect();
            sqlx::query(
                // UPDATE ... FROM probes the primary key per row; a row-value
                // IN (subquery) scanned the whole ledger.
                "UPDATE ledger SET outcome = 'sent', sent_at = ?2, attempts = ledger.attempts + 1, reason = NULL
                   FROM json_each(?1) AS j
                  WHERE ledger.entry = j.value ->> 0 AND ledger.slot = j.value ->> 1",
            )
            .bind(serde_json::Value::Array(rows).to_string())
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn record_failure(
        &self,
        entry: &str,
        slot: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE ledger SET attempts = attempts + 1, reason = ?3 WHERE entry = ?1 AND slot = ?2 AND outcome = 'claimed'")
            .bind(entry)
            .bind(ts(slot))
            .bind(error)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn load_cursors(&self) -> Result<HashMap<String, (DateTime<Utc>, bool)>, StoreError> {
        let rows = sqlx::query("SELECT entry, cursor, enabled FROM entry_state")
            .fetch_all(&self.pool)
            .await?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in rows {
            let cursor: String = r.try_get("cursor")?;
            out.insert(
                r.try_get("entry")?,
                (parse_ts(&cursor)?, r.try_get("enabled")?),
            );
        }
        Ok(out)
    }

    pub async fn unconfirmed(&self) -> Result<Vec<(String, DateTime<Utc>, i32)>, StoreError> {
        let rows = sqlx::query(
            "SELECT entry, slot, attempts FROM ledger WHERE outcome = 'claimed' ORDER BY slot",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let slot: String = r.try_get("slot")?;
                Ok((
                    r.try_get("entry")?,
                    parse_ts(&slot)?,
                    r.try_get("attempts")?,
                ))
            })
            .collect()
    }

    pub async fn prune(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM ledger WHERE slot < ?1 AND outcome <> 'claimed'")
            .bind(ts(before))
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
}
