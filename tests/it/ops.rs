//! Operating a running schedule, in-process on both backends: the beat
//! honouring a pause, backfill, a manual run, the history of changes,
//! reschedule and bulk cancel. Judged by the ledger, the tables and the
//! sink's record.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use sqsbeat::beat::backfill::RangeError;
use sqsbeat::beat::driver::{Term, load_pauses};
use sqsbeat::beat::ops::{self, BackfillRequest, OpsError};
use sqsbeat::jobs::JobSpec;
use sqsbeat::store::entries::{self, EntryRow, Saved};
use sqsbeat::store::history::{self, Audit};
use sqsbeat::store::jobs::{self, ClaimRequest, Inserted, JobStatus, Match, Rescheduled};
use sqsbeat::store::{Claim, Store, ledger, manual, pauses};
use sqsbeat::wire::celery::fire_task_id;
use sqsbeat::wire::sink::{MemorySink, Plan};
use uuid::Uuid;

use crate::harness::{Harness, at, entries};

const ENTRY: &str = "[entries.a]\ntask = \"t.a\"\nevery = \"1m\"\nkwargs = { k = 1 }\nheaders = { tenant = \"acme\" }\n";

fn by(t: &str) -> Audit {
    Audit {
        at: at(t),
        actor: "ops@test".into(),
    }
}

/// The kombu envelope of an accepted message.
fn envelope(body: &str) -> Value {
    serde_json::from_slice(&B64.decode(body).unwrap()).unwrap()
}

/// Sets the clock to `t`, turns and waits for the sends.
async fn turn(h: &Harness, term: &mut Term<'_, MemorySink>, t: &str) {
    let t = h.at(t);
    term.turn(t).await.unwrap();
    term.drain().await;
}

/// The ledger rows of entry `a` as (HH:MM, outcome, reason).
async fn rows(h: &Harness) -> Vec<(String, String, String)> {
    h.ledger()
        .await
        .into_iter()
        .filter(|r| r.0 == "a")
        .map(|(_, slot, o, r)| (slot.format("%H:%M").to_string(), o, r))
        .collect()
}

fn row(t: &str, outcome: &str, reason: &str) -> (String, String, String) {
    (t.into(), outcome.into(), reason.into())
}

fn ids(slots: &[&str]) -> Vec<Uuid> {
    slots.iter().map(|s| fire_task_id("a", at(s))).collect()
}

async fn a_pause_is_honoured_ends_at_until_and_is_not_caught_up(h: Harness) {
    let driver = h.driver();
    let epoch = h.new_epoch().await;
    let mut term = driver.begin(Arc::new(entries(ENTRY)), epoch).await.unwrap();
    turn(&h, &mut term, "2026-11-21T10:01:00Z").await;
    let audit = by("2026-11-21T10:01:30Z");
    let until = Some(at("2026-11-21T10:04:00Z"));
    pauses::pause(&h.store, "a", until, Some("maintenance"), &audit)
        .await
        .unwrap();
    term.set_pauses(&load_pauses(&h.store).await.unwrap());
    for t in ["10:02", "10:03", "10:04", "10:05"] {
        turn(&h, &mut term, &format!("2026-11-21T{t}:00Z")).await;
    }
    assert_eq!(
        rows(&h).await,
        [
            row("10:01", "sent", ""),
            row("10:02", "missed", "paused"),
            row("10:03", "missed", "paused"),
            row("10:04", "sent", ""),
            row("10:05", "sent", ""),
        ],
        "the pause's slots are missed; at `until` it fires again by itself"
    );
    // Paused until resumed, then resumed: the paused slots are not caught
    // up, even with a late turn that would catch up a late slot.
    pauses::pause(&h.store, "a", None, None, &by("2026-11-21T10:05:30Z"))
        .await
        .unwrap();
    term.set_pauses(&load_pauses(&h.store).await.unwrap());
    turn(&h, &mut term, "2026-11-21T10:06:00Z").await;
    turn(&h, &mut term, "2026-11-21T10:07:00Z").await;
    let resumed = pauses::resume(&h.store, "a", &by("2026-11-21T10:07:30Z"))
        .await
        .unwrap();
    assert_eq!(
        resumed.map(|r| r.paused_at),
        Some(at("2026-11-21T10:05:30Z"))
    );
    term.set_pauses(&load_pauses(&h.store).await.unwrap());
    turn(&h, &mut term, "2026-11-21T10:08:30Z").await;
    // A pause no leader saw: this term ends, the pause comes and goes, and
    // the next term finds its slots late and misses them (not caught up).
    term.drain().await;
    drop(term);
    let until = Some(at("2026-11-21T10:10:30Z"));
    pauses::pause(&h.store, "a", until, None, &by("2026-11-21T10:08:40Z"))
        .await
        .unwrap();
    h.at("2026-11-21T10:11:10Z");
    let epoch = h.new_epoch().await;
    let mut term = driver.begin(Arc::new(entries(ENTRY)), epoch).await.unwrap();
    turn(&h, &mut term, "2026-11-21T10:11:10Z").await;
    let tail: Vec<_> = rows(&h).await.into_iter().skip(5).collect();
    assert_eq!(
        tail,
        [
            row("10:06", "missed", "paused"),
            row("10:07", "missed", "paused"),
            row("10:08", "sent", ""),
            row("10:09", "missed", "paused"),
            row("10:10", "missed", "paused"),
            row("10:11", "sent", ""),
        ]
    );
    assert_eq!(
        h.accepted_ids(),
        ids(&[
            "2026-11-21T10:01:00Z",
            "2026-11-21T10:04:00Z",
            "2026-11-21T10:05:00Z",
            "2026-11-21T10:08:00Z",
            "2026-11-21T10:11:00Z"
        ])
    );
    // The history says who paused and resumed, and when.
    let events: Vec<(String, String)> = history::list(&h.store, "a")
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            (e.action, e.actor)
        })
        .collect();
    let who = |a: &str| (a.to_string(), "ops@test".to_string());
    assert_eq!(
        events,
        [who("pause"), who("pause"), who("resume"), who("pause")]
    );
}

