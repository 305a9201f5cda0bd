//! The run ledger and the per-entry cursors (`ledger`, `entry_state`):
//! every fire is claimed under the leader's epoch before it is sent,
//! confirmed once SQS accepted it, or recorded as missed with the reason.
//!
//! Fencing: [`record_decision`] checks the leader row's epoch in the same
//! transaction that claims fires (holding a lock on the row until commit
//! on PostgreSQL; SQLite has one writer). A new leader bumps the epoch only
//! after taking the advisory lock, which the previous leader's session
//! held; so once a new epoch exists, no claim under an older one commits.
//! The lock a decision holds (`pg::fence`) blocks an epoch bump but
//! not the leader's own heartbeat.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::sqlite::ROWS_PER_STATEMENT;
use super::sqlite::codec::{self, NOW};
use super::{Failure, FireKey, Store, StoreError, Ts, decode_row};

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

/// A fire claimed but never confirmed, with its attempts so far.
pub type Unconfirmed = (FireKey, i32);

/// How long a claim of `sqsbeat backfill` stays its own without being
/// renewed: a leader beginning a term does not take over a live backfill
/// claim (the backfill is sending it), only one older than this (the
/// backfill died). A backfill renews its claims while it sends
/// ([`super::backfill::renew`]).
pub const BACKFILL_LEASE_SECS: i64 = 60;

/// A claimed ledger row that cannot be read (written by hand): its key as
/// the database spells it, to set it aside by, and why.
#[derive(Debug)]
pub struct UnreadableClaim {
    pub entry: String,
    pub slot: String,
    pub error: StoreError,
}

/// A stored cursor that cannot be read: the entry it belongs to, and why.
#[derive(Debug)]
pub struct UnreadableCursor {
    pub entry: String,
    pub error: StoreError,
}

#[derive(sqlx::FromRow)]
struct FireRow {
    entry: String,
    slot: Ts,
}

impl From<FireRow> for FireKey {
    fn from(r: FireRow) -> Self {
        FireKey {
            entry: r.entry,
            slot: r.slot.0,
        }
    }
}

/// Records one tick's decision under leadership `epoch`: claims, misses
/// and cursors in one transaction that first checks the epoch is still
/// current. Returns the claims that are this leader's to send: a fire
/// already sent or missed (by anyone) is not returned; one still claimed
/// (never confirmed) is taken over.
///
/// A miss for a slot still `claimed` (its retries ran past `expires`, or
/// its entry was removed) turns the row `missed` with the reason; a `sent`
/// row stays `sent`.
pub async fn record_decision(
    store: &Store,
    epoch: i64,
    claims: &[Claim],
    misses: &[Miss],
    cursors: &[Cursor],
) -> Result<Vec<FireKey>, StoreError> {
    record_and_confirm(store, epoch, &[], claims, misses, cursors).await
}

/// [`record_decision`], confirming `sent` ([`confirm_sent`]) in the same
/// transaction: the beat's earlier fires that SQS accepted ride along with
/// its next claim instead of a transaction of their own. All or nothing:
/// should it fail (fenced, or the confirm refused), nothing is recorded
/// and nothing confirmed, and the caller may record the decision alone.
pub async fn record_and_confirm(
    store: &Store,
    epoch: i64,
    sent: &[FireKey],
    claims: &[Claim],
    misses: &[Miss],
    cursors: &[Cursor],
) -> Result<Vec<FireKey>, StoreError> {
    let d = Decision {
        sent,
        claims,
        misses,
        cursors,
    };
    match store {
        Store::Postgres(s) => pg::record_decision(s.pool(), epoch, &d).await,
        Store::Sqlite(s) => lite::record_decision(s, epoch, &d).await,
    }
}

/// What one decision writes.
struct Decision<'a> {
    sent: &'a [FireKey],
    claims: &'a [Claim],
    misses: &'a [Miss],
    cursors: &'a [Cursor],
}

/// Cursors for entries, fenced like a decision (a new leader records where
/// each entry begins).
pub async fn record_cursors(
    store: &Store,
    epoch: i64,
    cursors: &[Cursor],
) -> Result<(), StoreError> {
    record_decision(store, epoch, &[], &[], cursors)
        .await
        .map(|_| ())
}

/// Records slots decided without sending, fenced like a decision: for
/// example the claimed fires of an entry no longer in the schedule, with
/// the reason "entry removed".
pub async fn record_misses(store: &Store, epoch: i64, misses: &[Miss]) -> Result<(), StoreError> {
    if misses.is_empty() {
        return Ok(());
    }
    record_decision(store, epoch, &[], misses, &[])
        .await
        .map(|_| ())
}

