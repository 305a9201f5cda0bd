//! `sqsbeat backfill NAME --from I --to I`: sends the slots of an entry in
//! a range that the ledger has not recorded as sent (see
//! [`crate::beat::backfill`] for which, and why a running leader never
//! sends one of them too).

use anyhow::Context as _;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::json;

use crate::beat::backfill::DEFAULT_LIMIT;
use crate::beat::ops::{self, BackfillReport, BackfillRequest};
use crate::cli::{BackfillArgs, Output};
use crate::config::Config;
use crate::store::Access;
use crate::wire::celery::fire_task_id;
use crate::wire::sink::{Outgoing, SendError, Sink};
use crate::wire::sqs::SqsSink;

/// How much sooner than the ledger's retention backfill stops trusting it:
/// the leader prunes hourly, by its own clock.
const RETENTION_MARGIN: Duration = Duration::hours(1);

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A sink for `--dry-run`, which must not need SQS: it is never called.
#[derive(Clone)]
struct NoSink;

impl Sink for NoSink {
    async fn send_all(&self, messages: Vec<Outgoing>) -> Vec<Result<(), SendError>> {
        messages
            .iter()
            .map(|_| Err(SendError::Request("a dry run sends nothing".into())))
            .collect()
    }
}

/// `now` is the CLI's one clock read.
pub async fn run(a: BackfillArgs, now: DateTime<Utc>, config: &Config) -> anyhow::Result<bool> {
    let store = crate::cmd::open_store(config, Access::Write).await?;
    let loaded = super::load_all(&[], config).await?;
    let entry = super::find_entry(&loaded, &a.name)?;
    let req = BackfillRequest {
        from: a.from,
        to: a.to,
        limit: a.max.map_or(DEFAULT_LIMIT, |m| m as usize),
        earliest: now - config.ledger_retention + RETENTION_MARGIN,
        dry_run: a.dry_run,
    };
    let opts = crate::wire::MessageOptions::from_config(config);
    let audit = super::audit(a.by.as_deref(), now);
    let report = if a.dry_run {
        ops::backfill(&store, &NoSink, &opts, entry, &req, &audit).await?
    } else {
        let sink = SqsSink::connect(config.sqs.clone())
            .await
            .context("cannot reach SQS; nothing was sent")?;
        ops::backfill(&store, &sink, &opts, entry, &req, &audit).await?
    };
    match a.output {
        Output::Json => println!("{}", as_json(&a, &report)),
        Output::Table => print_table(&a, &report),
    }
    Ok(report.failed.is_empty())
}

fn slot_ids(name: &str, slots: &[DateTime<Utc>]) -> Vec<serde_json::Value> {
    slots
        .iter()
        .map(|s| json!({"slot": iso(*s), "task_id": fire_task_id(name, *s)}))
        .collect()
}

fn as_json(a: &BackfillArgs, r: &BackfillReport) -> serde_json::Value {
    let s = &r.selection;
    let isos = |v: &[DateTime<Utc>]| v.iter().map(|t| iso(*t)).collect::<Vec<_>>();
    json!({
        "entry": a.name,
        "from": iso(a.from),
        "to": iso(a.to),
        "dry_run": a.dry_run,
        "slots": s.send.len() + s.sent.len() + s.claimed.len() + s.beat.len(),
        "beat_from": r.bound.map(iso),
        "to_send": slot_ids(&a.name, &s.send),
        "already_sent": isos(&s.sent),
        "claimed_elsewhere": isos(&s.claimed),
        "left_to_the_beat": isos(&s.beat),
        "sent": slot_ids(&a.name, &r.sent),
        "failed": r.failed.iter().map(|(t, e)| json!({"slot": iso(*t), "error": e})).collect::<Vec<_>>(),
        "taken_meanwhile": isos(&r.taken),
    })
}

fn print_table(a: &BackfillArgs, r: &BackfillReport) {
    let s = &r.selection;
    let total = s.send.len() + s.sent.len() + s.claimed.len() + s.beat.len();
    println!(
        "entry '{}', {} .. {}: {total} slot(s); {} already sent, {} being sent by another sender, {} at or after the beat's cursor{} (left to it), {} to send",
        a.name,
        iso(a.from),
        iso(a.to),
        s.sent.len(),
        s.claimed.len(),
        s.beat.len(),
        r.bound.map_or(String::new(), |b| format!(" {}", iso(b))),
        s.send.len(),
    );
    let listed = if a.dry_run { &s.send } else { &r.sent };
    if !listed.is_empty() {
        println!("SLOT (UTC)                TASK ID");
        for slot in listed {
            println!("{:<25} {}", iso(*slot), fire_task_id(&a.name, *slot));
        }
    }
    if a.dry_run {
        println!("dry run: would send {} slot(s); nothing sent", s.send.len());
        return;
    }
    for (slot, e) in &r.failed {
        eprintln!(
            "error: slot {} not sent: {e}; recorded missed, a later backfill tries it again",
            iso(*slot)
        );
    }
    if !r.taken.is_empty() {
        println!(
            "{} slot(s) were claimed by another sender meanwhile; not sent here",
            r.taken.len()
        );
    }
    println!("sent {} slot(s) of entry '{}'", r.sent.len(), a.name);
}
