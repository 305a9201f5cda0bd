//! What `sqsbeat status`, `GET /api/status` and the status page show:
//! replicas and roles, entries with their schedule, last and next fire,
//! whether they are overdue, their pause and their last manual run,
//! pending jobs by due bucket and the next ones, recent failures.
//!
//! Never an entry's or a job's args, kwargs or headers: they may hold
//! secrets the page's readers should not see. Task names, queues and
//! instants only.
//!
//! Bounded at any size: a page of entries (at most [`MAX_PAGE`]) and the
//! store facts of those entries only (one index probe each, their pauses
//! and latest manual runs included), the next
//! [`NEXT_JOBS`] jobs and the [`FAILURES`] most recent failures; the
//! overdue count and names come from the leader's heartbeat row, where
//! its beat published them. At 100 000 entries the JSON of a page of 100
//! is about 30 KB.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use tracing::warn;

use crate::beat::freshness;
use crate::entry::Entry;
use crate::schedule::Schedule;
use crate::store::jobs::{self, Filter, JobStatus};
use crate::store::manual::{self, ManualRun};
use crate::store::pauses::{self, PauseRow};
use crate::store::replicas::{self, Replica};
use crate::store::{Store, StoreError, ledger};

/// A replica not heard from for this long is shown as gone.
pub const GONE_AFTER_S: i64 = 30;
/// Entries per page unless asked otherwise, and the most a page holds.
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 500;
/// Pending jobs listed.
pub const NEXT_JOBS: i64 = 50;
/// Recent failures listed.
pub const FAILURES: i64 = 20;

pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// One entry, as the status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EntryStatus {
    pub name: String,
    pub task: String,
    pub queue: String,
    pub schedule: String,
    pub enabled: bool,
    /// The slot of the last fire SQS accepted.
    pub last_fire: Option<String>,
    /// When the next slot is sent.
    pub next_fire: Option<String>,
    pub overdue: bool,
    /// The outstanding slot that makes it overdue.
    pub overdue_slot: Option<String>,
    /// Its pause, while one is in force (`sqsbeat entries pause`).
    pub paused: Option<PauseStatus>,
    /// Its latest `sqsbeat entries run`.
    pub last_manual_run: Option<ManualStatus>,
}

/// A pause in force, as the status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PauseStatus {
    pub since: String,
    /// `None`: until resumed.
    pub until: Option<String>,
    pub reason: Option<String>,
    pub by: String,
}

impl From<&PauseRow> for PauseStatus {
    fn from(p: &PauseRow) -> Self {
        PauseStatus {
            since: iso(p.paused_at),
            until: p.paused_until.map(iso),
            reason: p.reason.clone(),
            by: p.paused_by.clone(),
        }
    }
}

/// A manual run, as the status shows it: never its payload.
#[derive(Debug, Clone, Serialize)]
pub struct ManualStatus {
    pub at: String,
    pub task_id: String,
    pub by: String,
    /// `claimed`, `sent` or `failed`.
    pub outcome: String,
}

impl From<&ManualRun> for ManualStatus {
    fn from(m: &ManualRun) -> Self {
        ManualStatus {
            at: iso(m.requested_at),
            task_id: m.task_id.to_string(),
            by: m.actor.clone(),
            outcome: m.outcome.clone(),
        }
    }
}

/// An entry's schedule as a person reads it.
pub fn schedule_text(e: &Entry) -> String {
    match &e.schedule {
        Schedule::Cron(c) if c.tz == chrono_tz::Tz::UTC => c.expr.clone(),
        Schedule::Cron(c) => format!("{} ({})", c.expr, c.tz.name()),
        Schedule::Interval(i) => format!(
            "every {}",
            crate::schedule::duration::format_duration(i.every)
        ),
    }
}

/// What the store holds about some entries, by name.
struct Facts {
    cursors: HashMap<String, (DateTime<Utc>, bool)>,
    last: HashMap<String, DateTime<Utc>>,
    unsent: HashMap<String, DateTime<Utc>>,
    /// Every pause row, in force or ended (an ended pause still took its
    /// slots).
    pauses: HashMap<String, PauseRow>,
    manual: HashMap<String, ManualRun>,
}