/// Marks fires as accepted by SQS.
pub async fn confirm_sent(store: &Store, sent: &[FireKey]) -> Result<(), StoreError> {
    if sent.is_empty() {
        return Ok(());
    }
    match store {
        Store::Postgres(s) => pg::confirm(s.pool(), sent).await,
        Store::Sqlite(s) => {
            let mut tx = s.pool().begin().await?;
            lite::confirm(&mut tx, sent).await?;
            tx.commit().await?;
            Ok(())
        }
    }
}

/// Notes a failed attempt; the fire stays claimed, to be sent again.
pub async fn record_failure(store: &Store, fire: &FireKey, error: &str) -> Result<(), StoreError> {
    match store {
        Store::Postgres(s) => {
            sqlx::query("UPDATE ledger SET attempts = attempts + 1, reason = $3 WHERE entry = $1 AND slot = $2 AND outcome = 'claimed'")
                .bind(&fire.entry)
                .bind(fire.slot)
                .bind(error)
                .execute(s.pool())
                .await?;
        }
        Store::Sqlite(s) => {
            sqlx::query("UPDATE ledger SET attempts = attempts + 1, reason = ?3 WHERE entry = ?1 AND slot = ?2 AND outcome = 'claimed'")
                .bind(&fire.entry)
                .bind(Ts(fire.slot))
                .bind(error)
                .execute(s.pool())
                .await?;
        }
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct CursorRow {
    entry: String,
    cursor: Ts,
    enabled: bool,
}

/// Each entry's stored cursor and whether it was enabled then; and, apart,
/// each row that cannot be read (one bad row must not stop every entry).
pub async fn load_cursors(
    store: &Store,
) -> Result<
    (
        HashMap<String, (DateTime<Utc>, bool)>,
        Vec<UnreadableCursor>,
    ),
    StoreError,
> {
    const SQL: &str = "SELECT entry AS row_key, entry, cursor, enabled FROM entry_state";
    let rows: Vec<(String, Result<CursorRow, StoreError>)> = match store {
        Store::Postgres(s) => sqlx::query(SQL)
            .fetch_all(s.pool())
            .await?
            .iter()
            .map(|r| (key_text(r), decode_row("entry_state", r)))
            .collect(),
        Store::Sqlite(s) => sqlx::query(SQL)
            .fetch_all(s.pool())
            .await?
            .iter()
            .map(|r| (key_text(r), decode_row("entry_state", r)))
            .collect(),
    };
    let mut ok = HashMap::with_capacity(rows.len());
    let mut bad = Vec::new();
    for (entry, row) in rows {
        match row {
            Ok(r) => {
                ok.insert(r.entry, (r.cursor.0, r.enabled));
            }
            Err(error) => bad.push(UnreadableCursor { entry, error }),
        }
    }
    Ok((ok, bad))
}

/// The `row_key` text of a row, `?` when even that cannot be read.
fn key_text<R>(row: &R) -> String
where
    R: sqlx::Row,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    row.try_get::<String, _>("row_key")
        .unwrap_or_else(|_| "?".to_string())
}

#[derive(sqlx::FromRow)]
struct UnconfirmedRow {
    entry: String,
    slot: Ts,
    attempts: i32,
}

/// Fires claimed but never confirmed, oldest first: a leader died between
/// claim and confirm. They are sent again with their original task id.
/// A claim of `sqsbeat backfill` renewed within [`BACKFILL_LEASE_SECS`]
/// is not among them: that backfill is sending it. Rows that cannot be
/// read come apart, each with its key, for [`miss_unreadable`].
pub async fn unconfirmed(
    store: &Store,
) -> Result<(Vec<Unconfirmed>, Vec<UnreadableClaim>), StoreError> {
    let rows: Vec<(String, String, Result<UnconfirmedRow, StoreError>)> = match store {
        Store::Postgres(s) => sqlx::query(
            "SELECT entry || ' ' || slot::text AS row_key, entry AS key_entry, slot::text AS key_slot,
                    entry, slot, attempts
               FROM ledger WHERE outcome = 'claimed'
                AND NOT (source = 'backfill' AND claimed_at > now() - make_interval(secs => $1))
              ORDER BY slot",
        )
        .bind(BACKFILL_LEASE_SECS as f64)
        .fetch_all(s.pool())
        .await?
        .iter()
        .map(unconfirmed_row)
        .collect(),
        Store::Sqlite(s) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT entry || ' ' || slot AS row_key, CAST(entry AS TEXT) AS key_entry,
                    CAST(slot AS TEXT) AS key_slot, entry, slot, attempts
               FROM ledger WHERE outcome = 'claimed'
                AND NOT (source = 'backfill' AND claimed_at > {})
              ORDER BY slot",
            codec::now_less(BACKFILL_LEASE_SECS)
        )))
        .fetch_all(s.pool())
        .await?
        .iter()
        .map(unconfirmed_row)
        .collect(),
    };
    let mut ok = Vec::with_capacity(rows.len());
    let mut bad = Vec::new();
    for (entry, slot, row) in rows {
        match row {
            Ok(r) => ok.push((
                FireKey {
                    entry: r.entry,
                    slot: r.slot.0,
                },
                r.attempts,
            )),
            Err(error) => bad.push(UnreadableClaim { entry, slot, error }),
        }
    }
    Ok((ok, bad))
}

