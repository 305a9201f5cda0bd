//! What an operator does to a running schedule, beside the beat: run an
//! entry now ([`run_now`]) and send the slots the ledger lacks
//! ([`backfill()`]). Both work whether or not `sqsbeat run` is running: they
//! send through a [`Sink`] of their own (SQS from the CLI, the in-memory
//! one in tests), claim in the store before the send and settle after, as
//! the beat does, and never hold a transaction across the send.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::beat::backfill::{self, RangeError, Selection};
use crate::entry::{Entry, MANUAL_TRIGGER};
use crate::store::history::{self, Action, Audit, iso};
use crate::store::manual::{self, ManualRun};
use crate::store::{self, Claim, FireKey, Store, StoreError, ledger};
use crate::wire::MessageOptions;
use crate::wire::celery::fire_task_id;
use crate::wire::queue::QueueName;
use crate::wire::sink::{Outgoing, SendError, Sink};

/// The `sqsbeat_trigger` header of a backfilled slot.
pub const BACKFILL_TRIGGER: &str = "backfill";

/// Slots claimed, sent and confirmed per round of a backfill: a backfill
/// that dies leaves at most this many claimed.
const ROUND: usize = 500;

/// How often a backfill renews the claims it is sending: well inside
/// [`ledger::BACKFILL_LEASE_SECS`], so a slow send keeps them its own.
const RENEW_EVERY: std::time::Duration =
    std::time::Duration::from_secs(ledger::BACKFILL_LEASE_SECS as u64 / 4);

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Range(#[from] RangeError),
}

/// The SQS message of `entry` carrying `body` under `task_id`: its queue,
/// and on a FIFO queue its group id (the entry's, else its name) and the
/// task id as deduplication id. What every send of an entry goes out as.
pub fn outgoing(entry: &Entry, opts: &MessageOptions, task_id: Uuid, body: String) -> Outgoing {
    let queue = QueueName::new(&opts.queue_name_prefix, &entry.queue);
    Outgoing {
        task_id,
        group_id: queue.fifo.then(|| {
            entry
                .group_id()
                .map_or_else(|| entry.name.clone(), str::to_string)
        }),
        dedup_id: queue.fifo.then(|| task_id.to_string()),
        queue,
        queue_url: None,
        body,
        delay_seconds: 0,
        attributes: Vec::new(),
    }
}

/// What [`run_now`] did.
#[derive(Debug, Clone)]
pub struct RunNow {
    pub task_id: Uuid,
    pub queue: String,
    pub scheduled_at: DateTime<Utc>,
    pub outcome: Result<(), SendError>,
}

/// Sends `entry`'s task now (at `audit.at`) with a fresh random task id,
/// `sqsbeat_trigger = "manual"` and `sqsbeat_scheduled_at` = now. Claimed in
/// the manual-runs ledger first and settled after, then recorded in the
/// entry's history; the schedule, the entry's cursor and the ledger's
/// slots are untouched.
pub async fn run_now<S: Sink>(
    store: &Store,
    sink: &S,
    opts: &MessageOptions,
    entry: &Entry,
    audit: &Audit,
) -> Result<RunNow, StoreError> {
    let now = audit.at;
    let task_id = crate::clock::random_id();
    manual::claim(
        store,
        &ManualRun {
            task_id,
            entry: entry.name.clone(),
            requested_at: now,
            queue: entry.queue.to_string(),
            actor: audit.actor.clone(),
            outcome: "claimed".into(),
            error: None,
        },
    )
    .await?;
    let id = task_id.to_string();
    let body = entry
        .message_sent_at(&id, now, now, &opts.origin, Some(MANUAL_TRIGGER))
        .sqs_body(now, opts.body_encoding);
    let outcome = sink
        .send_all(vec![outgoing(entry, opts, task_id, body)])
        .await
        .into_iter()
        .next()
        .unwrap_or_else(|| Err(SendError::Request("the sink answered nothing".into())));
    let error = outcome.as_ref().err().map(ToString::to_string);
    manual::settle(store, task_id, error.as_deref().map_or(Ok(()), Err)).await?;
    let detail = json!({
        "task_id": task_id,
        "queue": entry.queue,
        "scheduled_at": iso(now),
        "outcome": if outcome.is_ok() { "sent" } else { "failed" },
        "error": error,
    });
    history::record(store, &entry.name, Action::Run, audit, &detail).await?;
    Ok(RunNow {
        task_id,
        queue: entry.queue.to_string(),
        scheduled_at: now,
        outcome,
    })
}

/// What to backfill.
#[derive(Debug, Clone)]
pub struct BackfillRequest {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Most slots the range may hold.
    pub limit: usize,
    /// The oldest instant the ledger still answers for (now less the
    /// ledger's retention, with a margin).
    pub earliest: DateTime<Utc>,
    pub dry_run: bool,
}

/// What [`backfill()`] found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackfillReport {
    /// Where the beat's slots begin (see [`backfill::bound`]).
    pub bound: Option<DateTime<Utc>>,
    /// Every slot of the range, sorted by what the ledger held.
    #[serde(skip)]
    pub selection: Selection,
    /// Sent and confirmed.
    pub sent: Vec<DateTime<Utc>>,
    /// Not sent: SQS refused them (recorded `missed` again, so a later
    /// backfill tries them again), with why.
    pub failed: Vec<(DateTime<Utc>, String)>,
    /// Selected, but claimed by someone else before this backfill could.
    pub taken: Vec<DateTime<Utc>>,
}

