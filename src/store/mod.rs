//! Durable state: the run ledger, per-entry cursors and the leader epoch,
//! in PostgreSQL (production, several replicas) or an embedded SQLite file
//! (the default: one replica, no server).
//!
//! Both backends keep the same tables and the same rules; they differ in
//! how leadership is held: a PostgreSQL advisory lock (see `leader`) or an
//! exclusive lock on a file beside the SQLite database.

pub mod entries;
pub mod jobs;
pub mod postgres;
pub mod replicas;
pub mod sqlite;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use postgres::PgStore;
pub use sqlite::{RunLock, SqliteStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "invalid schema name {0:?}: use lowercase letters, digits and _ (starting with a letter or _)"
    )]
    Schema(String),
    #[error("invalid database URL: {0}")]
    Url(String),
    /// Another replica leads now: this one must not claim fires.
    #[error("fenced: leadership epoch {mine} is no longer current ({current:?})")]
    Fenced { mine: i64, current: Option<i64> },
    #[error("{0}")]
    Locked(String),
}

/// A fire to claim before sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub entry: String,
    pub slot: DateTime<Utc>,
    pub task_id: Uuid,
    pub queue: String,
}

/// A slot decided without sending, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Miss {
    pub entry: String,
    pub slot: DateTime<Utc>,
    pub reason: String,
}

/// An entry's cursor after a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub entry: String,
    pub cursor: DateTime<Utc>,
    pub enabled: bool,
}

/// Either backend, behind one set of operations.
#[derive(Clone, Debug)]
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

impl Store {
    /// Claims due fires, records misses and cursors under `epoch`, in one
    /// transaction that first checks the epoch is still current. Returns
    /// the claims that are this leader's to send.
    pub async fn record_decision(
        &self,
        epoch: i64,
        claims: &[Claim],
        misses: &[Miss],
        cursors: &[Cursor],
    ) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        match self {
            Store::Postgres(s) => {
                postgres::record_decision(s.pool(), epoch, claims, misses, cursors).await
            }
            Store::Sqlite(s) => s.record_decision(epoch, claims, misses, cursors).await,
        }
    }

    pub async fn record_cursors(&self, epoch: i64, cursors: &[Cursor]) -> Result<(), StoreError> {
        self.record_decision(epoch, &[], &[], cursors)
            .await
            .map(|_| ())
    }

    /// Marks fires as accepted by SQS.
    pub async fn confirm_sent(&self, sent: &[(String, DateTime<Utc>)]) -> Result<(), StoreError> {
        match self {
            Store::Postgres(s) => postgres::confirm_sent(s.pool(), sent).await,
            Store::Sqlite(s) => s.confirm_sent(sent).await,
        }
    }

    /// Notes a failed attempt; the fire stays claimed, to be sent again.
    pub async fn record_failure(
        &self,
        entry: &str,
        slot: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        match self {
            Store::Postgres(s) => postgres::record_failure(s.pool(), entry, slot, error).await,
            Store::Sqlite(s) => s.record_failure(entry, slot, error).await,
        }
    }

    /// Each entry's stored cursor and whether it was enabled then.
    pub async fn load_cursors(&self) -> Result<HashMap<String, (DateTime<Utc>, bool)>, StoreError> {
        match self {
            Store::Postgres(s) => postgres::load_cursors(s.pool()).await,
            Store::Sqlite(s) => s.load_cursors().await,
        }
    }

    /// Fires claimed but never confirmed, oldest first, with their attempts.
    pub async fn unconfirmed(&self) -> Result<Vec<(String, DateTime<Utc>, i32)>, StoreError> {
        match self {
            Store::Postgres(s) => postgres::unconfirmed(s.pool()).await,
            Store::Sqlite(s) => s.unconfirmed().await,
        }
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(s) => sqlx::query("SELECT 1")
                .execute(s.pool())
                .await
                .map(|_| ())?,
            Store::Sqlite(s) => sqlx::query("SELECT 1")
                .execute(s.pool())
                .await
                .map(|_| ())?,
        }
        Ok(())
    }

    /// Deletes settled ledger rows whose slot is older than `before`.
    pub async fn prune(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        match self {
            Store::Postgres(s) => postgres::prune(s.pool(), before).await,
            Store::Sqlite(s) => s.prune(before).await,
        }
    }
}

/// Connections a long-running `run` keeps; a one-shot command uses one
/// (one handshake is cheaper than two).
pub const DAEMON_CONNECTIONS: u32 = 8;

impl Store {
    /// PostgreSQL when a URL is configured, else the embedded SQLite file.
    pub async fn open(
        config: &crate::config::Config,
        connections: u32,
    ) -> Result<Store, StoreError> {
        Ok(match &config.database_url {
            Some(url) => Store::Postgres(
                PgStore::connect_sized(&url.0, &config.database_schema, connections).await?,
            ),
            None => Store::Sqlite(SqliteStore::open(&config.database_path).await?),
        })
    }
}