/// One row of [`unconfirmed`] with its key as text.
fn unconfirmed_row<'r, R>(row: &'r R) -> (String, String, Result<UnconfirmedRow, StoreError>)
where
    R: sqlx::Row,
    UnconfirmedRow: sqlx::FromRow<'r, R>,
    &'static str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let text = |column: &'static str| {
        row.try_get::<String, _>(column)
            .unwrap_or_else(|_| "?".to_string())
    };
    (
        text("key_entry"),
        text("key_slot"),
        decode_row("ledger", row),
    )
}

/// Records claimed rows that cannot be read as missed, with why, fenced
/// like a decision: a hand-written row no leader can send must neither
/// stop every other fire nor be retried at every start.
pub async fn miss_unreadable(
    store: &Store,
    epoch: i64,
    rows: &[UnreadableClaim],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let reason = |r: &UnreadableClaim| format!("set aside: {}", r.error);
    match store {
        Store::Postgres(s) => {
            let entries: Vec<&str> = rows.iter().map(|r| r.entry.as_str()).collect();
            let slots: Vec<&str> = rows.iter().map(|r| r.slot.as_str()).collect();
            let reasons: Vec<String> = rows.iter().map(reason).collect();
            let mut tx = s.pool().begin().await?;
            pg::fence(&mut tx, epoch).await?;
            // By the slot's text: the row's slot is what cannot be read.
            sqlx::query(
                "UPDATE ledger SET outcome = 'missed', reason = u.r, epoch = $4
                   FROM UNNEST($1::text[], $2::text[], $3::text[]) AS u(e, s, r)
                  WHERE ledger.entry = u.e AND ledger.slot::text = u.s AND ledger.outcome = 'claimed'",
            )
            .bind(&entries)
            .bind(&slots)
            .bind(&reasons)
            .bind(epoch)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        Store::Sqlite(s) => {
            let json: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| serde_json::json!([r.entry, r.slot, reason(r)]))
                .collect();
            let mut tx = s.pool().begin().await?;
            lite::fence(&mut tx, epoch).await?;
            sqlx::query(
                "UPDATE ledger SET outcome = 'missed', reason = j.value ->> 2, epoch = ?2
                   FROM json_each(?1) AS j
                  WHERE ledger.outcome = 'claimed' AND CAST(ledger.entry AS TEXT) = j.value ->> 0
                    AND CAST(ledger.slot AS TEXT) = j.value ->> 1",
            )
            .bind(serde_json::Value::Array(json).to_string())
            .bind(epoch)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
    }
    Ok(())
}

/// Deletes settled ledger rows whose slot is older than `before`.
pub async fn prune(store: &Store, before: DateTime<Utc>) -> Result<u64, StoreError> {
    let done = match store {
        Store::Postgres(s) => {
            sqlx::query("DELETE FROM ledger WHERE slot < $1 AND outcome <> 'claimed'")
                .bind(before)
                .execute(s.pool())
                .await?
                .rows_affected()
        }
        Store::Sqlite(s) => {
            sqlx::query("DELETE FROM ledger WHERE slot < ?1 AND outcome <> 'claimed'")
                .bind(Ts(before))
                .execute(s.pool())
                .await?
                .rows_affected()
        }
    };
    Ok(done)
}

#[derive(sqlx::FromRow)]
struct LastRow {
    entry: String,
    last: Ts,
}

/// Per entry of `entries`: the slot `pick` selects, given the SQL
/// expression naming the entry.
async fn per_entry_slot(
    store: &Store,
    entries: &[String],
    pick: fn(&str) -> String,
) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
    if entries.is_empty() {
        return Ok(HashMap::new());
    }
    // One index probe per entry on the primary key (entry, slot): a GROUP
    // BY over the ledger read every row of the retention period.
    let rows: Vec<LastRow> = match store {
        Store::Postgres(s) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT u.e AS row_key, u.e AS entry, l.slot AS last
               FROM UNNEST($1::text[]) AS u(e)
               CROSS JOIN LATERAL ({}) AS l",
            pick("u.e")
        )))
        .bind(entries)
        .fetch_all(s.pool())
        .await?
        .iter()
        .map(|r| decode_row("ledger", r))
        .collect::<Result<_, _>>()?,
        Store::Sqlite(s) => {
            let names = serde_json::Value::from(entries.to_vec()).to_string();
            let pick = pick("j.value");
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT row_key, entry, last FROM (
                   SELECT j.value AS row_key, j.value AS entry, ({pick}) AS last FROM json_each(?1) AS j
                 ) WHERE last IS NOT NULL"
            )))
            .bind(names)
            .fetch_all(s.pool())
            .await?
            .iter()
            .map(|r| decode_row("ledger", r))
            .collect::<Result<_, _>>()?
        }
    };
    Ok(rows.into_iter().map(|r| (r.entry, r.last.0)).collect())
}