/// Sends every slot of `entry` in `[from, to]` that the ledger has not
/// recorded as sent and that is not the running beat's, each with its
/// deterministic task id and its own `sqsbeat_scheduled_at`, claiming each
/// in the ledger before the send and confirming it `sent` after; so a
/// second backfill of the same range sends nothing. With `dry_run`, only
/// reports what it would send.
pub async fn backfill<S: Sink>(
    store: &Store,
    sink: &S,
    opts: &MessageOptions,
    entry: &Entry,
    req: &BackfillRequest,
    audit: &Audit,
) -> Result<BackfillReport, OpsError> {
    let slots = backfill::slots_in(entry, req.from, req.to, req.earliest, req.limit)?;
    let cursor = store::backfill::cursor(store, &entry.name).await?;
    let bound = backfill::bound(cursor, entry.resume_from(), audit.at);
    let recorded: HashMap<_, _> = store::backfill::recorded(store, &entry.name, req.from, req.to)
        .await?
        .into_iter()
        .collect();
    let mut report = BackfillReport {
        bound: Some(bound),
        selection: backfill::select(&slots, bound, &recorded),
        ..Default::default()
    };
    if req.dry_run || report.selection.send.is_empty() {
        return Ok(report);
    }
    for round in report.selection.send.clone().chunks(ROUND) {
        send_round(store, sink, opts, entry, round, audit.at, &mut report).await?;
    }
    let detail = json!({
        "from": iso(req.from),
        "to": iso(req.to),
        "sent": report.sent.len(),
        "failed": report.failed.len(),
        "already_sent": report.selection.sent.len(),
    });
    history::record(store, &entry.name, Action::Backfill, audit, &detail).await?;
    Ok(report)
}

/// Sends `messages`, renewing the claims on `keys` meanwhile, so a leader
/// beginning a term does not take over (and send again) a slot this
/// backfill is still sending. A renewal that fails is only logged: the
/// claim then lapses, and at worst a leader sends the slot too, with the
/// same task id.
async fn send_renewing<S: Sink>(
    store: &Store,
    sink: &S,
    messages: Vec<Outgoing>,
    keys: &[FireKey],
) -> Vec<Result<(), SendError>> {
    let send = sink.send_all(messages);
    tokio::pin!(send);
    let mut renew = tokio::time::interval(RENEW_EVERY);
    // The claim itself was just made: the first renewal is one period on.
    renew.reset();
    loop {
        tokio::select! {
            results = &mut send => return results,
            _ = renew.tick() => {
                if let Err(e) = store::backfill::renew(store, keys).await {
                    tracing::warn!(error = %e, "backfill: could not renew its claims while sending");
                }
            }
        }
    }
}

/// Claims, sends and settles one round of backfilled slots.
async fn send_round<S: Sink>(
    store: &Store,
    sink: &S,
    opts: &MessageOptions,
    entry: &Entry,
    slots: &[DateTime<Utc>],
    now: DateTime<Utc>,
    report: &mut BackfillReport,
) -> Result<(), StoreError> {
    let claims: Vec<Claim> = slots
        .iter()
        .map(|&slot| Claim {
            entry: entry.name.clone(),
            slot,
            task_id: fire_task_id(&entry.name, slot),
            queue: entry.queue.to_string(),
        })
        .collect();
    let won = store::backfill::claim(store, &claims).await?;
    let ours: std::collections::HashSet<DateTime<Utc>> = won.iter().map(|k| k.slot).collect();
    report
        .taken
        .extend(slots.iter().filter(|s| !ours.contains(s)));
    let keys: Vec<FireKey> = slots
        .iter()
        .filter(|s| ours.contains(s))
        .map(|&slot| FireKey {
            entry: entry.name.clone(),
            slot,
        })
        .collect();
    let messages = keys
        .iter()
        .map(|k| {
            let task_id = fire_task_id(&entry.name, k.slot);
            let id = task_id.to_string();
            let body = entry
                .message_sent_at(&id, k.slot, now, &opts.origin, Some(BACKFILL_TRIGGER))
                .sqs_body(now, opts.body_encoding);
            outgoing(entry, opts, task_id, body)
        })
        .collect();
    let results = send_renewing(store, sink, messages, &keys).await;
    let mut sent = Vec::new();
    let mut failed: HashMap<String, Vec<FireKey>> = HashMap::new();
    for (k, r) in keys.into_iter().zip(results) {
        match r {
            Ok(()) => sent.push(k),
            Err(e) => failed.entry(e.to_string()).or_default().push(k),
        }
    }
    ledger::confirm_sent(store, &sent).await?;
    report.sent.extend(sent.iter().map(|k| k.slot));
    for (why, keys) in failed {
        let reason = format!("backfill: send failed: {why}");
        store::backfill::release(store, &keys, &reason).await?;
        report
            .failed
            .extend(keys.iter().map(|k| (k.slot, why.clone())));
    }
    Ok(())
}
