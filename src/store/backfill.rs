//! The ledger as `sqsbeat backfill` uses it: an entry's cursor and what is
//! recorded for its slots in a range; a claim that takes only slots with no
//! row or a `missed` one (never one `claimed` by someone else, never one
//! `sent`), in one statement; the renewal of claims being sent (a leader
//! takes over a backfill claim only once it is older than
//! [`super::ledger::BACKFILL_LEASE_SECS`]); and the release of a claim
//! whose send failed. Confirming a send is [`super::ledger::confirm_sent`], as for the
//! beat. See [`crate::beat::backfill`] for why this cannot double-send
//! against a running leader.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::sqlite::ROWS_PER_STATEMENT;
use super::sqlite::codec::{self, NOW};
use super::{Claim, FireKey, Store, StoreError, Ts, decode_row};
use crate::beat::backfill::Recorded;

#[derive(sqlx::FromRow)]
struct CursorRow {
    cursor: Ts,
    enabled: bool,
}

/// The entry's cursor and whether it was enabled when recorded; `None`
/// when no leader has recorded one.
pub async fn cursor(
    store: &Store,
    entry: &str,
) -> Result<Option<(DateTime<Utc>, bool)>, StoreError> {
    let row: Option<CursorRow> = match store {
        Store::Postgres(s) => sqlx::query(
            "SELECT entry AS row_key, cursor, enabled FROM entry_state WHERE entry = $1",
        )
        .bind(entry)
        .fetch_optional(s.pool())
        .await?
        .map(|r| decode_row("entry_state", &r))
        .transpose()?,
        Store::Sqlite(s) => sqlx::query(
            "SELECT entry AS row_key, cursor, enabled FROM entry_state WHERE entry = ?1",
        )
        .bind(entry)
        .fetch_optional(s.pool())
        .await?
        .map(|r| decode_row("entry_state", &r))
        .transpose()?,
    };
    Ok(row.map(|r| (r.cursor.0, r.enabled)))
}

#[derive(sqlx::FromRow)]
struct SlotRow {
    slot: Ts,
    outcome: String,
}

/// What the ledger records for `entry`'s slots in `[from, to]`.
pub async fn recorded(
    store: &Store,
    entry: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, Recorded)>, StoreError> {
    let rows: Vec<SlotRow> = match store {
        Store::Postgres(s) => sqlx::query(
            "SELECT entry || ' ' || slot::text AS row_key, slot, outcome FROM ledger
              WHERE entry = $1 AND slot >= $2 AND slot <= $3",
        )
        .bind(entry)
        .bind(from)
        .bind(to)
        .fetch_all(s.pool())
        .await?
        .iter()
        .map(|r| decode_row("ledger", r))
        .collect::<Result<_, _>>()?,
        Store::Sqlite(s) => sqlx::query(
            "SELECT entry || ' ' || slot AS row_key, slot, outcome FROM ledger
              WHERE entry = ?1 AND slot >= ?2 AND slot <= ?3",
        )
        .bind(entry)
        .bind(Ts(from))
        .bind(Ts(to))
        .fetch_all(s.pool())
        .await?
        .iter()
        .map(|r| decode_row("ledger", r))
        .collect::<Result<_, _>>()?,
    };
    rows.into_iter()
        .map(|r| match Recorded::parse(&r.outcome) {
            Some(o) => Ok((r.slot.0, o)),
            None => Err(StoreError::Decode {
                table: "ledger",
                column: "outcome".into(),
                row: format!("{entry} {}", codec::text(r.slot.0)),
                reason: format!("{:?} is not claimed, sent or missed", r.outcome),
            }),
        })
        .collect()
}

/// Claims slots for backfill: each is taken only if the ledger has no row
/// for it or a `missed` one. Returns the slots taken, which are this
/// caller's to send.
pub async fn claim(store: &Store, claims: &[Claim]) -> Result<Vec<FireKey>, StoreError> {
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    let mut ours = Vec::with_capacity(claims.len());
    match store {
        Store::Postgres(s) => {
            let entries: Vec<&str> = claims.iter().map(|c| c.entry.as_str()).collect();
            let slots: Vec<DateTime<Utc>> = claims.iter().map(|c| c.slot).collect();
            let ids: Vec<Uuid> = claims.iter().map(|c| c.task_id).collect();
            let queues: Vec<&str> = claims.iter().map(|c| c.queue.as_str()).collect();
            // Epoch 0: no leader's; fencing does not apply, since the beat
            // never claims these slots again (see beat::backfill).
            let rows = sqlx::query(
                "INSERT INTO ledger (entry, slot, task_id, queue, epoch, outcome, source)
                 SELECT e, s, t, q, 0, 'claimed', 'backfill'
                   FROM UNNEST($1::text[], $2::timestamptz[], $3::uuid[], $4::text[]) AS u(e, s, t, q)
                 ON CONFLICT (entry, slot) DO UPDATE SET outcome = 'claimed', task_id = EXCLUDED.task_id,
                   queue = EXCLUDED.queue, source = 'backfill', reason = NULL, claimed_at = now()
                   WHERE ledger.outcome = 'missed'
                 RETURNING entry || ' ' || slot::text AS row_key, entry, slot",
            )
            .bind(&entries)
            .bind(&slots)
            .bind(&ids)
            .bind(&queues)
            .fetch_all(s.pool())
            .await?;
            for r in &rows {
                ours.push(decode_row::<_, KeyRow>("ledger", r)?.into());
            }
        }
        Store::Sqlite(s) => {
            let mut tx = s.pool().begin_with("BEGIN IMMEDIATE").await?;
            for chunk in claims.chunks(ROWS_PER_STATEMENT) {
                let rows: Vec<serde_json::Value> = chunk
                    .iter()
                    .map(|c| {
                        serde_json::json!([
                            c.entry,
                            codec::text(c.slot),
                            c.task_id.to_string(),
                            c.queue
                        ])
                    })
                    .collect();
                let won = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO ledger (entry, slot, task_id, queue, epoch, outcome, source, claimed_at)
                     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, 0, 'claimed', 'backfill', {NOW}
                       FROM json_each(?1) WHERE true
                     ON CONFLICT (entry, slot) DO UPDATE SET outcome = 'claimed', task_id = excluded.task_id,
                       queue = excluded.queue, source = 'backfill', reason = NULL, claimed_at = excluded.claimed_at
                       WHERE ledger.outcome = 'missed'
                     RETURNING entry || ' ' || slot AS row_key, entry, slot"
                )))
                .bind(serde_json::Value::Array(rows).to_string())
                .fetch_all(&mut *tx)
                .await?;
                for r in &won {
                    ours.push(decode_row::<_, KeyRow>("ledger", r)?.into());
                }
            }
            tx.commit().await?;
        }
    }
    Ok(ours)
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    entry: String,
    slot: Ts,
}

