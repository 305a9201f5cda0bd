//! Durable state, and all of sqsbeat's SQL: PostgreSQL (production, several
//! replicas) or an embedded SQLite file (the default: one replica, no
//! server).
//!
//! One file per table, each holding both backends' SQL side by side:
//! [`ledger`] (fires claimed, sent, missed; per-entry cursors) and
//! [`backfill`] (the ledger as `sqsbeat backfill` claims it), [`jobs`]
//! (and [`intake`]: jobs read from the intake queue), [`entries`],
//! [`pauses`], [`history`] (every change made through the CLI to an
//! entry), [`manual`] (manual runs), [`replicas`], [`leader`] (the epoch,
//! the heartbeat, the advisory lock); [`django`] reads and writes back
//! django-celery-beat's tables in the application's schema. [`postgres`]
//! and [`sqlite`] open the database and run the migrations; [`listen`]
//! turns NOTIFY (or SQLite's change counter) into
//! wake-ups. Only this module looks at which backend a [`Store`] is.
//!
//! Rows anyone can write (entries, jobs) are decoded one at a time: a row
//! that cannot be read is a [`StoreError::Decode`] naming its table, column
//! and key, never a panic and never the whole batch.

pub mod backfill;
pub mod django;
pub mod entries;
pub mod history;
pub mod intake;
pub mod jobs;
pub mod leader;
pub mod ledger;
pub mod listen;
pub mod manual;
pub mod pauses;
pub mod postgres;
pub mod replicas;
pub mod sqlite;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use ledger::{Claim, Cursor, Miss};
pub use postgres::PgStore;
pub use sqlite::codec::{Id, Ts};
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
    /// A row that cannot be read as sqsbeat's (written by hand or by an
    /// application): which table, column and row, and why.
    #[error(
        "cannot read table {table}, column {column}, row {row}: {reason}; fix or delete that row"
    )]
    Decode {
        table: &'static str,
        column: String,
        row: String,
        reason: String,
    },
    /// A source of entries outside sqsbeat's schema (django-celery-beat's
    /// tables) cannot be used: why, and what to do.
    #[error("{0}")]
    Source(String),
    /// The database user lacks a privilege it needs (SQLSTATE 42501):
    /// which, and the GRANT that gives it. Retrying does not help.
    #[error("{0}")]
    Denied(String),
    /// A read-only command found no sqsbeat schema, or an older one.
    #[error("{0}; run `sqsbeat migrate` (or start `sqsbeat run`) first")]
    NotMigrated(String),
}

/// One fire: an entry's slot. The key of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct FireKey {
    pub entry: String,
    pub slot: DateTime<Utc>,
}

/// A recent failure: a fire or a job that did not get out (yet).
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub kind: &'static str,
    pub name: String,
    /// The slot or due instant; `None` when the row's instant cannot be read.
    pub at: Option<DateTime<Utc>>,
    pub attempts: i64,
    pub error: String,
}

/// Either backend, behind one set of operations.
#[derive(Clone, Debug)]
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

/// Connections a long-running `run` keeps; a one-shot command uses one
/// (one handshake is cheaper than two).
pub const DAEMON_CONNECTIONS: u32 = 8;

/// What a store is opened for: it decides whether opening may create the
/// schema and run migrations, the pool size, and how durable a commit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `run`: migrates; [`DAEMON_CONNECTIONS`] connections; SQLite commits
    /// with `synchronous = NORMAL` (see [`SqliteStore::open_for`]), the
    /// intake's with FULL.
    Daemon,
    /// A one-shot command that writes (`migrate`, `schedule`, `cancel`,
    /// `entries add|enable|disable|remove`): migrates, so it works on a
    /// fresh database; SQLite commits with `synchronous = FULL`, so what it
    /// printed survives a power cut.
    Write,
    /// A one-shot command that only reads (`status`, `pending`, `show`,
    /// `check`, `next`, `entries list|show`): never runs DDL, so it needs no
    /// CREATE privilege and leaves a database it was pointed at by mistake
    /// untouched; a database without sqsbeat's (current) schema is
    /// [`StoreError::NotMigrated`].
    Read,
}

impl Store {
    /// PostgreSQL when a URL is configured, else the embedded SQLite file.
    pub async fn open(config: &crate::config::Config, access: Access) -> Result<Store, StoreError> {
        Ok(match &config.database_url {
            Some(url) => {
                Store::Postgres(PgStore::open(&url.0, &config.database_schema, access).await?)
            }
            None => Store::Sqlite(SqliteStore::open_for(&config.database_path, access).await?),
        })
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(s) => {
                sqlx::query("SELECT 1").execute(s.pool()).await?;
            }
            Store::Sqlite(s) => {
                sqlx::query("SELECT 1").execute(s.pool()).await?;
            }
        }
        Ok(())
    }

    /// Whether changes by other processes are pushed (PostgreSQL NOTIFY)
    /// rather than seen only by looking (SQLite).
    pub fn pushes_changes(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Where the data lives, for a person: the schema or the file.
    pub fn describe(&self) -> String {
        match self {
            Store::Postgres(s) => format!("PostgreSQL schema {:?}", s.schema()),
            Store::Sqlite(s) => format!("SQLite file {}", s.path().display()),
        }
    }
}

/// Fires still unsent after a failed attempt, and jobs failing or failed,
/// newest first: what `sqsbeat status` lists.
pub async fn recent_failures(store: &Store, limit: i64) -> Result<Vec<Failure>, StoreError> {
    let mut out = ledger::failing(store, limit).await?;
    out.extend(jobs::failing(store, limit).await?);
    out.sort_by_key(|f| std::cmp::Reverse(f.at));
    out.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(out)
}

/// Decodes one row of `table`. A value that cannot be read becomes
/// [`StoreError::Decode`] naming the column and the row, whose key the
/// query selects as text in a `row_key` column (so the key can be named
/// even when the key column itself is what is broken).
pub(crate) fn decode_row<'r, R, T>(table: &'static str, row: &'r R) -> Result<T, StoreError>
where
    R: sqlx::Row,
    T: sqlx::FromRow<'r, R>,
    &'static str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    T::from_row(row).map_err(|e| {
        let key = row
            .try_get::<String, _>("row_key")
            .unwrap_or_else(|_| "?".to_string());
        decode_error(table, key, e)
    })
}

/// A decoding failure of `table`'s row `row`, as a [`StoreError`].
pub(crate) fn decode_error(table: &'static str, row: String, e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::ColumnDecode { index, source } => StoreError::Decode {
            table,
            column: index.trim_matches('"').to_string(),
            row,
            reason: source.to_string(),
        },
        sqlx::Error::Decode(source) => StoreError::Decode {
            table,
            column: "?".to_string(),
            row,
            reason: source.to_string(),
        },
        other => StoreError::Db(other),
    }
}

/// The first migration of `migrator` that is not in `applied`: what a
/// read-only open refuses on (a newer sqsbeat's extra migrations are fine).
pub(crate) fn missing_migration(
    migrator: &sqlx::migrate::Migrator,
    applied: &[i64],
) -> Result<(), i64> {
    match migrator
        .iter()
        .map(|m| m.version)
        .find(|v| !applied.contains(v))
    {
        Some(v) => Err(v),
        None => Ok(()),
    }
}