#[tokio::test]
async fn a_pause_is_honoured_ends_at_until_and_is_not_caught_up_sqlite() {
    a_pause_is_honoured_ends_at_until_and_is_not_caught_up(
        Harness::sqlite(at("2026-11-21T10:00:30Z")).await,
    )
    .await;
}

#[tokio::test]
async fn a_pause_is_honoured_ends_at_until_and_is_not_caught_up_postgres() {
    a_pause_is_honoured_ends_at_until_and_is_not_caught_up(
        Harness::postgres(at("2026-11-21T10:00:30Z")).await,
    )
    .await;
}

/// (slot, source) of every ledger row of entry `a` sent by backfill.
async fn backfilled(store: &Store) -> Vec<String> {
    let q = "SELECT slot FROM ledger WHERE entry = 'a' AND source = 'backfill' AND outcome = 'sent' ORDER BY slot";
    let slots: Vec<DateTime<Utc>> = match store {
        Store::Postgres(s) => sqlx::query_scalar(q).fetch_all(s.pool()).await.unwrap(),
        Store::Sqlite(s) => {
            let v: Vec<String> = sqlx::query_scalar(q).fetch_all(s.pool()).await.unwrap();
            v.iter().map(|t| at(t)).collect()
        }
    };
    slots
        .iter()
        .map(|t| t.format("%H:%M").to_string())
        .collect()
}

async fn backfill_sends_what_the_ledger_lacks_once(h: Harness) {
    // A leader starts at 10:04:30: nothing is recorded before. 10:05 is
    // sent, 10:06 missed (paused), 10:07 sent: the cursor is at 10:07.
    let driver = h.driver();
    let epoch = h.new_epoch().await;
    let set = Arc::new(entries(ENTRY));
    let mut term = driver.begin(set.clone(), epoch).await.unwrap();
    let audit = by("2026-11-21T10:05:30Z");
    let until = Some(at("2026-11-21T10:06:30Z"));
    pauses::pause(&h.store, "a", until, None, &audit)
        .await
        .unwrap();
    term.set_pauses(&load_pauses(&h.store).await.unwrap());
    for t in ["10:05", "10:06", "10:07"] {
        turn(&h, &mut term, &format!("2026-11-21T{t}:00Z")).await;
    }
    // A claim of 10:02 never confirmed (a leader's send in progress).
    let claim = Claim {
        entry: "a".into(),
        slot: at("2026-11-21T10:02:00Z"),
        task_id: fire_task_id("a", at("2026-11-21T10:02:00Z")),
        queue: "celery".into(),
    };
    ledger::record_decision(&h.store, epoch, &[claim], &[], &[])
        .await
        .unwrap();
    let entry = &set[0];
    let req = BackfillRequest {
        from: at("2026-11-21T10:00:00Z"),
        to: at("2026-11-21T10:09:00Z"),
        limit: 1000,
        earliest: at("2026-11-01T00:00:00Z"),
        dry_run: true,
    };
    let now = by("2026-11-21T10:07:30Z");
    let sink = MemorySink::new();
    let dry = ops::backfill(&h.store, &sink, &h.opts, entry, &req, &now)
        .await
        .unwrap();
    let hm = |v: &[DateTime<Utc>]| -> Vec<String> {
        v.iter().map(|t| t.format("%H:%M").to_string()).collect()
    };
    assert_eq!(
        hm(&dry.selection.send),
        ["10:00", "10:01", "10:03", "10:04", "10:06"]
    );
    assert_eq!(hm(&dry.selection.sent), ["10:05"]);
    assert_eq!(hm(&dry.selection.claimed), ["10:02"]);
    assert_eq!(hm(&dry.selection.beat), ["10:07", "10:08", "10:09"]);
    assert_eq!(sink.calls(), 0, "a dry run sends nothing");
    assert!(backfilled(&h.store).await.is_empty());

    // The first message (10:00) fails; the rest go out with their own ids.
    sink.then(Plan::fail(&[0]));
    let req = BackfillRequest {
        dry_run: false,
        ..req
    };
    let first = ops::backfill(&h.store, &sink, &h.opts, entry, &req, &now)
        .await
        .unwrap();
    assert_eq!(hm(&first.sent), ["10:01", "10:03", "10:04", "10:06"]);
    assert_eq!(first.failed.len(), 1);
    let sent: Vec<Uuid> = sink.accepted().iter().map(|a| a.message.task_id).collect();
    assert_eq!(
        sent,
        ids(&[
            "2026-11-21T10:01:00Z",
            "2026-11-21T10:03:00Z",
            "2026-11-21T10:04:00Z",
            "2026-11-21T10:06:00Z"
        ])
    );
    for a in sink.accepted() {
        let headers = &envelope(&a.message.body)["headers"];
        assert_eq!(headers["id"], a.message.task_id.to_string());
        let slot = at(headers["sqsbeat_scheduled_at"].as_str().unwrap());
        assert_eq!(a.message.task_id, fire_task_id("a", slot), "its own slot");
        assert_eq!(headers["sqsbeat_trigger"], "backfill");
        assert_eq!(headers["periodic_task_name"], "a");
        assert_eq!(headers["tenant"], "acme");
    }
    assert_eq!(
        backfilled(&h.store).await,
        ["10:01", "10:03", "10:04", "10:06"]
    );
    let failed = rows(&h).await.into_iter().find(|r| r.0 == "10:00").unwrap();
    assert_eq!(failed.1, "missed", "a failed send is given back");

    // Again: only the slot that failed is sent; a third time, nothing.
    let second = ops::backfill(&h.store, &sink, &h.opts, entry, &req, &now)
        .await
        .unwrap();
    assert_eq!(hm(&second.sent), ["10:00"]);
    let third = ops::backfill(&h.store, &sink, &h.opts, entry, &req, &now)
        .await
        .unwrap();
    assert!(third.sent.is_empty() && third.selection.send.is_empty());
    assert_eq!(sink.accepted().len(), 5, "each slot sent once");

    // The beat goes on from its cursor; nothing is sent twice.
    turn(&h, &mut term, "2026-11-21T10:08:00Z").await;
    let mut all: Vec<Uuid> = h.accepted_ids();
    all.extend(sink.accepted().iter().map(|a| a.message.task_id));
    let distinct: std::collections::BTreeSet<Uuid> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "no slot sent by both");
    assert_eq!(
        all.len(),
        3 + 5,
        "10:05, 10:07, 10:08 by the beat; five by backfill"
    );

    // A range of more slots than allowed is refused, nothing claimed.
    let wide = BackfillRequest {
        from: at("2026-11-19T10:00:00Z"),
        limit: 1000,
        ..req
    };
    let err = ops::backfill(&h.store, &sink, &h.opts, entry, &wide, &now).await;
    assert!(matches!(
        err,
        Err(OpsError::Range(RangeError::TooMany { limit: 1000, .. }))
    ));
    let events: Vec<String> = history::list(&h.store, "a")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.unwrap().action)
        .collect();
    assert_eq!(
        events,
        ["pause", "backfill", "backfill"],
        "a backfill that sends nothing is not a change"
    );
}