/// The status of `entries` at `now`, from the store's facts about them
/// alone (cursors, last sent, oldest unsent claim, pause, latest manual
/// run: five statements, one index probe per entry each).
pub async fn entry_statuses(
    store: &Store,
    entries: &[&Entry],
    now: DateTime<Utc>,
) -> Result<Vec<EntryStatus>, StoreError> {
    let names: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
    let mut by_entry = HashMap::new();
    for row in pauses::of(store, &names).await? {
        match row {
            Ok(p) => {
                by_entry.insert(p.entry.clone(), p);
            }
            Err(e) => warn!("{e}; that pause is not honoured"),
        }
    }
    let facts = Facts {
        cursors: ledger::cursors_of(store, &names).await?,
        last: ledger::last_sent(store, &names).await?,
        unsent: ledger::oldest_unsent(store, &names).await?,
        pauses: by_entry,
        manual: manual::latest_of(store, &names).await?,
    };
    Ok(entries
        .iter()
        .map(|e| entry_status(e, &facts, now))
        .collect())
}

fn entry_status(e: &Entry, facts: &Facts, now: DateTime<Utc>) -> EntryStatus {
    // A cursor stored while the entry was disabled is not where the beat
    // resumes it (it starts afresh when enabled).
    let cursor = facts
        .cursors
        .get(&e.name)
        .filter(|(_, enabled)| *enabled)
        .map(|(at, _)| *at);
    let row = facts.pauses.get(&e.name);
    let pause = row.filter(|p| p.active(now));
    let mut from = cursor.map_or(now, |c| c.max(now));
    // Paused: the next fire is the first slot at or after the end of the
    // pause; none while it has no end.
    let mut fires = e.enabled;
    match pause.map(|p| p.paused_until) {
        Some(Some(until)) => from = from.max(until - chrono::Duration::microseconds(1)),
        Some(None) => fires = false,
        None => {}
    }
    let next = fires
        .then(|| e.next_after(from))
        .flatten()
        .map(|f| iso(e.send_at(f.at)));
    let unsent = facts.unsent.get(&e.name).copied();
    let interval = row.map(PauseRow::pause);
    let overdue = freshness::overdue_slot(e, cursor, unsent, interval.as_ref(), now);
    EntryStatus {
        name: e.name.clone(),
        task: e.task.to_string(),
        queue: e.queue.to_string(),
        schedule: schedule_text(e),
        enabled: e.enabled,
        last_fire: facts.last.get(&e.name).map(|t| iso(*t)),
        next_fire: next,
        overdue: overdue.is_some(),
        overdue_slot: overdue.map(iso),
        paused: pause.map(PauseStatus::from),
        last_manual_run: facts.manual.get(&e.name).map(ManualStatus::from),
    }
}

/// A replica as the status shows it.
pub fn replica_json(r: &Replica, now: DateTime<Utc>) -> Value {
    let age = (now - r.seen_at).num_seconds();
    let role = if age > GONE_AFTER_S {
        "gone"
    } else {
        r.role.as_str()
    };
    json!({"holder": r.holder, "role": role, "epoch": r.epoch, "seen_seconds_ago": age,
           "version": r.version, "started_at": iso(r.started_at), "overdue": r.overdue})
}

/// What the current leader last found overdue, from its heartbeat row.
pub fn leader_overdue(replicas: &[Replica], now: DateTime<Utc>) -> Value {
    replicas
        .iter()
        .filter(|r| r.role == "leader" && (now - r.seen_at).num_seconds() <= GONE_AFTER_S)
        .find_map(|r| {
            r.overdue.map(|n| {
                json!({"count": n, "entries": r.overdue_entries, "by": r.holder,
                       "as_of": iso(r.seen_at)})
            })
        })
        .unwrap_or(Value::Null)
}