impl From<KeyRow> for FireKey {
    fn from(r: KeyRow) -> Self {
        FireKey {
            entry: r.entry,
            slot: r.slot.0,
        }
    }
}

/// Renews this backfill's claims on `keys` (those still `claimed` by
/// backfill): while it sends them, a leader beginning a term leaves them
/// alone.
pub async fn renew(store: &Store, keys: &[FireKey]) -> Result<(), StoreError> {
    if keys.is_empty() {
        return Ok(());
    }
    match store {
        Store::Postgres(s) => {
            let entries: Vec<&str> = keys.iter().map(|k| k.entry.as_str()).collect();
            let slots: Vec<DateTime<Utc>> = keys.iter().map(|k| k.slot).collect();
            sqlx::query(
                "UPDATE ledger SET claimed_at = now()
                   FROM UNNEST($1::text[], $2::timestamptz[]) AS u(e, s)
                  WHERE ledger.entry = u.e AND ledger.slot = u.s
                    AND ledger.outcome = 'claimed' AND ledger.source = 'backfill'",
            )
            .bind(&entries)
            .bind(&slots)
            .execute(s.pool())
            .await?;
        }
        Store::Sqlite(s) => {
            let mut tx = s.pool().begin().await?;
            for chunk in keys.chunks(ROWS_PER_STATEMENT) {
                let rows: Vec<serde_json::Value> = chunk
                    .iter()
                    .map(|k| serde_json::json!([k.entry, codec::text(k.slot)]))
                    .collect();
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE ledger SET claimed_at = {NOW}
                       FROM json_each(?1) AS j
                      WHERE ledger.entry = j.value ->> 0 AND ledger.slot = j.value ->> 1
                        AND ledger.outcome = 'claimed' AND ledger.source = 'backfill'"
                )))
                .bind(serde_json::Value::Array(rows).to_string())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

/// Gives back slots whose backfill send failed: `missed`, with the reason,
/// so the next backfill tries them again. Only rows this backfill still
/// holds (`claimed` by backfill) change.
pub async fn release(store: &Store, keys: &[FireKey], reason: &str) -> Result<(), StoreError> {
    if keys.is_empty() {
        return Ok(());
    }
    match store {
        Store::Postgres(s) => {
            let entries: Vec<&str> = keys.iter().map(|k| k.entry.as_str()).collect();
            let slots: Vec<DateTime<Utc>> = keys.iter().map(|k| k.slot).collect();
            sqlx::query(
                "UPDATE ledger SET outcome = 'missed', reason = $3, attempts = attempts + 1
                   FROM UNNEST($1::text[], $2::timestamptz[]) AS u(e, s)
                  WHERE ledger.entry = u.e AND ledger.slot = u.s
                    AND ledger.outcome = 'claimed' AND ledger.source = 'backfill'",
            )
            .bind(&entries)
            .bind(&slots)
            .bind(reason)
            .execute(s.pool())
            .await?;
        }
        Store::Sqlite(s) => {
            let mut tx = s.pool().begin().await?;
            for chunk in keys.chunks(ROWS_PER_STATEMENT) {
                let rows: Vec<serde_json::Value> = chunk
                    .iter()
                    .map(|k| serde_json::json!([k.entry, codec::text(k.slot)]))
                    .collect();
                sqlx::query(
                    "UPDATE ledger SET outcome = 'missed', reason = ?2, attempts = ledger.attempts + 1
                       FROM json_each(?1) AS j
                      WHERE ledger.entry = j.value ->> 0 AND ledger.slot = j.value ->> 1
                        AND ledger.outcome = 'claimed' AND ledger.source = 'backfill'",
                )
                .bind(serde_json::Value::Array(rows).to_string())
                .bind(reason)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}