#[tokio::test]
async fn backfill_sends_what_the_ledger_lacks_once_sqlite() {
    backfill_sends_what_the_ledger_lacks_once(Harness::sqlite(at("2026-11-21T10:04:30Z")).await)
        .await;
}

#[tokio::test]
async fn backfill_sends_what_the_ledger_lacks_once_postgres() {
    backfill_sends_what_the_ledger_lacks_once(Harness::postgres(at("2026-11-21T10:04:30Z")).await)
        .await;
}

async fn a_manual_run_sends_now_with_a_fresh_id_and_leaves_the_schedule(h: Harness) {
    let driver = h.driver();
    let epoch = h.new_epoch().await;
    let set = Arc::new(entries(ENTRY));
    let mut term = driver.begin(set.clone(), epoch).await.unwrap();
    turn(&h, &mut term, "2026-11-21T10:01:00Z").await;
    let before = (
        h.ledger().await,
        ledger::load_cursors(&h.store).await.unwrap().0,
    );
    let now = by("2026-11-21T10:01:30.250Z");
    let first = ops::run_now(&h.store, &h.sink, &h.opts, &set[0], &now)
        .await
        .unwrap();
    let second = ops::run_now(&h.store, &h.sink, &h.opts, &set[0], &now)
        .await
        .unwrap();
    assert!(first.outcome.is_ok() && second.outcome.is_ok());
    assert_ne!(first.task_id, second.task_id, "a fresh id each time");
    let accepted = h.sink.accepted();
    assert_eq!(accepted.len(), 3);
    for (a, run) in accepted[1..].iter().zip([&first, &second]) {
        assert_eq!(a.message.task_id, run.task_id);
        assert_ne!(a.message.task_id, fire_task_id("a", now.at));
        let env = envelope(&a.message.body);
        let headers = &env["headers"];
        assert_eq!(headers["sqsbeat_trigger"], "manual");
        assert_eq!(headers["sqsbeat_scheduled_at"], "2026-11-21T10:01:30.250Z");
        assert_eq!(headers["task"], "t.a");
        assert_eq!(headers["periodic_task_name"], "a");
        assert_eq!(headers["tenant"], "acme");
        let body: Value =
            serde_json::from_slice(&B64.decode(env["body"].as_str().unwrap()).unwrap()).unwrap();
        assert_eq!(body[1], json!({"k": 1}));
    }
    assert_eq!(
        (
            h.ledger().await,
            ledger::load_cursors(&h.store).await.unwrap().0
        ),
        before,
        "no slot recorded, no cursor moved"
    );
    let latest = manual::latest(&h.store).await.unwrap();
    assert_eq!(latest["a"].outcome, "sent");
    assert_eq!(latest["a"].actor, "ops@test");
    // A failed send is recorded as such.
    h.sink
        .then(Plan::fail_all(sqsbeat::wire::sink::SendError::Request(
            "down".into(),
        )));
    let failed = ops::run_now(
        &h.store,
        &h.sink,
        &h.opts,
        &set[0],
        &by("2026-11-21T10:01:40Z"),
    )
    .await
    .unwrap();
    assert!(failed.outcome.is_err());
    let latest = manual::latest(&h.store).await.unwrap();
    assert_eq!(
        (latest["a"].task_id, latest["a"].outcome.as_str()),
        (failed.task_id, "failed")
    );
    // The schedule goes on as before.
    turn(&h, &mut term, "2026-11-21T10:02:00Z").await;
    assert_eq!(
        h.accepted_ids().last(),
        Some(&fire_task_id("a", at("2026-11-21T10:02:00Z")))
    );
    let runs: Vec<Value> = history::list(&h.store, "a")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.unwrap())
        .map(|e| json!([e.action, e.detail["outcome"], e.detail["task_id"]]))
        .collect();
    assert_eq!(
        runs,
        [
            json!(["run", "sent", first.task_id]),
            json!(["run", "sent", second.task_id]),
            json!(["run", "failed", failed.task_id])
        ]
    );
}

#[tokio::test]
async fn a_manual_run_sends_now_with_a_fresh_id_and_leaves_the_schedule_sqlite() {
    a_manual_run_sends_now_with_a_fresh_id_and_leaves_the_schedule(
        Harness::sqlite(at("2026-11-21T10:00:30Z")).await,
    )
    .await;
}

#[tokio::test]
async fn a_manual_run_sends_now_with_a_fresh_id_and_leaves_the_schedule_postgres() {
    a_manual_run_sends_now_with_a_fresh_id_and_leaves_the_schedule(
        Harness::postgres(at("2026-11-21T10:00:30Z")).await,
    )
    .await;
}