/// Which entries a page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub offset: usize,
    pub limit: usize,
    /// Only entries whose name contains this.
    pub search: Option<String>,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            offset: 0,
            limit: DEFAULT_PAGE,
            search: None,
        }
    }
}

impl Page {
    /// From a query string (`offset`, `limit`, `q`); what does not parse
    /// is left at its default, and the limit is capped.
    pub fn from_query(query: Option<&str>) -> Page {
        let mut page = Page::default();
        for pair in query.unwrap_or_default().split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v);
            match k {
                "offset" => page.offset = v.parse().unwrap_or(0),
                "limit" => page.limit = v.parse().unwrap_or(DEFAULT_PAGE),
                "q" if !v.is_empty() => page.search = Some(v),
                _ => {}
            }
        }
        page.limit = page.limit.clamp(1, MAX_PAGE);
        page
    }

    /// The entries of this page, by name, and how many match in all.
    pub fn select<'a>(&self, entries: &'a [Entry]) -> (Vec<&'a Entry>, usize) {
        let mut matching: Vec<&Entry> = entries
            .iter()
            .filter(|e| self.search.as_ref().is_none_or(|q| e.name.contains(q)))
            .collect();
        let total = matching.len();
        let end = self.offset.saturating_add(self.limit).min(total);
        if self.offset >= total {
            return (Vec::new(), total);
        }
        // Order only as far as the page's end.
        if end < total {
            matching.select_nth_unstable_by(end, |a, b| a.name.cmp(&b.name));
            matching.truncate(end);
        }
        matching.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        (matching.split_off(self.offset), total)
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a
/// byte; invalid sequences are kept as written.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = b
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (c, hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(v)) => {
                out.push(v);
                i += 2;
            }
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The pending jobs due soonest: never their payload.
async fn next_jobs(store: &Store) -> Result<Vec<Value>, StoreError> {
    let rows = jobs::list(
        store,
        &Filter {
            status: Some(JobStatus::Pending),
            limit: NEXT_JOBS,
            ..Filter::default()
        },
    )
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| match r {
            Ok(j) => json!({"id": j.id, "task": j.task, "queue": j.queue,
                            "due_at": iso(j.due_at), "attempts": j.attempts}),
            Err(e) => json!({"error": e.to_string()}),
        })
        .collect())
}

/// Everything `GET /api/status` answers. `buckets` are the pending-jobs
/// gauge's counts (refreshed every 15 s), not counted again per request.
pub async fn snapshot(
    store: &Store,
    entries: &[Entry],
    page: &Page,
    buckets: Vec<(&'static str, i64)>,
    served_by: Value,
    now: DateTime<Utc>,
) -> Result<Value, StoreError> {
    let replicas = replicas::replicas(store).await?;
    let (shown, total) = page.select(entries);
    let statuses = entry_statuses(store, &shown, now).await?;
    let failures = crate::store::recent_failures(store, FAILURES).await?;
    let pending: serde_json::Map<String, Value> = buckets
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    Ok(json!({
        "now": iso(now),
        "served_by": served_by,
        "replicas": replicas.iter().map(|r| replica_json(r, now)).collect::<Vec<_>>(),
        "overdue": leader_overdue(&replicas, now),
        "entries": {
            "total": total,
            "offset": page.offset,
            "limit": page.limit,
            "search": page.search,
            "items": statuses,
        },
        "pending_jobs": {"buckets": pending, "next": next_jobs(store).await?},
        "recent_failures": failures,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_parameters_are_capped_and_decoded() {
        assert_eq!(Page::from_query(None), Page::default());
        let p = Page::from_query(Some("offset=200&limit=100000&q=night%20ly+x"));
        assert_eq!(p.offset, 200);
        assert_eq!(p.limit, MAX_PAGE);
        assert_eq!(p.search.as_deref(), Some("night ly x"));
        assert_eq!(Page::from_query(Some("limit=0&offset=-3")).limit, 1);
        assert_eq!(Page::from_query(Some("limit=0&offset=-3")).offset, 0);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }
}