/// The last sent slot of each of `entries` that has one.
pub async fn last_sent(
    store: &Store,
    entries: &[String],
) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
    per_entry_slot(
        store,
        entries,
        |e| format!("SELECT slot FROM ledger WHERE entry = {e} AND outcome = 'sent' ORDER BY slot DESC LIMIT 1"),
    )
    .await
}

/// The oldest slot of each of `entries` claimed but not (yet) sent: a
/// fire failing to send, or one whose leader died before confirming it.
pub async fn oldest_unsent(
    store: &Store,
    entries: &[String],
) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
    per_entry_slot(
        store,
        entries,
        |e| format!("SELECT slot FROM ledger WHERE entry = {e} AND outcome = 'claimed' ORDER BY slot LIMIT 1"),
    )
    .await
}

/// The stored cursors of `entries` (see [`load_cursors`]).
pub async fn cursors_of(
    store: &Store,
    entries: &[String],
) -> Result<HashMap<String, (DateTime<Utc>, bool)>, StoreError> {
    if entries.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<CursorRow> = match store {
        Store::Postgres(s) => sqlx::query(
            "SELECT entry AS row_key, entry, cursor, enabled FROM entry_state WHERE entry = ANY($1)",
        )
        .bind(entries)
        .fetch_all(s.pool())
        .await?
        .iter()
        .map(|r| decode_row("entry_state", r))
        .collect::<Result<_, _>>()?,
        Store::Sqlite(s) => sqlx::query(
            "SELECT entry AS row_key, entry, cursor, enabled FROM entry_state
              WHERE entry IN (SELECT value FROM json_each(?1))",
        )
        .bind(serde_json::Value::from(entries.to_vec()).to_string())
        .fetch_all(s.pool())
        .await?
        .iter()
        .map(|r| decode_row("entry_state", r))
        .collect::<Result<_, _>>()?,
    };
    Ok(rows
        .into_iter()
        .map(|r| (r.entry, (r.cursor.0, r.enabled)))
        .collect())
}

#[derive(sqlx::FromRow)]
struct FailingRow {
    entry: String,
    slot: Ts,
    attempts: i32,
    reason: String,
}