fn entry_row(name: &str, cron: &str) -> EntryRow {
    EntryRow {
        name: name.into(),
        task: "app.report".into(),
        cron: Some(cron.into()),
        args: json!([]),
        kwargs: json!({}),
        headers: json!({}),
        enabled: true,
        ..Default::default()
    }
}

async fn every_cli_change_is_in_the_history(store: Store) {
    let a = by("2026-11-21T10:00:00Z");
    assert_eq!(
        entries::save(&store, &entry_row("n", "0 3 * * *"), false, &a)
            .await
            .unwrap(),
        Saved::Added
    );
    assert_eq!(
        entries::save(&store, &entry_row("n", "0 4 * * *"), false, &a)
            .await
            .unwrap(),
        Saved::Exists
    );
    let mut changed = entry_row("n", "0 4 * * *");
    changed.queue = Some("reports".into());
    let b = Audit {
        at: at("2026-11-21T10:01:00Z"),
        actor: "alice".into(),
    };
    assert_eq!(
        entries::save(&store, &changed, true, &b).await.unwrap(),
        Saved::Replaced
    );
    assert!(entries::set_enabled(&store, "n", false, &a).await.unwrap());
    assert!(entries::set_enabled(&store, "n", true, &a).await.unwrap());
    assert!(
        !entries::set_enabled(&store, "nope", true, &a)
            .await
            .unwrap()
    );
    assert!(entries::remove(&store, "n", &a).await.unwrap());
    let events: Vec<_> = history::list(&store, "n")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.unwrap())
        .collect();
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["add", "replace", "disable", "enable", "remove"]);
    assert_eq!(events[0].detail["after"]["cron"], "0 3 * * *");
    assert_eq!(
        events[1].detail,
        json!({"before": {"cron": "0 3 * * *", "queue": null},
               "after": {"cron": "0 4 * * *", "queue": "reports"}})
    );
    assert_eq!((events[1].actor.as_str(), events[1].at), ("alice", b.at));
    assert_eq!(
        events[2].detail,
        json!({"before": {"enabled": true}, "after": {"enabled": false}})
    );
    assert_eq!(events[4].detail["before"]["queue"], "reports");
    assert!(history::list(&store, "nope").await.unwrap().is_empty());
}

#[tokio::test]
async fn every_cli_change_is_in_the_history_sqlite() {
    let h = Harness::sqlite(at("2026-11-21T10:00:00Z")).await;
    every_cli_change_is_in_the_history(h.store.clone()).await;
}

#[tokio::test]
async fn every_cli_change_is_in_the_history_postgres() {
    let h = Harness::postgres(at("2026-11-21T10:00:00Z")).await;
    every_cli_change_is_in_the_history(h.store.clone()).await;
}

fn job(task: &str, queue: &str, due: &str) -> JobSpec {
    JobSpec {
        id: Uuid::new_v4(),
        task: task.into(),
        args: vec![],
        kwargs: Default::default(),
        queue: queue.into(),
        due_at: at(due),
        expires_at: None,
        priority: 0,
        headers: Default::default(),
    }
}

async fn status(store: &Store, id: Uuid) -> (JobStatus, DateTime<Utc>) {
    let r = jobs::get(store, id).await.unwrap().unwrap();
    (r.status, r.due_at)
}

async fn reschedule_keeps_the_id_and_bulk_cancel_takes_only_pending(store: Store) {
    let now = at("2030-01-01T12:00:00Z");
    let a1 = job("app.a", "q1", "2030-01-02T00:00:00Z");
    let a2 = job("app.a", "q2", "2030-01-03T00:00:00Z");
    let a3 = job("app.a", "q1", "2030-01-04T00:00:00Z");
    let busy = job("app.a", "q1", "2030-01-01T12:05:00Z");
    let b = job("app.b", "q1", "2030-01-02T00:00:00Z");
    for j in [&a1, &a2, &a3, &busy, &b] {
        assert!(matches!(
            jobs::insert(&store, j, "t").await.unwrap(),
            Inserted::Created
        ));
    }
    // `busy` is in its window and claimed by a releaser.
    let claimed = jobs::claim(
        &store,
        &ClaimRequest {
            now,
            window: Duration::minutes(15),
            limit: 10,
            lease_for: Duration::minutes(2),
            only: Some(busy.id),
            token: Uuid::new_v4(),
        },
    )
    .await
    .unwrap();
    assert_eq!(claimed.rows.len(), 1);

    let later = at("2030-02-01T00:00:00Z");
    assert_eq!(
        jobs::reschedule(&store, a1.id, later).await.unwrap(),
        Rescheduled::Done
    );
    assert_eq!(status(&store, a1.id).await, (JobStatus::Pending, later));
    assert_eq!(
        jobs::reschedule(&store, busy.id, later).await.unwrap(),
        Rescheduled::BeingReleased
    );
    assert_eq!(status(&store, busy.id).await.1, busy.due_at, "untouched");
    assert_eq!(
        jobs::reschedule(&store, Uuid::new_v4(), later)
            .await
            .unwrap(),
        Rescheduled::Missing
    );

    // Task app.a on q1 due before 2030-01-10: a3 only (a1 moved out).
    let m = Match {
        task: "app.a".into(),
        queue: Some("q1".into()),
        due_after: None,
        due_before: Some(at("2030-01-10T00:00:00Z")),
    };
    assert_eq!(jobs::cancel_matching(&store, &m, true).await.unwrap(), 1);
    assert_eq!(status(&store, a3.id).await.0, JobStatus::Pending, "dry run");
    assert_eq!(jobs::cancel_matching(&store, &m, false).await.unwrap(), 1);
    assert_eq!(status(&store, a3.id).await.0, JobStatus::Cancelled);
    let all_a = Match {
        task: "app.a".into(),
        ..Default::default()
    };
    // a1 and a2 are pending; `busy` is being released, a3 cancelled.
    assert_eq!(
        jobs::cancel_matching(&store, &all_a, false).await.unwrap(),
        2
    );
    assert_eq!(status(&store, busy.id).await.0, JobStatus::Releasing);
    assert_eq!(
        status(&store, b.id).await.0,
        JobStatus::Pending,
        "another task"
    );
    assert_eq!(
        jobs::reschedule(&store, a2.id, later).await.unwrap(),
        Rescheduled::NotPending(JobStatus::Cancelled)
    );
    assert_eq!(
        jobs::cancel_matching(&store, &all_a, true).await.unwrap(),
        0
    );
}

