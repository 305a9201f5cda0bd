//! The PostgreSQL store: connecting, creating the schema, migrations, and
//! the checked decoding of `timestamptz` and `uuid` for [`Ts`] and [`Id`].
//! The SQL of each table is in its own module (`store::ledger`, ...).
//!
//! Every object lives in sqsbeat's own schema (default `sqsbeat`): each
//! connection sets `search_path` to it, so the SQL is unqualified and an
//! application database can host sqsbeat safely. (`schedule_job()`, which
//! applications call from their own sessions, carries its own
//! `search_path`: see migration 0005.)

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{
    PgArgumentBuffer, PgConnectOptions, PgPool, PgPoolOptions, PgTypeInfo, PgValueFormat,
    PgValueRef, Postgres,
};
use sqlx::{AssertSqlSafe, Connection, Decode, Encode, Type};
use uuid::Uuid;

use super::{Access, DAEMON_CONNECTIONS, Id, StoreError, Ts};

pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

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
    /// Connects with a daemon's pool, creates the schema if needed and
    /// applies pending migrations (idempotent: applied ones are skipped).
    pub async fn connect(url: &str, schema: &str) -> Result<Self, StoreError> {
        Self::open(url, schema, Access::Daemon).await
    }

    /// Connects for `access`: a one-shot command gets one connection (one
    /// handshake is cheaper than two); [`Access::Read`] runs no DDL and
    /// checks that every migration is applied.
    pub async fn open(url: &str, schema: &str, access: Access) -> Result<Self, StoreError> {
        if !valid_schema(schema) {
            return Err(StoreError::Schema(schema.to_string()));
        }
        let base = PgConnectOptions::from_str(url).map_err(|e| StoreError::Url(e.to_string()))?;
        let options = base.options([("search_path", schema)]);
        let connections = match access {
            Access::Daemon => DAEMON_CONNECTIONS,
            Access::Write | Access::Read => 1,
        };
        // One pool for everything: each new connection may cost a TLS
        // handshake. A search_path naming a schema that does not exist yet
        // is allowed, so the pool can create it.
        let pool = PgPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await?;
        match access {
            Access::Daemon | Access::Write => migrate(&pool, schema).await?,
            Access::Read => check_migrated(&pool, schema).await?,
        }
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

/// Creates the schema if needed and applies pending migrations.
async fn migrate(pool: &PgPool, schema: &str) -> Result<(), StoreError> {
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
    sqlx::query(AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
    )))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    // run_direct: `run` on a borrowed connection is not Send in a spawned task.
    MIGRATOR.run_direct(None, &mut *conn, false).await?;
    Ok(())
}

/// A read-only command's check, without DDL: the schema exists and every
/// migration this sqsbeat knows is applied (a newer sqsbeat's extra ones
/// are fine).
async fn check_migrated(pool: &PgPool, schema: &str) -> Result<(), StoreError> {
    // to_regclass answers NULL, not an error, when the schema is missing.
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(pool)
        .await?;
    if table.is_none() {
        return Err(StoreError::NotMigrated(format!(
            "this PostgreSQL database has no sqsbeat schema {schema:?}"
        )));
    }
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await?;
    super::missing_migration(&MIGRATOR, &applied).map_err(|v| {
        StoreError::NotMigrated(format!("sqsbeat schema {schema:?} lacks migration {v}"))
    })
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

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A `timestamptz` as microseconds since 2000-01-01 (its binary form) →
/// an instant, or why not: `infinity`, `-infinity` and years beyond
/// chrono's ±262 142 are valid PostgreSQL values that sqlx's own decoder
/// panics on.
pub(crate) fn instant_from_pg_micros(us: i64) -> Result<DateTime<Utc>, String> {
    match us {
        i64::MAX => Err("infinity is not an instant sqsbeat can use".into()),
        i64::MIN => Err("-infinity is not an instant sqsbeat can use".into()),
        _ => us
            .checked_add(PG_EPOCH_MICROS)
            .and_then(DateTime::<Utc>::from_timestamp_micros)
            .ok_or_else(|| {
                "the instant is out of range (years -262143 to 262142 only)".to_string()
            }),
    }
}

impl Type<Postgres> for Ts {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Ts {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Postgres>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for Ts {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        match value.format() {
            PgValueFormat::Binary => {
                let us = <i64 as Decode<Postgres>>::decode(value)?;
                instant_from_pg_micros(us).map(Ts).map_err(Into::into)
            }
            // Only the simple query protocol answers in text; parsing
            // cannot panic, and infinity is refused like in binary.
            PgValueFormat::Text => {
                let s = value.as_str()?;
                DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z")
                    .map(|t| Ts(t.to_utc()))
                    .map_err(|e| format!("{s:?} is not an instant sqsbeat can use ({e})").into())
            }
        }
    }
}

impl Type<Postgres> for Id {
    fn type_info() -> PgTypeInfo {
        <Uuid as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Id {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Postgres>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for Id {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        <Uuid as Decode<Postgres>>::decode(value).map(Id)
    }
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

    #[test]
    fn infinite_and_out_of_range_instants_are_errors_not_panics() {
        assert_eq!(
            instant_from_pg_micros(0).unwrap().to_rfc3339(),
            "2000-01-01T00:00:00+00:00"
        );
        for us in [i64::MAX, i64::MIN, i64::MAX - 1, i64::MIN + 1] {
            assert!(instant_from_pg_micros(us).is_err(), "{us}");
        }
        assert!(
            instant_from_pg_micros(i64::MAX)
                .unwrap_err()
                .starts_with("infinity")
        );
    }
}