/// Fires still unsent after a failed attempt, newest first.
pub async fn failing(store: &Store, limit: i64) -> Result<Vec<Failure>, StoreError> {
    let rows: Vec<FailingRow> = match store {
        Store::Postgres(s) => sqlx::query(
            "SELECT entry || ' ' || slot::text AS row_key, entry, slot, attempts, reason FROM ledger
              WHERE outcome = 'claimed' AND reason IS NOT NULL ORDER BY slot DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(s.pool())
        .await?
        .iter()
        .map(|r| decode_row("ledger", r))
        .collect::<Result<_, _>>()?,
        Store::Sqlite(s) => sqlx::query(
            "SELECT entry || ' ' || slot AS row_key, entry, slot, attempts, reason FROM ledger
              WHERE outcome = 'claimed' AND reason IS NOT NULL ORDER BY slot DESC LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(s.pool())
        .await?
        .iter()
        .map(|r| decode_row("ledger", r))
        .collect::<Result<_, _>>()?,
    };
    Ok(rows
        .into_iter()
        .map(|r| Failure {
            kind: "fire",
            name: r.entry,
            at: Some(r.slot.0),
            attempts: i64::from(r.attempts),
            error: r.reason,
        })
        .collect())
}

mod pg {
    use super::*;
    use sqlx::PgPool;

    /// Checks that `epoch` is current and keeps it so until `tx` ends.
    ///
    /// `FOR KEY SHARE`, not `FOR UPDATE`: the leader's heartbeat updates
    /// this row every half second with a deadline, and a `FOR UPDATE` lock
    /// held through a large decision (the cursors of every entry at the
    /// start of a term) made the heartbeat wait past its deadline, so the
    /// leader stepped down, and the next one did the same. A heartbeat
    /// changes no key column, so it takes `FOR NO KEY UPDATE`, which does
    /// not conflict with `FOR KEY SHARE`.
    ///
    /// Still safe against a stale leader: `epoch` has a unique constraint
    /// (migration 0010), so it is a key column, and an update that changes
    /// it (a new leader's bump, `store::leader::Session::take`) takes
    /// `FOR UPDATE`, which conflicts with `FOR KEY SHARE`. The bump
    /// therefore waits until this transaction ends; a decision that saw
    /// its epoch current commits before any newer epoch exists, and one
    /// that starts after the bump sees the new epoch and is fenced. The
    /// lock follows the row through heartbeat updates (PostgreSQL carries a
    /// key-share locker over to the new row version).
    /// tests/it/store.rs checks both halves against the server.
    pub(super) async fn fence(tx: &mut sqlx::PgConnection, epoch: i64) -> Result<(), StoreError> {
        let current: Option<i64> =
            sqlx::query_scalar("SELECT epoch FROM leader WHERE id = 1 FOR KEY SHARE")
                .fetch_optional(&mut *tx)
                .await?;
        if current != Some(epoch) {
            return Err(StoreError::Fenced {
                mine: epoch,
                current,
            });
        }
        Ok(())
    }

    /// Marks `sent` as accepted by SQS.
    pub(super) async fn confirm<'e, E>(executor: E, sent: &[FireKey]) -> Result<(), StoreError>
    where
        E: sqlx::PgExecutor<'e>,
    {
        if sent.is_empty() {
            return Ok(());
        }
        let entries: Vec<&str> = sent.iter().map(|f| f.entry.as_str()).collect();
        let slots: Vec<DateTime<Utc>> = sent.iter().map(|f| f.slot).collect();
        sqlx::query(
            "UPDATE ledger SET outcome = 'sent', sent_at = now(), attempts = attempts + 1, reason = NULL
             FROM UNNEST($1::text[], $2::timestamptz[]) AS u(e, s)
             WHERE ledger.entry = u.e AND ledger.slot = u.s",
        )
        .bind(&entries)
        .bind(&slots)
        .execute(executor)
        .await?;
        Ok(())
    }

    pub(super) async fn record_decision(
        pool: &PgPool,
        epoch: i64,
        d: &Decision<'_>,
    ) -> Result<Vec<FireKey>, StoreError> {
        let Decision {
            sent,
            claims,
            misses,
            cursors,
        } = *d;
        let mut tx = pool.begin().await?;
        fence(&mut tx, epoch).await?;
        confirm(&mut *tx, sent).await?;
        let mut ours = Vec::with_capacity(claims.len());
        if !claims.is_empty() {
            let entries: Vec<&str> = claims.iter().map(|c| c.entry.as_str()).collect();
            let slots: Vec<DateTime<Utc>> = claims.iter().map(|c| c.slot).collect();
            let ids: Vec<Uuid> = claims.iter().map(|c| c.task_id).collect();
            let queues: Vec<&str> = claims.iter().map(|c| c.queue.as_str()).collect();
            // A row still 'claimed' (never confirmed) is taken over; a 'sent'
            // or 'missed' row is final and not returned. A backfill claim
            // taken over becomes the beat's, so that backfill's release of
            // a failed send cannot turn this claim into a miss.
            let rows = sqlx::query(
                "INSERT INTO ledger (entry, slot, task_id, queue, epoch, outcome)
                 SELECT e, s, t, q, $5, 'claimed' FROM UNNEST($1::text[], $2::timestamptz[], $3::uuid[], $4::text[]) AS u(e, s, t, q)
                 ON CONFLICT (entry, slot) DO UPDATE SET epoch = EXCLUDED.epoch, claimed_at = now(), source = 'beat'
                   WHERE ledger.outcome = 'claimed'
                 RETURNING entry || ' ' || slot::text AS row_key, entry, slot",
            )
            .bind(&entries)
            .bind(&slots)
            .bind(&ids)
            .bind(&queues)
            .bind(epoch)
            .fetch_all(&mut *tx)
            .await?;
            for r in &rows {
                ours.push(decode_row::<_, FireRow>("ledger", r)?.into());
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
                 ON CONFLICT (entry, slot) DO UPDATE SET outcome = 'missed', reason = EXCLUDED.reason, epoch = EXCLUDED.epoch
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
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(ours)
    }
}

mod lite {
    use super::*;
    use crate::store::SqliteStore;

    /// Checks that `epoch` is current; SQLite has one writer, so it stays
    /// so until `tx` ends.
    pub(super) async fn fence(
        tx: &mut sqlx::SqliteConnection,
        epoch: i64,
    ) -> Result<(), StoreError> {
        let current: Option<i64> = sqlx::query_scalar("SELECT epoch FROM leader WHERE id = 1")
            .fetch_optional(&mut *tx)
            .await?;
        if current != Some(epoch) {
            return Err(StoreError::Fenced {
                mine: epoch,
                current,
            });
        }
        Ok(())
    }

    /// Marks `sent` as accepted by SQS, in `tx`.
    pub(super) async fn confirm(
        tx: &mut sqlx::SqliteConnection,
        sent: &[FireKey],
    ) -> Result<(), StoreError> {
        for chunk in sent.chunks(ROWS_PER_STATEMENT) {
            sqlx::query(sqlx::AssertSqlSafe(confirm_sql("?1", "true")))
                .bind(sent_json(chunk))
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }

    // The statements of a decision, each taking its rows as a JSON array
    // (`rows`: the parameter) under leadership `epoch` (the parameter), and
    // writing only where `guard` holds. One statement per chunk of rows: a
    // statement per row cost a round trip to SQLite's worker thread each
    // (3.7 s for the 100 000 cursors of a first start).

    /// Accepted by SQS. UPDATE ... FROM probes the primary key per row; a
    /// row-value IN (subquery) scanned the whole ledger.
    fn confirm_sql(rows: &str, guard: &str) -> String {
        format!(
            "UPDATE ledger SET outcome = 'sent', sent_at = {NOW}, attempts = ledger.attempts + 1, reason = NULL
               FROM json_each({rows}) AS j
              WHERE ledger.entry = j.value ->> 0 AND ledger.slot = j.value ->> 1 AND {guard}"
        )
    }

    // Each kind of row as a JSON array of arrays, written straight from
    // tuples (no `serde_json::Value` per field).

    fn sent_json(sent: &[FireKey]) -> String {
        json_rows(sent.iter().map(|f| (&f.entry, codec::text(f.slot))))
    }

    fn json_rows<T: serde::Serialize>(rows: impl Iterator<Item = T>) -> String {
        let rows: Vec<T> = rows.collect();
        // Serializing strings, numbers and booleans cannot fail.
        serde_json::to_string(&rows).unwrap_or_else(|_| "[]".to_string())
    }

    fn claims_sql(rows: &str, epoch: &str, guard: &str) -> String {
        format!(
            "INSERT INTO ledger (entry, slot, task_id, queue, epoch, outcome, claimed_at)
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, {epoch}, 'claimed', {NOW}
               FROM json_each({rows}) WHERE {guard}
             ON CONFLICT (entry, slot) DO UPDATE SET epoch = excluded.epoch, claimed_at = excluded.claimed_at,
               source = 'beat'
               WHERE ledger.outcome = 'claimed'
             RETURNING entry || ' ' || slot AS row_key, entry, slot"
        )
    }

    fn claims_json(claims: &[Claim]) -> String {
        json_rows(claims.iter().map(|c| {
            (
                &c.entry,
                codec::text(c.slot),
                c.task_id.hyphenated().to_string(),
                &c.queue,
            )
        }))
    }

    fn misses_sql(rows: &str, epoch: &str, guard: &str) -> String {
        format!(
            "INSERT INTO ledger (entry, slot, task_id, queue, epoch, outcome, reason, claimed_at)
             SELECT value ->> 0, value ->> 1, '00000000-0000-0000-0000-000000000000', '', {epoch}, 'missed', value ->> 2, {NOW}
               FROM json_each({rows}) WHERE {guard}
             ON CONFLICT (entry, slot) DO UPDATE SET outcome = 'missed', reason = excluded.reason, epoch = excluded.epoch
               WHERE ledger.outcome = 'claimed'"
        )
    }

    fn misses_json(misses: &[Miss]) -> String {
        json_rows(
            misses
                .iter()
                .map(|m| (&m.entry, codec::text(m.slot), &m.reason)),
        )
    }

    /// A cursor never moves back (fixed-width text compares as time).
    fn cursors_sql(rows: &str, guard: &str) -> String {
        format!(
            "INSERT INTO entry_state (entry, cursor, enabled, updated_at)
             SELECT value ->> 0, value ->> 1, value ->> 2, {NOW} FROM json_each({rows}) WHERE {guard}
             ON CONFLICT (entry) DO UPDATE SET cursor = max(entry_state.cursor, excluded.cursor),
               enabled = excluded.enabled, updated_at = excluded.updated_at"
        )
    }

    fn cursors_json(cursors: &[Cursor]) -> String {
        json_rows(
            cursors
                .iter()
                .map(|c| (&c.entry, codec::text(c.cursor), c.enabled)),
        )
    }

    pub(super) async fn record_decision(
        store: &SqliteStore,
        epoch: i64,
        d: &Decision<'_>,
    ) -> Result<Vec<FireKey>, StoreError> {
        if d.sent.len() + d.claims.len() + d.misses.len() + d.cursors.len() <= AT_ONCE {
            return record_at_once(store, epoch, d).await;
        }
        let mut tx = store.pool().begin().await?;
        let ours = record_in_chunks(&mut tx, epoch, d).await?;
        tx.commit().await?;
        Ok(ours)
    }

    /// Rows of a decision small enough to go in one query
    /// ([`record_at_once`]): the per-fire decisions at low rates, and the
    /// first parts of a burst.
    const AT_ONCE: usize = 256;

    /// A small decision as one query of several statements, its transaction
    /// included: one round trip to SQLite's worker thread instead of one per
    /// statement (seven at each fire at low rates, counting BEGIN and
    /// COMMIT).
    ///
    /// The fence cannot stop the statements after it, so each write holds
    /// only under this epoch: a fenced decision commits nothing, and says
    /// so. Should a statement fail, the transaction is rolled back here;
    /// should that fail too, or the query be abandoned midway, the
    /// connection is closed rather than handed on inside a transaction
    /// ([`Batch`]). After the commit the batch reads `PRAGMA data_version`:
    /// a look for other processes' commits that costs nothing more
    /// (`super::listen`).
    ///
    /// Every statement takes the one parameter, a JSON object holding each
    /// kind of row: sqlx binds the parameters of a statement that skips a
    /// number (`?2` and `?5`, say) by position, wrongly.
    async fn record_at_once(
        store: &SqliteStore,
        epoch: i64,
        d: &Decision<'_>,
    ) -> Result<Vec<FireKey>, StoreError> {
        use sqlx::{Column as _, Row as _};
        // The epoch is this leader's own integer: a literal (one cached
        // statement per term) the planner need not look up per row.
        let guard = format!("(SELECT epoch FROM leader WHERE id = 1) = {epoch}");
        let mut sql =
            String::from("BEGIN IMMEDIATE;\nSELECT epoch AS fence FROM leader WHERE id = 1;\n");
        let epoch_sql = epoch.to_string();
        for (rows, statement) in [
            (d.sent.len(), confirm_sql("?1, '$.sent'", &guard)),
            (
                d.claims.len(),
                claims_sql("?1, '$.claims'", &epoch_sql, &guard),
            ),
            (
                d.misses.len(),
                misses_sql("?1, '$.misses'", &epoch_sql, &guard),
            ),
            (d.cursors.len(), cursors_sql("?1, '$.cursors'", &guard)),
        ] {
            if rows > 0 {
                sql.push_str(&statement);
                sql.push_str(";\n");
            }
        }
        sql.push_str("COMMIT;\nPRAGMA data_version;");
        let param = format!(
            r#"{{"sent":{},"claims":{},"misses":{},"cursors":{}}}"#,
            sent_json(d.sent),
            claims_json(d.claims),
            misses_json(d.misses),
            cursors_json(d.cursors)
        );
        let mut batch = Batch::new(store.pool().acquire().await?);
        let opened = store.changes().connections_opened();
        let rows = match sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(param)
            .fetch_all(batch.conn())
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                batch.roll_back().await;
                return Err(e.into());
            }
        };
        batch.done();
        let (mut current, mut version) = (None, None);
        let mut ours = Vec::with_capacity(d.claims.len());
        for r in &rows {
            let column = |name: &str| r.columns().iter().any(|c| c.name() == name);
            if column("fence") {
                current = r.try_get::<Option<i64>, _>("fence")?;
            } else if column("data_version") {
                version = Some(r.try_get::<i64, _>("data_version")?);
            } else {
                ours.push(decode_row::<_, FireRow>("ledger", r)?.into());
            }
        }
        if let Some(v) = version {
            store.changes().looked(opened, v);
        }
        if current != Some(epoch) {
            return Err(StoreError::Fenced {
                mine: epoch,
                current,
            });
        }
        Ok(ours)
    }

    /// A connection running a batch that opens its own transaction, which
    /// sqlx does not know of: unless the batch is [`Batch::done`] (it
    /// committed) or rolled back, the connection is closed when this is
    /// dropped (an abandoned query included), never returned to the pool
    /// inside a transaction.
    struct Batch {
        conn: sqlx::pool::PoolConnection<sqlx::Sqlite>,
        open: bool,
    }

    impl Batch {
        fn new(conn: sqlx::pool::PoolConnection<sqlx::Sqlite>) -> Self {
            Batch { conn, open: true }
        }

        fn conn(&mut self) -> &mut sqlx::SqliteConnection {
            &mut self.conn
        }

        fn done(&mut self) {
            self.open = false;
        }

        /// Rolls back after a failed statement. An error means no
        /// transaction was open (the BEGIN failed, or SQLite rolled back
        /// by itself) or the rollback failed: the connection is closed
        /// either way, and the pool opens a new one.
        async fn roll_back(&mut self) {
            if sqlx::query("ROLLBACK")
                .execute(&mut *self.conn)
                .await
                .is_ok()
            {
                self.open = false;
            }
        }
    }

    impl Drop for Batch {
        fn drop(&mut self) {
            if self.open {
                self.conn.close_on_drop();
            }
        }
    }

    async fn record_in_chunks(
        tx: &mut sqlx::SqliteConnection,
        epoch: i64,
        d: &Decision<'_>,
    ) -> Result<Vec<FireKey>, StoreError> {
        fence(&mut *tx, epoch).await?;
        confirm(&mut *tx, d.sent).await?;
        let mut ours = Vec::with_capacity(d.claims.len());
        for chunk in d.claims.chunks(ROWS_PER_STATEMENT) {
            let won = sqlx::query(sqlx::AssertSqlSafe(claims_sql("?1", "?2", "true")))
                .bind(claims_json(chunk))
                .bind(epoch)
                .fetch_all(&mut *tx)
                .await?;
            for r in &won {
                ours.push(decode_row::<_, FireRow>("ledger", r)?.into());
            }
        }
        for chunk in d.misses.chunks(ROWS_PER_STATEMENT) {
            sqlx::query(sqlx::AssertSqlSafe(misses_sql("?1", "?2", "true")))
                .bind(misses_json(chunk))
                .bind(epoch)
                .execute(&mut *tx)
                .await?;
        }
        for chunk in d.cursors.chunks(ROWS_PER_STATEMENT) {
            sqlx::query(sqlx::AssertSqlSafe(cursors_sql("?1", "true")))
                .bind(cursors_json(chunk))
                .execute(&mut *tx)
                .await?;
        }
        Ok(ours)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// A batch abandoned inside its own transaction (its query
        /// dropped midway, or a failed rollback) closes the connection:
        /// the next user of the pool must not find itself inside that
        /// transaction, where nothing it wrote would ever be committed.
        #[tokio::test]
        async fn an_abandoned_batch_never_hands_its_transaction_on() {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
            let mut batch = Batch::new(store.pool().acquire().await.unwrap());
            sqlx::query("BEGIN IMMEDIATE")
                .execute(batch.conn())
                .await
                .unwrap();
            drop(batch);
            sqlx::query("BEGIN")
                .execute(store.pool())
                .await
                .expect("a fresh connection, outside any transaction");
            sqlx::query("ROLLBACK").execute(store.pool()).await.unwrap();
        }

        /// Entry `a`'s claim of 10:00 and its cursor after it.
        fn claim_and_cursor() -> (chrono::DateTime<chrono::Utc>, Claim, Cursor) {
            let slot = "2026-11-28T10:00:00Z".parse().unwrap();
            let claim = Claim {
                entry: "a".into(),
                slot,
                task_id: uuid::Uuid::from_u128(7),
                queue: "q".into(),
            };
            let cursor = Cursor {
                entry: "a".into(),
                cursor: slot,
                enabled: true,
            };
            (slot, claim, cursor)
        }

        /// A statement that fails in the middle of a decision's batch (here
        /// the cursors, after the claims): sqlx must not run the rest, the
        /// batch's COMMIT included, or the claims would be committed
        /// without their cursors. Nothing of the decision is written, the
        /// error says what failed, and the next user of the connection is
        /// outside any transaction.
        #[tokio::test]
        async fn a_batch_failing_midway_commits_nothing_of_its_decision() {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
            let (_lock, epoch) = store.lock_for_run("t").await.unwrap();
            sqlx::query(
                "CREATE TRIGGER boom BEFORE INSERT ON entry_state \
                 BEGIN SELECT RAISE(ABORT, 'no cursor today'); END",
            )
            .execute(store.pool())
            .await
            .unwrap();
            let (_, claim, cursor) = claim_and_cursor();
            let d = Decision {
                sent: &[],
                claims: std::slice::from_ref(&claim),
                misses: &[],
                cursors: std::slice::from_ref(&cursor),
            };
            let err = record_decision(&store, epoch, &d).await.unwrap_err();
            assert!(err.to_string().contains("no cursor today"), "{err}");
            let claimed: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger")
                .fetch_one(store.pool())
                .await
                .unwrap();
            assert_eq!(claimed, 0, "the claim went in without its cursor");
            sqlx::query("BEGIN")
                .execute(store.pool())
                .await
                .expect("outside any transaction");
            sqlx::query("ROLLBACK").execute(store.pool()).await.unwrap();
            // And the same decision goes through once the fault is gone.
            sqlx::query("DROP TRIGGER boom")
                .execute(store.pool())
                .await
                .unwrap();
            assert_eq!(record_decision(&store, epoch, &d).await.unwrap().len(), 1);
        }

        /// A decision of a leader whose epoch was taken over writes nothing
        /// and says it was fenced, though its batch runs to its COMMIT.
        #[tokio::test]
        async fn a_fenced_batch_writes_nothing() {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
            let (_lock, epoch) = store.lock_for_run("t").await.unwrap();
            sqlx::query("UPDATE leader SET epoch = epoch + 1 WHERE id = 1")
                .execute(store.pool())
                .await
                .unwrap();
            let (slot, claim, cursor) = claim_and_cursor();
            let miss = Miss {
                entry: "b".into(),
                slot,
                reason: "r".into(),
            };
            let d = Decision {
                sent: &[],
                claims: std::slice::from_ref(&claim),
                misses: std::slice::from_ref(&miss),
                cursors: std::slice::from_ref(&cursor),
            };
            let err = record_decision(&store, epoch, &d).await.unwrap_err();
            assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
            for table in ["ledger", "entry_state"] {
                let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT count(*) FROM {table}"
                )))
                .fetch_one(store.pool())
                .await
                .unwrap();
                assert_eq!(rows, 0, "{table}");
            }
        }
    }
}