#[tokio::test]
async fn reschedule_keeps_the_id_and_bulk_cancel_takes_only_pending_sqlite() {
    let h = Harness::sqlite(at("2030-01-01T12:00:00Z")).await;
    reschedule_keeps_the_id_and_bulk_cancel_takes_only_pending(h.store.clone()).await;
}

#[tokio::test]
async fn reschedule_keeps_the_id_and_bulk_cancel_takes_only_pending_postgres() {
    let h = Harness::postgres(at("2030-01-01T12:00:00Z")).await;
    reschedule_keeps_the_id_and_bulk_cancel_takes_only_pending(h.store.clone()).await;
}

/// The real binary in `dir` (SQLite there unless `db`; SQS a closed port).
fn cli(dir: &std::path::Path, db: Option<&str>, args: &[&str]) -> (i32, String, String) {
    crate::stack::cli(dir, db, None, args)
}

fn json_out(out: &str) -> Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn operations_refuse_bad_arguments_before_touching_anything() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let id = "7d9f2c1e-1111-4b2b-9c3d-000000000042";
    for args in [
        vec!["cancel"],
        vec!["cancel", "--queue", "q"],
        vec!["cancel", id, "--task", "app.t"],
        vec!["cancel", "--dry-run"],
        vec!["reschedule", id],
        vec![
            "reschedule",
            id,
            "--at",
            "2030-01-01T00:00:00Z",
            "--in",
            "1h",
        ],
        vec!["backfill", "e", "--from", "2030-01-01T00:00:00Z"],
        vec![
            "backfill",
            "e",
            "--from",
            "2030-01-01T00:00:00Z",
            "--to",
            "2030-01-02T00:00:00Z",
            "--max",
            "0",
        ],
        vec![
            "backfill",
            "e",
            "--from",
            "yesterday",
            "--to",
            "2030-01-02T00:00:00Z",
        ],
        vec!["entries", "pause"],
        vec!["entries", "run"],
    ] {
        let (code, _, err) = cli(d, None, &args);
        assert_eq!(code, 2, "{args:?}: {err}");
    }
    assert!(!d.join("sqsbeat.db").exists(), "no database was created");
}

#[test]
fn pause_resume_history_list_status_and_backfill_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("schedules")).unwrap();
    std::fs::write(
        d.join("schedules/s.toml"),
        "[entries.f]\ntask = \"app.file\"\nevery = \"1m\"\n",
    )
    .unwrap();
    let (code, _, err) = cli(d, None, &["entries", "pause", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("no entry named 'nope'"), "{err}");
    let (code, _, err) = cli(
        d,
        None,
        &["entries", "pause", "f", "--until", "2020-01-01T00:00:00Z"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("is not in the future"), "{err}");
    let (code, out, err) = cli(
        d,
        None,
        &[
            "entries", "pause", "f", "--until", "2h", "--reason", "deploy", "--by", "alice",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("paused entry 'f' until ") && out.trim_end().ends_with(": deploy"),
        "{out}"
    );
    let args = [
        "entries", "add", "d", "--task", "a.b", "--every", "1m", "--by", "bob",
    ];
    assert_eq!(cli(d, None, &args).0, 0);
    let (code, _, err) = cli(d, None, &["entries", "pause", "d", "--reason", "broken"]);
    assert_eq!(code, 0, "{err}");

    let (_, out, _) = cli(d, None, &["entries", "list"]);
    assert_eq!(
        out,
        "NAME  TASK  SCHEDULE  QUEUE   ENABLED  PAUSED\nd     a.b   every 1m  celery  yes      until resumed: broken\n"
    );
    let (code, out, err) = cli(d, None, &["entries", "show", "f", "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let f = json_out(&out);
    assert_eq!(f["defined_in"], "schedules/s.toml:1");
    assert_eq!(
        (
            f["paused"]["reason"].as_str(),
            f["paused"]["paused_by"].as_str()
        ),
        (Some("deploy"), Some("alice"))
    );
    let until = at(f["paused"]["paused_until"].as_str().unwrap());
    let (code, out, err) = cli(d, None, &["status", "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let status = json_out(&out);
    let find = |n: &str| {
        status["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(find("f")["paused"]["reason"], "deploy");
    let next = at(find("f")["next_fire"].as_str().unwrap());
    assert!(
        next >= until && next < until + Duration::minutes(1),
        "{next} {until}"
    );
    assert_eq!(find("d")["paused"]["until"], Value::Null);
    assert_eq!(find("d")["next_fire"], Value::Null, "paused until resumed");
    let (_, table, _) = cli(d, None, &["status"]);
    assert!(table.contains("paused since"), "{table}");

    let (code, out, _) = cli(d, None, &["entries", "resume", "d", "--by", "carol"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("resumed entry 'd'"), "{out}");
    let (code, out, _) = cli(d, None, &["entries", "resume", "d"]);
    assert_eq!(
        (code, out.trim()),
        (0, "entry 'd' is not paused; nothing changed")
    );
    let (_, out, _) = cli(d, None, &["entries", "history", "d", "--output", "json"]);
    let events: Vec<Value> = out.lines().map(json_out).collect();
    let actions: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(actions[0], ("add", "bob"));
    assert_eq!(actions[1].0, "pause");
    assert!(
        actions[1].1.contains('@'),
        "user@host by default: {}",
        actions[1].1
    );
    assert_eq!(actions[2], ("resume", "carol"));
    assert_eq!(events[1]["detail"]["after"]["reason"], "broken");
    let (_, out, _) = cli(d, None, &["entries", "history", "d"]);
    assert!(out.starts_with("AT (UTC)"), "{out}");
    assert!(out.contains("resume") && out.contains("carol"), "{out}");

    // Backfill: a dry run lists the slots and their deterministic ids.
    let now = Utc::now();
    let from =
        DateTime::from_timestamp(now.timestamp() / 60 * 60, 0).unwrap() - Duration::minutes(10);
    let iso = |t: DateTime<Utc>| t.to_rfc3339();
    let (code, out, err) = cli(
        d,
        None,
        &[
            "backfill",
            "f",
            "--from",
            &iso(from),
            "--to",
            &iso(from + Duration::minutes(5)),
            "--dry-run",
            "--output",
            "json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let plan = json_out(&out);
    let want: Vec<Value> = (0..=5)
        .map(|m| {
            let slot = from + Duration::minutes(m);
            json!({"slot": slot.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true), "task_id": fire_task_id("f", slot)})
        })
        .collect();
    assert_eq!(plan["to_send"], Value::Array(want));
    assert_eq!(plan["sent"], json!([]));
    let (_, out, _) = cli(
        d,
        None,
        &[
            "backfill",
            "f",
            "--from",
            &iso(from),
            "--to",
            &iso(from + Duration::minutes(5)),
            "--dry-run",
        ],
    );
    assert!(out.contains(&fire_task_id("f", from).to_string()), "{out}");
    assert!(out.contains("dry run: would send 6 slot(s)"), "{out}");
    // More than 1 000 slots needs --max; older than the ledger keeps, never.
    let wide = [
        "backfill",
        "f",
        "--from",
        &iso(from - Duration::days(2)),
        "--to",
        &iso(from),
        "--dry-run",
    ];
    let (code, _, err) = cli(d, None, &wide);
    assert_eq!(code, 1);
    assert!(
        err.contains("more than 1000 slots in the range; pass --max N"),
        "{err}"
    );
    let mut allowed = wide.to_vec();
    allowed.extend(["--max", "5000"]);
    assert_eq!(cli(d, None, &allowed).0, 0);
    let old = [
        "backfill",
        "f",
        "--from",
        &iso(from - Duration::days(40)),
        "--to",
        &iso(from),
        "--dry-run",
        "--max",
        "100000",
    ];
    let (code, _, err) = cli(d, None, &old);
    assert_eq!(code, 1);
    assert!(err.contains("ledger_retention"), "{err}");
    let (code, _, err) = cli(
        d,
        None,
        &["backfill", "nope", "--from", &iso(from), "--to", &iso(from)],
    );
    assert_eq!(code, 1);
    assert!(err.contains("no entry named 'nope'"), "{err}");
}

#[tokio::test]
async fn reschedule_and_bulk_cancel_through_the_cli_on_postgres() {
    let db = crate::pg::TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = Some(db.url.as_str());
    let mut ids = Vec::new();
    for (task, days) in [("app.x", "2d"), ("app.x", "3d"), ("app.y", "2d")] {
        let (code, out, err) = cli(
            d,
            url,
            &["schedule", task, "--in", days, "--output", "json"],
        );
        assert_eq!(code, 0, "{err}");
        ids.push(json_out(&out)["id"].as_str().unwrap().to_string());
    }
    let (code, out, err) = cli(
        d,
        url,
        &["reschedule", &ids[0], "--in", "5d", "--output", "json"],
    );
    assert_eq!(code, 0, "{err}");
    let moved = json_out(&out);
    assert_eq!(moved["id"], ids[0].as_str(), "keeps its task id");
    assert_eq!(moved["status"], "pending");
    assert!(
        at(moved["due_at"].as_str().unwrap())
            > at(moved["previous_due_at"].as_str().unwrap()) + Duration::days(2)
    );
    let (code, _, err) = cli(
        d,
        url,
        &["reschedule", &ids[0], "--at", "2020-01-01T00:00:00Z"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("is in the past"), "{err}");
    let (code, out, _) = cli(
        d,
        url,
        &[
            "cancel",
            "--task",
            "app.x",
            "--due-after",
            &Utc::now().to_rfc3339(),
            "--dry-run",
        ],
    );
    assert_eq!(code, 0);
    assert!(
        out.starts_with("would cancel 2 pending job(s) of task app.x"),
        "{out}"
    );
    let (code, out, _) = cli(d, url, &["cancel", "--task", "app.x"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("cancelled 2 pending job(s)"), "{out}");
    let (_, out, _) = cli(d, url, &["pending", "--output", "json"]);
    let pending: Vec<Value> = out.lines().map(json_out).collect();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        pending[0]["id"],
        ids[2].as_str(),
        "another task's job stays"
    );
    let (code, _, err) = cli(d, url, &["reschedule", &ids[1], "--in", "1d"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("is cancelled, not pending; only pending jobs can be rescheduled"),
        "{err}"
    );
}

/// (slot, outcome, reason) of `entry`'s ledger rows in the SQLite file of
/// a running `sqsbeat run`.
async fn file_ledger(dir: &std::path::Path, entry: &str) -> Vec<(DateTime<Utc>, String, String)> {
    let s = sqsbeat::store::SqliteStore::open(&dir.join("sqsbeat.db"))
        .await
        .unwrap();
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT slot, outcome, coalesce(reason, '') FROM ledger WHERE entry = ?1 ORDER BY slot",
    )
    .bind(entry)
    .fetch_all(s.pool())
    .await
    .unwrap();
    rows.into_iter().map(|(t, o, r)| (at(&t), o, r)).collect()
}

/// Executed records of the worker, by task id.
fn executed(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<Value>> {
    let mut out: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for r in crate::stack::json_lines(&dir.join("record.jsonl")) {
        if r["event"] == "executed" {
            out.entry(r["id"].as_str().unwrap().to_string())
                .or_default()
                .push(r);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_worker_runs_manual_backfilled_and_rescheduled_sends_and_a_pause_holds_run_until_its_end()
 {
    use std::time::Duration as Std;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_moto, endpoint) = crate::stack::moto(d);
    crate::stack::config_creating_queues(d);
    // Where the CLI finds it too: ./schedules, the default.
    std::fs::create_dir(d.join("schedules")).unwrap();
    let schedule = d.join("schedules/ops.toml");
    std::fs::write(
        &schedule,
        r#"
[defaults]
queue = "ops"

[entries.tick]
task = "ops.tick"
every = "1s"

[entries.report]
task = "examples.tasks.send_report"
every = "1h"
args = [7]
kwargs = { k = "v" }
headers = { tenant = "acme" }

[entries.tens]
task = "ops.tens"
every = "10s"
"#,
    )
    .unwrap();
    // Slots of `tens` before `run` starts: no leader decided them.
    let before = Utc::now();
    let to =
        DateTime::from_timestamp(before.timestamp() / 10 * 10, 0).unwrap() - Duration::seconds(10);
    let from = to - Duration::seconds(50);
    let mut run = crate::stack::sqsbeat_run(d, &endpoint, &schedule);
    let _worker = crate::stack::worker(d, &endpoint, "ops", "ops.tick,ops.tens");
    let sqsbeat = |args: &[&str]| crate::stack::cli(d, None, Some(&endpoint), args);

    // Run now, twice: fresh ids, the entry's own payload, trigger manual.
    let mut manual = Vec::new();
    for _ in 0..2 {
        let (code, out, err) = sqsbeat(&[
            "entries", "run", "report", "--by", "ops", "--output", "json",
        ]);
        assert_eq!(code, 0, "{err}");
        manual.push(json_out(&out));
    }
    // Backfill the six slots of `tens` before `run` started, twice.
    let range = [
        "backfill",
        "tens",
        "--from",
        &from.to_rfc3339(),
        "--to",
        &to.to_rfc3339(),
        "--output",
        "json",
    ];
    let (code, out, err) = sqsbeat(&range);
    assert_eq!(code, 0, "{err}");
    let first = json_out(&out);
    let slots: Vec<DateTime<Utc>> = (0..6).map(|k| from + Duration::seconds(10 * k)).collect();
    let want: Vec<String> = slots
        .iter()
        .map(|s| fire_task_id("tens", *s).to_string())
        .collect();
    let got: Vec<&str> = first["sent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, want, "every slot, with its deterministic id");
    let (code, out, err) = sqsbeat(&range);
    assert_eq!(code, 0, "{err}");
    let second = json_out(&out);
    assert_eq!(second["sent"], json!([]), "a second backfill sends nothing");
    assert_eq!(second["already_sent"].as_array().unwrap().len(), 6);

    // A job two days out, rescheduled into the release window: released at
    // once, under the id it had.
    let args = [
        "schedule",
        "examples.tasks.send_report",
        "--in",
        "2d",
        "--queue",
        "ops",
        "--output",
        "json",
    ];
    let (code, out, err) = sqsbeat(&args);
    assert_eq!(code, 0, "{err}");
    let job = json_out(&out)["id"].as_str().unwrap().to_string();
    let (code, out, err) = sqsbeat(&["reschedule", &job, "--in", "3s", "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    // Released by this command, or by the running replica whose window
    // opened for it too (then possibly still being handed to SQS): never
    // reported as pending once either has it.
    let status = json_out(&out)["status"].clone();
    assert!(status == "released" || status == "releasing", "{out}");

    let mut expected: std::collections::BTreeSet<String> = want.iter().cloned().collect();
    expected.insert(job.clone());
    expected.extend(
        manual
            .iter()
            .map(|m| m["task_id"].as_str().unwrap().to_string()),
    );
    crate::stack::wait_executed(d, Std::from_secs(60), &expected);
    let ran = executed(d);
    let ids: Vec<&str> = manual
        .iter()
        .map(|m| m["task_id"].as_str().unwrap())
        .collect();
    assert_ne!(ids[0], ids[1]);
    for (m, id) in manual.iter().zip(&ids) {
        let r = &ran[*id];
        assert_eq!(r.len(), 1, "executed once: {r:?}");
        let r = &r[0];
        assert_eq!(r["task"], "examples.tasks.send_report");
        assert_eq!(
            (r["args"].clone(), r["kwargs"].clone()),
            (json!([7]), json!({"k": "v"}))
        );
        assert_eq!(r["custom"]["sqsbeat_trigger"], "manual");
        assert_eq!(r["custom"]["tenant"], "acme");
        assert_eq!(r["headers"]["periodic_task_name"], "report");
        assert_eq!(r["headers"]["sqsbeat_scheduled_at"], m["scheduled_at"]);
    }
    assert_eq!(
        ran[&job].len(),
        1,
        "the rescheduled job ran once, with its id"
    );
    for (slot, id) in slots.iter().zip(&want) {
        let r = &ran[id];
        assert_eq!(r.len(), 1, "executed once: {r:?}");
        assert_eq!(
            r[0]["headers"]["sqsbeat_scheduled_at"],
            slot.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        );
        assert_eq!(r[0]["custom"]["sqsbeat_trigger"], "backfill");
    }

    // Pause `tick` for six seconds while `run` runs.
    let until = Utc::now() + Duration::seconds(6);
    let (code, _, err) = sqsbeat(&[
        "entries",
        "pause",
        "tick",
        "--until",
        &until.to_rfc3339(),
        "--reason",
        "e2e",
    ]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = sqsbeat(&["entries", "show", "tick", "--output", "json"]);
    let paused_at = at(json_out(&out)["paused"]["paused_at"].as_str().unwrap());
    let until = at(json_out(&out)["paused"]["paused_until"].as_str().unwrap());
    // Within a second the beat honours it; it resumes by itself at `until`.
    let honoured = paused_at + Duration::milliseconds(1500);
    let after = until + Duration::seconds(3);
    while Utc::now() < after + Duration::seconds(2) {
        std::thread::sleep(Std::from_millis(200));
    }
    let rows = file_ledger(d, "tick").await;
    let inside: Vec<_> = rows
        .iter()
        .filter(|r| r.0 >= honoured && r.0 < until)
        .collect();
    assert!(inside.len() >= 3, "{rows:?}");
    for r in &inside {
        assert_eq!((r.1.as_str(), r.2.as_str()), ("missed", "paused"), "{r:?}");
    }
    let resumed: Vec<_> = rows
        .iter()
        .filter(|r| r.0 >= until && r.0 <= after)
        .collect();
    assert!(resumed.len() >= 3, "{rows:?}");
    assert!(
        resumed.iter().all(|r| r.1 == "sent"),
        "resumed at until: {resumed:?}"
    );
    let status = run.terminate(Std::from_secs(10)).expect("sqsbeat stops");
    assert!(status.success());
    // The worker ran none of the paused slots, and the resumed ones.
    let resumed_ids: std::collections::BTreeSet<String> = resumed
        .iter()
        .map(|r| fire_task_id("tick", r.0).to_string())
        .collect();
    crate::stack::wait_executed(d, Std::from_secs(30), &resumed_ids);
    let ran = executed(d);
    for r in &inside {
        assert!(
            !ran.contains_key(&fire_task_id("tick", r.0).to_string()),
            "paused slot ran: {r:?}"
        );
    }
    assert!(resumed_ids.iter().all(|id| ran.contains_key(id)));
}

async fn the_pauses_watcher_publishes_each_change(h: Harness) {
    let (tx, mut rx) = tokio::sync::watch::channel(Arc::new(Default::default()));
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(sqsbeat::runtime::pauses::watch_pauses(
        h.store.clone(),
        tx,
        stop.clone(),
    ));
    // PostgreSQL: once listening, a change is notified; SQLite: the counter
    // is checked every second. Either way a change arrives well within 5 s.
    let next = |rx: &mut tokio::sync::watch::Receiver<Arc<sqsbeat::beat::driver::Pauses>>| {
        let mut rx = rx.clone();
        async move {
            tokio::time::timeout(std::time::Duration::from_secs(5), rx.changed())
                .await
                .expect("published within 5 s")
                .unwrap();
            rx.borrow_and_update().clone()
        }
    };
    let until = Some(at("2026-11-21T11:00:00Z"));
    // The watcher reads after it starts listening, so a pause committed
    // while it connects is published too.
    pauses::pause(&h.store, "a", until, None, &by("2026-11-21T10:00:00Z"))
        .await
        .unwrap();
    let seen = next(&mut rx).await;
    assert_eq!(seen["a"].until, until);
    rx.borrow_and_update();
    pauses::resume(&h.store, "a", &by("2026-11-21T10:30:00Z"))
        .await
        .unwrap();
    let seen = next(&mut rx).await;
    assert_eq!(seen["a"].until, Some(at("2026-11-21T10:30:00Z")), "resumed");
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn the_pauses_watcher_publishes_each_change_sqlite() {
    the_pauses_watcher_publishes_each_change(Harness::sqlite(at("2026-11-21T10:00:00Z")).await)
        .await;
}

#[tokio::test]
async fn the_pauses_watcher_publishes_each_change_postgres() {
    the_pauses_watcher_publishes_each_change(Harness::postgres(at("2026-11-21T10:00:00Z")).await)
        .await;
}

/// Regression: a leader beginning a term while `sqsbeat backfill` was
/// sending took the backfill's claims for fires whose leader had died, and
/// sent them again. A backfill claim is the backfill's while its lease
/// lasts (renewed as it sends); only one that lapsed (the backfill died)
/// is taken over, and then sent once.
async fn a_leader_leaves_a_live_backfill_claim_alone_and_takes_over_a_lapsed_one(h: Harness) {
    let set = Arc::new(entries(ENTRY));
    // Backfill has claimed 10:03 and is sending it.
    let slot = at("2026-11-21T10:03:00Z");
    let won = sqsbeat::store::backfill::claim(
        &h.store,
        &[Claim {
            entry: "a".into(),
            slot,
            task_id: fire_task_id("a", slot),
            queue: "celery".into(),
        }],
    )
    .await
    .unwrap();
    assert_eq!(won.len(), 1);
    // A leader starts meanwhile (a failover, a restart).
    let driver = h.driver();
    let epoch = h.new_epoch().await;
    let mut term = driver.begin(set.clone(), epoch).await.unwrap();
    turn(&h, &mut term, "2026-11-21T10:04:40Z").await;
    assert!(h.sink.accepted().is_empty(), "not the leader's to send");
    assert_eq!(rows(&h).await, [row("10:03", "claimed", "")]);
    drop(term);
    // The backfill died: its claim lapses. The next term sends it, once.
    let lapsed = "UPDATE ledger SET claimed_at = '2026-11-21T09:00:00.000000Z' WHERE entry = 'a'";
    h.exec(lapsed, lapsed).await;
    let epoch = h.new_epoch().await;
    let mut term = driver.begin(set.clone(), epoch).await.unwrap();
    turn(&h, &mut term, "2026-11-21T10:04:45Z").await;
    drop(term);
    let epoch = h.new_epoch().await;
    let mut term = driver.begin(set, epoch).await.unwrap();
    turn(&h, &mut term, "2026-11-21T10:04:50Z").await;
    assert_eq!(h.accepted_ids(), ids(&["2026-11-21T10:03:00Z"]));
    assert_eq!(rows(&h).await, [row("10:03", "sent", "")]);
}

#[tokio::test]
async fn a_leader_leaves_a_live_backfill_claim_alone_and_takes_over_a_lapsed_one_sqlite() {
    let h = Harness::sqlite(at("2026-11-21T10:04:30Z")).await;
    a_leader_leaves_a_live_backfill_claim_alone_and_takes_over_a_lapsed_one(h).await;
}

#[tokio::test]
async fn a_leader_leaves_a_live_backfill_claim_alone_and_takes_over_a_lapsed_one_postgres() {
    let h = Harness::postgres(at("2026-11-21T10:04:30Z")).await;
    a_leader_leaves_a_live_backfill_claim_alone_and_takes_over_a_lapsed_one(h).await;
}
