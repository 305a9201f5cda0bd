//! The beat driver: reads the wall clock (through a [`Clock`]), asks the
//! pure [`Beat`] what is due, claims it in the ledger under the leader's
//! epoch, sends it through a [`Sink`] and confirms what was accepted.
//!
//! Each turn: read the clock, decide, record (confirming, in the same
//! transaction, the fires SQS accepted since: written by the loop alone),
//! hand the messages to a send task, then wait for the next deadline, a
//! finished send (failures go back to the beat for a retry with backoff),
//! a change of role or entries, or shutdown. Accepted fires no decision
//! carries are confirmed on their own within [`CONFIRM_WITHIN`]. On
//! shutdown no new fire is decided, and every send already in flight
//! finishes and has its outcome recorded and confirmed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn};

use crate::beat::tick::{Beat, DEFAULT_MAX_CATCH_UP, Fire, MissReason, Pause, Skipped};
use crate::clock::{Clock, StepGuard, Trust};
use crate::entry::Entry;
use crate::entry::django::Link;
use crate::runtime::leader::Role;
use crate::runtime::metrics::Metrics;
use crate::store::{self, FireKey, Store, StoreError, django, ledger};
use crate::wire::MessageOptions;
use crate::wire::celery::fire_task_id;
use crate::wire::sink::{Outgoing, SendError, Sink};

/// The ledger reason of a slot missed because its entry was paused.
pub const PAUSED: &str = "paused";

/// Longest single sleep: the loop re-reads the wall clock at least this
/// often, so a clock step or a suspended host is noticed.
const MAX_SLEEP: StdDuration = StdDuration::from_secs(30);

/// Most send tasks in flight; past this the loop waits for one to finish.
const MAX_IN_FLIGHT: usize = 64;

/// After a tick that fired, the next waits at least this long, so under
/// load a tick claims and sends many fires in one transaction and one
/// `SendMessageBatch` instead of one of each per fire (at 100 000 entries a
/// fire falls due every 0.6 ms). An isolated fire is not delayed.
const TICK_GAP: chrono::Duration = chrono::Duration::milliseconds(5);

/// Most entries the first part of a turn decides, claims and hands to a
/// send task; each further part of the same turn takes twice as many, up
/// to [`MAX_CHUNK`]. Small first, so the first messages of a burst leave
/// after a small claim instead of after the whole burst's, and later
/// claims overlap the sends before them.
const FIRST_CHUNK: usize = 64;
const MAX_CHUNK: usize = 2048;

/// How often the leader checks its entries' freshness and exports it: a
/// scan of its heap, under a millisecond at 100 000 entries, and as often
/// as the status page refreshes.
const FRESHNESS_EVERY: chrono::Duration = chrono::Duration::seconds(5);

/// The wait before beginning a term again after one that could not begin
/// or that ended on a failed decision, doubled after each such failure in
/// a row up to [`MAX_BACKOFF`]: a decision write that keeps failing (a
/// constraint, a trigger, a full disk) must not spin.
const FIRST_BACKOFF: StdDuration = StdDuration::from_secs(1);
const MAX_BACKOFF: StdDuration = StdDuration::from_secs(16);

/// Fires SQS accepted and not confirmed yet. The loop confirms them in its
/// next claim transaction ([`ledger::record_and_confirm`]), or on their own
/// once they have waited [`CONFIRM_WITHIN`] with no claim to ride along
/// with, and keeps those whose confirm fails (see `note_failures`).
/// The [`Driver`] keeps them across terms of leadership (clones share
/// them): a term that ends, or is lost, before a confirm got through must
/// not leave them to the next term's resume, which would send them again.
/// Confirmed at the end of each term, and first thing when a term begins.
///
/// Every accepted fire passes through here (a burst of 100 000 included),
/// so the fires are a plain list, taken whole for a confirm and put back
/// only if it fails: no hashing, no copy. Only a term's begin, which must
/// not send one of them again, reads them as a set.
#[derive(Clone, Debug, Default)]
pub struct Accepted(Arc<Mutex<Held>>);

#[derive(Debug, Default)]
struct Held {
    keys: Vec<FireKey>,
    /// When SQS accepted the first of them (host clock).
    since: Option<DateTime<Utc>>,
    /// Whether the last confirm failed (logged when one succeeds again).
    failing: bool,
}

/// Fires taken out for a confirm.
struct Taken {
    keys: Vec<FireKey>,
    since: Option<DateTime<Utc>>,
}

/// How long an accepted fire waits for the next claim transaction to carry
/// its confirm, before it is confirmed on its own. One transaction per fire
/// instead of two while fires are at most this far apart (at low rates,
/// those of an entry every second and anything more frequent); a leader
/// killed in between leaves the fire claimed, and the next leader sends it
/// again with its task id, as for a kill between send and confirm.
pub const CONFIRM_WITHIN: Duration = Duration::seconds(1);

impl Accepted {
    fn add(&self, keys: impl IntoIterator<Item = FireKey>, at: DateTime<Utc>) {
        let mut held = self.lock();
        let before = held.keys.len();
        held.keys.extend(keys);
        if held.keys.len() > before {
            held.since = Some(held.since.map_or(at, |s| s.min(at)));
        }
    }

    /// The fires held, as a set.
    fn set(&self) -> HashSet<FireKey> {
        self.lock().keys.iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // A panic while holding this lock leaves a valid list behind.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the fires held must be confirmed on their own, if no claim
    /// carries them first.
    fn due(&self) -> Option<DateTime<Utc>> {
        self.lock().since.map(|s| s + CONFIRM_WITHIN)
    }

    /// Takes every fire held for a confirm. Only the task that leads adds
    /// or confirms, one at a time, so nothing is added while the fires are
    /// out.
    fn take(&self) -> Taken {
        let mut held = self.lock();
        Taken {
            keys: std::mem::take(&mut held.keys),
            since: held.since.take(),
        }
    }

    /// Notes how the confirm of `taken` ended; keeps the fires if it
    /// failed.
    fn settle(&self, taken: Taken, result: Result<(), StoreError>) {
        let mut held = self.lock();
        match result {
            Ok(()) => {
                if held.failing {
                    info!(
                        fires = taken.keys.len(),
                        "confirmed sent fires on a second try"
                    );
                }
                held.failing = false;
            }
            Err(e) => {
                warn!(error = %e, fires = taken.keys.len(), "could not confirm sent fires; trying again with the next decision");
                held.failing = true;
                drop(held);
                self.put_back(taken);
            }
        }
    }

    /// Puts fires taken out back, as they were.
    fn put_back(&self, taken: Taken) {
        let mut held = self.lock();
        let added = std::mem::replace(&mut held.keys, taken.keys);
        held.keys.extend(added);
        held.since = match (held.since, taken.since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Tries to confirm every fire held, in a transaction of its own.
    async fn confirm(&self, store: &Store) {
        let taken = self.take();
        if taken.keys.is_empty() {
            return;
        }
        let result = ledger::confirm_sent(store, &taken.keys).await;
        self.settle(taken, result);
    }

    /// [`Accepted::confirm`] if the fires held waited long enough at `now`
    /// (or the clock stepped back past them).
    async fn confirm_if_due(&self, store: &Store, now: DateTime<Utc>) {
        let since = self.lock().since;
        if since.is_some_and(|s| now >= s + CONFIRM_WITHIN || now < s) {
            self.confirm(store).await;
        }
    }
}

/// What the driver works with.
#[derive(Clone)]
pub struct Driver<S> {
    /// What the host clock is worth against the database's
    /// ([`crate::clock::Trust`]): no decision on a clock that is off.
    pub trust: watch::Receiver<Trust>,
    pub store: Store,
    pub sink: S,
    pub opts: MessageOptions,
    pub clock: Clock,
    /// Where the `in_progress` check-ins of monitored entries go.
    pub check_ins: crate::runtime::sentry::CheckIns,
    /// Accepted fires not confirmed yet, kept from one term to the next.
    pub accepted: Accepted,
    /// Where the fire counters and freshness go: the process's registry
    /// ([`crate::runtime::metrics::get`]); a test that judges them gives
    /// its driver a registry of its own, as the registry is shared by
    /// every driver in the process.
    pub metrics: &'static crate::runtime::metrics::Metrics,
}

/// Each paused entry's pause, by name.
pub type Pauses = HashMap<String, Pause>;

/// The watch channels a term of leadership reacts to.
struct Watched<'a> {
    role: &'a mut watch::Receiver<Role>,
    entries: &'a mut watch::Receiver<Arc<Vec<Entry>>>,
    pauses: &'a mut watch::Receiver<Arc<Pauses>>,
}

/// The pauses in the store; a row that cannot be read is logged and
/// pauses nothing.
pub async fn load_pauses(store: &Store) -> Result<Pauses, StoreError> {
    let (ok, bad) = store::pauses::intervals(store).await?;
    for e in bad {
        error!("{e}; this pause is not honoured");
    }
    Ok(ok)
}

/// What a finished send task hands back.
struct Sent {
    due: Vec<Fire>,
    ids: Vec<String>,
    results: Vec<Result<(), SendError>>,
    accepted_at: DateTime<Utc>,
    /// The accepted fires, for the loop to confirm.
    unconfirmed: Vec<FireKey>,
    /// What became of the write-back of accepted fires of
    /// django-celery-beat rows.
    written: WriteBack,
}

/// The write-back of a send's django-celery-beat runs.
enum WriteBack {
    /// No fire of a django-celery-beat row was accepted.
    Nothing,
    Written,
    /// The runs not written, and why.
    Failed(django::Runs, StoreError),
}

/// How a term of leadership ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Leadership moved, the entries changed, or shutdown.
    Stopped,
    /// A decision could not be recorded; `decided` says whether any had
    /// been in this term.
    Failed { decided: bool },
}

/// A write under this leader's epoch failed (fenced, or the database is
/// gone): it must stop deciding.
#[derive(Debug)]
pub struct Fenced;

impl<S: Sink> Driver<S> {
    /// Runs until `shutdown` is cancelled, then waits for in-flight sends.
    ///
    /// Fires only while this replica leads: on each election, and whenever
    /// the entry set changes, it rebuilds its state from the ledger
    /// (cursors, unconfirmed claims); it stops deciding the moment the role
    /// changes or a fenced write fails. A change of `pauses` applies at
    /// once, without a rebuild.
    pub async fn run(
        self,
        mut entries: watch::Receiver<Arc<Vec<Entry>>>,
        mut pauses: watch::Receiver<Arc<Pauses>>,
        mut role: watch::Receiver<Role>,
        shutdown: CancellationToken,
    ) {
        info!(entries = entries.borrow().len(), "beat started");
        let mut backoff = None;
        while !shutdown.is_cancelled() {
            let current = *role.borrow_and_update();
            let Role::Leader { epoch, .. } = current else {
                self.metrics.clear_freshness();
                tokio::select! {
                    changed = role.changed() => if changed.is_err() { break },
                    _ = shutdown.cancelled() => break,
                }
                continue;
            };
            let set = entries.borrow_and_update().clone();
            // `begin` reads the pauses from the store; from then on every
            // change is published (after its commit) and applied.
            pauses.borrow_and_update();
            let ended = match self.begin(set, epoch).await {
                Ok(mut term) => {
                    let mut watched = Watched {
                        role: &mut role,
                        entries: &mut entries,
                        pauses: &mut pauses,
                    };
                    term.lead(&mut watched, &shutdown).await
                }
                Err(e) => {
                    error!(epoch, error = %e, "cannot load state as leader; retrying");
                    Ended::Failed { decided: false }
                }
            };
            backoff = next_backoff(backoff, ended);
            if let Some(wait) = backoff {
                // A change of role (a fenced decision is usually followed
                // by one) is acted on at once.
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    changed = role.changed() => if changed.is_err() { break },
                    _ = shutdown.cancelled() => break,
                }
            }
        }
        info!("beat stopped");
    }

    /// Starts a term of leadership under `epoch` with the beat as the
    /// ledger left it: each entry resumes after its last decided slot,
    /// except one that was disabled or is new, which starts now (a
    /// re-enabled entry does not fire the slots it missed while disabled),
    /// or at its `resume_from` if it has one (a django-celery-beat row: its
    /// last run or change).
    /// Claims never confirmed are due again, with their task ids.
    ///
    /// Fires this driver sent in an earlier term whose confirm failed are
    /// confirmed first, and are never sent again, even while their confirm
    /// still fails.
    pub async fn begin(
        &self,
        entries: Arc<Vec<Entry>>,
        epoch: i64,
    ) -> Result<Term<'_, S>, StoreError> {
        self.accepted.confirm(&self.store).await;
        let (mut beat, misses) = self.resume(&entries, epoch).await?;
        beat.set_pauses(&load_pauses(&self.store).await?);
        let tracked = track(self.metrics, &self.store, &entries).await?;
        let now = self.clock.now();
        Ok(Term {
            driver: self,
            beat,
            epoch,
            in_flight: JoinSet::new(),
            misses,
            unwritten: django::Runs::default(),
            write_back_denied: false,
            decided: false,
            earliest: now,
            guard: {
                let mut g = StepGuard::default();
                g.observe(now);
                g
            },
            trust: self.trust.clone(),
            held: false,
            tracked,
            next_freshness: now,
            overdue_reported: 0,
        })
    }

    async fn resume(
        &self,
        entries: &Arc<Vec<Entry>>,
        epoch: i64,
    ) -> Result<(Beat, Vec<store::Miss>), StoreError> {
        let start = self.clock.now();
        let store = &self.store;
        let stored = load_cursors(store).await?;
        let mut beat = Beat::new(
            entries.clone(),
            start,
            |e| match stored.get(&e.name) {
                Some((at, true)) if e.enabled => Some(*at),
                // Never after now: a row saved with a clock ahead of ours
                // must not skip slots.
                _ => e.resume_from().map(|t| t.min(start)),
            },
            DEFAULT_MAX_CATCH_UP,
        );
        // Only the cursors the store does not hold as they are (new entries,
        // entries enabled or disabled since, and every disabled entry: its
        // cursor is this term's start): at a restart every enabled entry
        // resumes from its stored cursor, and rewriting 100 000 of them
        // unchanged delayed the first fire by a fifth of a second (SQLite)
        // to half a second (PostgreSQL). The store's value read at the
        // start of this term is what is compared: a row changed or deleted
        // by hand since is not rewritten until the entry next fires.
        let cursors: Vec<store::Cursor> = beat
            .entries()
            .iter()
            .enumerate()
            .filter(|(i, e)| stored.get(&e.name) != Some(&(beat.cursor(*i), e.enabled)))
            .map(|(i, e)| store::Cursor {
                entry: e.name.clone(),
                cursor: beat.cursor(i),
                enabled: e.enabled,
            })
            .collect();
        ledger::record_cursors(store, epoch, &cursors).await?;
        let (claims, mut misses) = self.claims(entries, epoch).await?;
        let resent = claims.len();
        let judged = beat.resume_claims(claims, start);
        if resent > 0 {
            info!(
                claims = resent,
                resent = resent - judged.len(),
                "fires claimed but never confirmed: re-sending those catch_up still allows"
            );
        }
        report_missed(self.metrics, &beat, &judged);
        misses.extend(judged.iter().map(|m| miss_row(&beat, m)));
        Ok((beat, misses))
    }

    /// The ledger's unconfirmed claims as fires of `entries`, to send
    /// again, and the misses to record for those of entries no longer in
    /// the schedule. A fire this driver knows SQS accepted is left out;
    /// rows that cannot be read are recorded missed at once.
    async fn claims(
        &self,
        entries: &[Entry],
        epoch: i64,
    ) -> Result<(Vec<Fire>, Vec<store::Miss>), StoreError> {
        let (pending, unreadable) = ledger::unconfirmed(&self.store).await?;
        for r in &unreadable {
            error!(entry = %r.entry, slot = %r.slot, "{}; the claim is recorded missed and not sent", r.error);
        }
        ledger::miss_unreadable(&self.store, epoch, &unreadable).await?;
        let index: HashMap<&str, usize> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.as_str(), i))
            .collect();
        let accepted = self.accepted.set();
        let mut claims = Vec::new();
        let mut misses = Vec::new();
        for (key, attempts) in pending {
            if accepted.contains(&key) {
                continue;
            }
            let FireKey { entry, slot } = key;
            match index.get(entry.as_str()) {
                Some(&i) => claims.push(Fire {
                    entry: i,
                    nominal: slot,
                    attempt: attempts.max(0) as u32,
                }),
                None => {
                    warn!(%entry, slot = %slot.to_rfc3339(), "unconfirmed fire of an entry no longer in the schedule; recorded as missed");
                    misses.push(store::Miss {
                        entry,
                        slot,
                        reason: "entry removed before the fire was confirmed".into(),
                    });
                }
            }
        }
        Ok((claims, misses))
    }
}

/// The stored cursors. A row that cannot be read (written by hand) is
/// logged and its entry starts as if it had none: it must not stop every
/// other entry.
async fn load_cursors(store: &Store) -> Result<HashMap<String, (DateTime<Utc>, bool)>, StoreError> {
    let (ok, bad) = ledger::load_cursors(store).await?;
    for b in bad {
        error!(entry = %b.entry, "{}; until then the entry starts as if it had no cursor: at its next slot from now (a django-celery-beat row: from its last run)", b.error);
    }
    Ok(ok)
}

/// The wait before the next term, after one that ended as `ended`.
fn next_backoff(last: Option<StdDuration>, ended: Ended) -> Option<StdDuration> {
    match ended {
        Ended::Stopped => None,
        // A term that decided something was healthy for a while: start over.
        Ended::Failed { decided: true } => Some(FIRST_BACKOFF),
        Ended::Failed { decided: false } => {
            Some(last.map_or(FIRST_BACKOFF, |d| (d * 2).min(MAX_BACKOFF)))
        }
    }
}

/// One term of leadership: the beat's state and the sends in flight.
/// [`Driver::run`] drives it from the clock; tests drive it step by step
/// with [`Term::turn`] at instants of their choosing and [`Term::drain`].
pub struct Term<'a, S> {
    driver: &'a Driver<S>,
    beat: Beat,
    epoch: i64,
    in_flight: JoinSet<Sent>,
    /// Misses not recorded yet (superseded retries, judged claims), written
    /// with the next decision.
    misses: Vec<store::Miss>,
    /// Fires of django-celery-beat rows whose write-back failed: written
    /// again each turn, one line per row however many fires pass.
    unwritten: django::Runs,
    /// Whether write-backs are refused for want of a privilege: logged
    /// once, not retried, until one goes through.
    write_back_denied: bool,
    /// Whether a decision was recorded in this term.
    decided: bool,
    /// No tick before this instant (the gap after a firing tick).
    earliest: DateTime<Utc>,
    /// Notices clock steps; after one, nothing is decided until the clock
    /// was checked against the database again.
    guard: StepGuard,
    trust: watch::Receiver<Trust>,
    /// Whether turns are being skipped for want of a trusted clock (logged
    /// once per hold).
    held: bool,
    /// The entries with metric series of their own, and their last sent
    /// slot.
    tracked: HashMap<usize, Option<DateTime<Utc>>>,
    /// When freshness is next checked and exported.
    next_freshness: DateTime<Utc>,
    /// How many entries were overdue when last logged.
    overdue_reported: usize,
}

impl<S: Sink> Term<'_, S> {
    /// Decides and sends until shutdown, until leadership ends, until a
    /// fenced write fails, or until the entry set changes (the caller
    /// rebuilds); then drains the sends in flight.
    async fn lead(&mut self, w: &mut Watched<'_>, shutdown: &CancellationToken) -> Ended {
        let (role, entries, pauses) = (&mut *w.role, &mut *w.entries, &mut *w.pauses);
        let epoch = self.epoch;
        info!(
            epoch,
            entries = self.beat.entries().len(),
            next = ?self.beat.wake_at().map(|t| t.to_rfc3339()),
            "leading: firing"
        );
        let ended = loop {
            let now = self.driver.clock.now();
            if self.turn(now).await.is_err() {
                break Ended::Failed {
                    decided: self.decided,
                };
            }
            let wait = self.wait(self.driver.clock.now());
            let stop = tokio::select! {
                _ = tokio::time::sleep(wait) => false,
                Some(done) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    self.settle(done);
                    false
                }
                changed = role.changed() => {
                    let ended = changed.is_err() || role.borrow().epoch() != Some(epoch);
                    if ended {
                        warn!(epoch, "no longer leader: stopped firing");
                    }
                    ended
                }
                // A new clock check may end a hold. (Closed: no checks come;
                // the branch is then off.)
                Ok(()) = self.trust.changed() => false,
                Ok(()) = pauses.changed() => {
                    self.set_pauses(&pauses.borrow_and_update());
                    false
                }
                changed = entries.changed() => {
                    // Closed: the reload task ended, which happens only on
                    // the way down.
                    if changed.is_ok() {
                        info!("entry set changed: reloading from the ledger");
                    }
                    true
                }
                _ = shutdown.cancelled() => true,
            };
            if stop {
                break Ended::Stopped;
            }
        };
        self.drain().await;
        ended
    }

    /// One decision at `now`: what is due is claimed and handed to a send
    /// task; what is missed is recorded. Sends that finished meanwhile are
    /// settled first.
    pub async fn turn(&mut self, now: DateTime<Utc>) -> Result<(), Fenced> {
        while let Some(done) = self.in_flight.try_join_next() {
            self.settle(done);
        }
        self.write_again().await;
        if let Some(step) = self.guard.observe(now) {
            report_clock_step(self.driver.metrics, &self.beat, step);
        }
        // Checked whatever holds the beat back: that is when it matters.
        if now >= self.next_freshness {
            self.export_freshness(now);
        }
        if now >= self.earliest && self.clock_trusted() {
            // A part at a time (see [`FIRST_CHUNK`]): each part's send task
            // runs while the next part is claimed.
            let mut chunk = FIRST_CHUNK;
            while self.decide_part(now, chunk).await? {
                chunk = (chunk * 2).min(MAX_CHUNK);
            }
        }
        // Accepted fires no claim carried: on their own once they waited
        // long enough.
        let store = &self.driver.store;
        self.driver.accepted.confirm_if_due(store, now).await;
        Ok(())
    }

    /// Waits for every send in flight and notes its outcome, as the loop
    /// does when a send finishes; confirms nothing (tests step with it).
    pub async fn wait_sends(&mut self) {
        while let Some(done) = self.in_flight.join_next().await {
            self.settle(done);
        }
    }

    /// Decides at most `limit` of the entries due at `now`, claims them and
    /// hands them to a send task; true if more are due.
    async fn decide_part(&mut self, now: DateTime<Utc>, limit: usize) -> Result<bool, Fenced> {
        let decision = self.beat.tick_at_most(now, limit);
        let backlog = self.beat.wake_at().is_some_and(|w| w <= now);
        report_missed(self.driver.metrics, &self.beat, &decision.missed);
        report_skipped(self.driver.metrics, &self.beat, &decision.skipped);
        let mut misses = std::mem::take(&mut self.misses);
        misses.extend(decision.missed.iter().map(|m| miss_row(&self.beat, m)));
        misses.extend(decision.skipped.iter().map(|s| skipped_row(&self.beat, s)));
        let touched: BTreeSet<usize> = decision
            .due
            .iter()
            .map(|f| f.entry)
            .chain(decision.missed.iter().map(|m| m.entry))
            .chain(decision.skipped.iter().map(|s| s.entry))
            .collect();
        let mut due = decision.due;
        match self.record(&due, &misses, touched).await {
            Ok(ours) => {
                self.decided = true;
                let ours: HashSet<FireKey> = ours.into_iter().collect();
                due.retain(|f| {
                    ours.contains(&FireKey {
                        entry: self.beat.entries()[f.entry].name.clone(),
                        slot: f.nominal,
                    })
                });
            }
            Err(e) => {
                error!(epoch = self.epoch, error = %e, "stopped firing: could not record the decision");
                return Err(Fenced);
            }
        }
        if due.is_empty() {
            return Ok(backlog);
        }
        while self.in_flight.len() >= MAX_IN_FLIGHT {
            if let Some(done) = self.in_flight.join_next().await {
                self.settle(done);
            }
        }
        let (outgoing, ids) = build(&self.beat, &self.driver.opts, &due, now);
        for (f, id) in due.iter().zip(&ids) {
            if let Some(m) = self.beat.entries()[f.entry].sentry_monitor() {
                self.driver.check_ins.in_progress(m, id);
            }
        }
        let keys: Vec<FireKey> = due
            .iter()
            .map(|f| FireKey {
                entry: self.beat.entries()[f.entry].name.clone(),
                slot: f.nominal,
            })
            .collect();
        let links: Vec<(usize, Link)> = due
            .iter()
            .enumerate()
            .filter_map(|(i, f)| Some((i, self.beat.entries()[f.entry].django()?.clone())))
            .collect();
        let (sink, store, clock) = (
            self.driver.sink.clone(),
            self.driver.store.clone(),
            self.driver.clock.clone(),
        );
        self.in_flight.spawn(async move {
            let results = sink.send_all(outgoing).await;
            let accepted_at = clock.now();
            let unconfirmed = note_failures(&store, &keys, &results).await;
            let written = write_back(&store, links, &results, accepted_at).await;
            Sent {
                due,
                ids,
                results,
                accepted_at,
                unconfirmed,
                written,
            }
        });
        self.earliest = now + TICK_GAP;
        Ok(backlog)
    }

    /// Claims `due` and records `misses` and the cursors of `touched` (see
    /// [`record`]), confirming the accepted fires held in the same
    /// transaction. A confirm the database refuses must not stop the
    /// claims: if the transaction fails for any reason but a fence, the
    /// decision is recorded again alone, and the fires are kept for the
    /// next try.
    async fn record(
        &self,
        due: &[Fire],
        misses: &[store::Miss],
        touched: BTreeSet<usize>,
    ) -> Result<Vec<FireKey>, StoreError> {
        if due.is_empty() && misses.is_empty() {
            return Ok(Vec::new());
        }
        let (claims, cursors) = decision_rows(&self.beat, due, touched);
        let (store, accepted) = (&self.driver.store, &self.driver.accepted);
        let taken = accepted.take();
        let result =
            ledger::record_and_confirm(store, self.epoch, &taken.keys, &claims, misses, &cursors)
                .await;
        if taken.keys.is_empty() {
            return result;
        }
        match result {
            Ok(ours) => {
                accepted.settle(taken, Ok(()));
                Ok(ours)
            }
            Err(e @ StoreError::Fenced { .. }) => {
                // Confirmed apart, unfenced, when the term drains.
                accepted.put_back(taken);
                Err(e)
            }
            Err(e) => {
                accepted.settle(taken, Err(e));
                ledger::record_decision(store, self.epoch, &claims, misses, &cursors).await
            }
        }
    }

    /// How long to sleep from `now`: until the next send instant (or the
    /// tick gap), or until accepted fires are due to be confirmed on their
    /// own, at most [`MAX_SLEEP`].
    fn wait(&self, now: DateTime<Utc>) -> StdDuration {
        let until = |t: DateTime<Utc>| (t - now).to_std().unwrap_or_default();
        let until_freshness = until(self.next_freshness);
        let until_confirm = self.driver.accepted.due().map_or(MAX_SLEEP, until);
        match self.beat.wake_at() {
            Some(wake) => until(wake.max(self.earliest)).min(MAX_SLEEP),
            None => MAX_SLEEP,
        }
        .min(until_freshness)
        .min(until_confirm)
    }

    /// Exports which entries are overdue, and the tracked entries' last
    /// and next fires; logs when the overdue count changes.
    fn export_freshness(&mut self, now: DateTime<Utc>) {
        self.next_freshness = now + FRESHNESS_EVERY;
        let overdue = self.beat.overdue(now);
        let entries = self.beat.entries();
        let mut names: Vec<&str> = overdue.iter().map(|&i| entries[i].name.as_str()).collect();
        let limit = crate::runtime::metrics::OVERDUE_NAMES;
        if names.len() > limit {
            names.select_nth_unstable(limit);
            names.truncate(limit);
        }
        names.sort_unstable();
        let found = crate::runtime::metrics::Overdue {
            count: overdue.len(),
            names: names.iter().map(|n| n.to_string()).collect(),
        };
        if found.count != self.overdue_reported {
            if found.count > 0 {
                warn!(overdue = found.count, first = ?found.names.iter().take(10).collect::<Vec<_>>(),
                    "entries overdue: a slot due more than its grace ago is neither sent nor recorded missed");
            } else {
                info!("no entry is overdue any more");
            }
            self.overdue_reported = found.count;
        }
        let times: Vec<crate::runtime::metrics::EntryTimes> = self
            .tracked
            .iter()
            .map(|(&i, last)| crate::runtime::metrics::EntryTimes {
                entry: entries[i].name.clone(),
                last_sent: *last,
                next_fire: self.beat.next_send(i),
            })
            .collect();
        self.driver.metrics.export_freshness(found, &times);
    }

    /// When the next turn has work: the earliest send or retry instant.
    pub fn wake_at(&self) -> Option<DateTime<Utc>> {
        self.beat.wake_at()
    }

    /// Replaces the pauses the beat honours (by entry name), from the next
    /// turn on.
    pub fn set_pauses(&mut self, pauses: &Pauses) {
        let active = pauses.values().filter(|p| p.until.is_none()).count();
        info!(pauses = pauses.len(), open_ended = active, "pauses updated");
        self.beat.set_pauses(pauses);
    }

    /// Waits for every send in flight and records its outcome; a last try
    /// at the confirms that failed (those that fail again are kept for the
    /// next term).
    pub async fn drain(&mut self) {
        if !self.in_flight.is_empty() {
            info!(sends = self.in_flight.len(), "waiting for in-flight sends");
        }
        while let Some(done) = self.in_flight.join_next().await {
            self.settle(done);
        }
        self.driver.accepted.confirm(&self.driver.store).await;
        self.write_again().await;
    }

    /// Whether this turn may decide: the host clock agrees with the
    /// database's, and was checked again since any step.
    fn clock_trusted(&mut self) -> bool {
        let trust = *self.trust.borrow();
        let ok = self.guard.trusted(&trust);
        if !ok && !self.held {
            warn!(
                ?trust,
                "not deciding: the host clock stepped or disagrees with the database's; waiting for a check"
            );
        } else if ok && self.held {
            info!("clock checked: deciding again");
        }
        self.held = !ok;
        ok
    }

    /// Logs each outcome of a finished send and puts failures back for retry.
    fn settle(&mut self, done: Result<Sent, tokio::task::JoinError>) {
        let mut sent = match done {
            Ok(s) => s,
            // Unreachable in practice (send tasks do not panic); if one did,
            // its fires stay claimed in the ledger, and the next term's
            // resume judges them.
            Err(e) => {
                warn!(error = %e, "a send task failed; its fires stay claimed until the next term");
                return;
            }
        };
        self.driver
            .accepted
            .add(sent.unconfirmed.iter().cloned(), sent.accepted_at);
        match std::mem::replace(&mut sent.written, WriteBack::Nothing) {
            WriteBack::Nothing => {}
            WriteBack::Written => self.write_worked(),
            WriteBack::Failed(runs, e) => self.write_failed(runs, e),
        }
        for (f, r) in sent.due.iter().zip(&sent.results) {
            if let (Ok(()), Some(last)) = (r, self.tracked.get_mut(&f.entry)) {
                *last = (*last).max(Some(f.nominal));
            }
        }
        let metrics = self.driver.metrics;
        let misses = settle(metrics, &mut self.beat, sent);
        report_missed(metrics, &self.beat, &misses);
        let rows: Vec<store::Miss> = misses.iter().map(|m| miss_row(&self.beat, m)).collect();
        self.misses.extend(rows);
    }

    /// Writes back again the django-celery-beat runs whose write failed.
    async fn write_again(&mut self) {
        if self.unwritten.is_empty() {
            return;
        }
        let runs = std::mem::take(&mut self.unwritten);
        match django::write_runs(&self.driver.store, &runs).await {
            Ok(()) => self.write_worked(),
            Err(e) => self.write_failed(runs, e),
        }
    }

    fn write_worked(&mut self) {
        if self.write_back_denied {
            info!("runs are written back to django-celery-beat's table again");
        }
        self.write_back_denied = false;
    }

    /// Keeps runs whose write-back failed for the next turn, unless the
    /// database user lacks a privilege: retrying cannot help until someone
    /// grants it, so they are dropped, with one error line per episode.
    fn write_failed(&mut self, runs: django::Runs, e: StoreError) {
        if matches!(e, StoreError::Denied(_)) {
            if !self.write_back_denied {
                error!(error = %e, rows = runs.rows(), "cannot write runs back to django-celery-beat's table: the runs of these fires are not recorded there, and runs are not written back until the privilege is granted");
            }
            self.write_back_denied = true;
            return;
        }
        warn!(error = %e, rows = runs.rows(), "could not write runs back to django-celery-beat's table; trying again next turn");
        self.unwritten.merge(runs);
    }
}

/// Writes the accepted fires of django-celery-beat rows back to their rows
/// (`last_run_at`, `total_run_count`, a one-off disabled), so the Django
/// admin shows what ran. After the send, in its own statement: never in a
/// transaction across the SQS call.
async fn write_back(
    store: &Store,
    links: Vec<(usize, Link)>,
    results: &[Result<(), SendError>],
    at: DateTime<Utc>,
) -> WriteBack {
    let mut runs = django::Runs::default();
    for (_, link) in links
        .into_iter()
        .filter(|(i, _)| results.get(*i).is_some_and(Result::is_ok))
    {
        runs.add(django::Run { link, at });
    }
    if runs.is_empty() {
        return WriteBack::Nothing;
    }
    match django::write_runs(store, &runs).await {
        Ok(()) => WriteBack::Written,
        Err(e) => WriteBack::Failed(runs, e),
    }
}

/// Gives the first entries by name series of their own (see
/// [`crate::runtime::metrics`]) and reads their last sent slots: one index
/// probe each, at most `[metrics] per_entry_limit` of them.
async fn track(
    metrics: &Metrics,
    store: &Store,
    entries: &[Entry],
) -> Result<HashMap<usize, Option<DateTime<Utc>>>, StoreError> {
    let names = metrics.track_entries(entries);
    let list: Vec<String> = names.iter().cloned().collect();
    let last = ledger::last_sent(store, &list).await?;
    Ok(entries
        .iter()
        .enumerate()
        .filter(|(_, e)| names.contains(&e.name))
        .map(|(i, e)| (i, last.get(&e.name).copied()))
        .collect())
}

/// The ledger rows of a decision: claims of the fires `due`, and the
/// cursors of the `touched` entries (claimed, with misses, under the
/// leader's epoch in one fenced transaction: [`Term::record`]).
fn decision_rows(
    beat: &Beat,
    due: &[Fire],
    touched: BTreeSet<usize>,
) -> (Vec<store::Claim>, Vec<store::Cursor>) {
    let claims: Vec<store::Claim> = due
        .iter()
        .map(|f| {
            let e = &beat.entries()[f.entry];
            store::Claim {
                entry: e.name.clone(),
                slot: f.nominal,
                task_id: fire_task_id(&e.name, f.nominal),
                queue: e.queue.to_string(),
            }
        })
        .collect();
    // Only the touched entries: building every cursor here made each tick
    // O(entries) (3 ms per tick at 100 000 entries).
    let cursors: Vec<store::Cursor> = touched
        .into_iter()
        .map(|i| {
            let e = &beat.entries()[i];
            store::Cursor {
                entry: e.name.clone(),
                cursor: beat.cursor(i),
                enabled: e.enabled,
            }
        })
        .collect();
    (claims, cursors)
}

/// The ledger row of a missed slot.
fn miss_row(beat: &Beat, m: &crate::beat::tick::Missed) -> store::Miss {
    store::Miss {
        entry: beat.entries()[m.entry].name.clone(),
        slot: m.nominal,
        reason: miss_reason(m.reason),
    }
}

/// The one ledger row of a skipped backlog, at its first slot.
fn skipped_row(beat: &Beat, s: &Skipped) -> store::Miss {
    store::Miss {
        entry: beat.entries()[s.entry].name.clone(),
        slot: s.first,
        reason: format!(
            "beyond the catch-up bound: every slot from here through {} was skipped",
            s.through.to_rfc3339()
        ),
    }
}

fn report_skipped(metrics: &Metrics, beat: &Beat, skipped: &[Skipped]) {
    for s in skipped {
        let e = &beat.entries()[s.entry];
        warn!(entry = %e.name, first = %s.first.to_rfc3339(), through = %s.through.to_rfc3339(), "missed fires: a backlog longer than a tick walks was skipped to the slots catch_up may still send");
        metrics
            .fires_missed
            .get_or_create(&crate::runtime::metrics::Reason {
                reason: "bound".to_string(),
            })
            .inc();
    }
}

/// Notes what SQS did not accept, and returns what it did, for the loop
/// to confirm: the loop is then the only writer of confirms, with its next
/// claim (or on their own, see [`Accepted`]), instead of one transaction
/// per send task racing the claims for SQLite's one writer. Until
/// confirmed, a fire stays claimed: a leader that dies first leaves it to
/// the next, which re-sends it with the same task id, the one duplicate the
/// design allows.
async fn note_failures(
    store: &Store,
    keys: &[FireKey],
    results: &[Result<(), SendError>],
) -> Vec<FireKey> {
    for (k, r) in keys.iter().zip(results) {
        if let Err(err) = r
            && let Err(e) = ledger::record_failure(store, k, &err.to_string()).await
        {
            warn!(error = %e, "could not record a send failure");
        }
    }
    keys.iter()
        .zip(results)
        .filter(|(_, r)| r.is_ok())
        .map(|(k, _)| k.clone())
        .collect()
}

/// A step is not acted on: fires follow the wall clock, and the tick's
/// rules already make a step safe (forward: the skipped slots are late and
/// `catch_up` decides, each recorded; back: decided slots lie ahead and are
/// not fired again). What a step needs is to be seen, not to pass silently.
fn report_clock_step(metrics: &Metrics, beat: &Beat, step: Duration) {
    let secs = step.num_milliseconds() as f64 / 1000.0;
    let direction = if step > Duration::zero() {
        warn!(
            step_s = secs,
            "wall clock jumped forward (clock stepped or host suspended): slots in the skipped span are late; each entry's grace and catch_up decide, and misses are logged"
        );
        "forward"
    } else {
        warn!(
            step_s = secs,
            next = ?beat.wake_at().map(|t| t.to_rfc3339()),
            "wall clock stepped back: slots already decided are not fired again; entries resume at their next slot after the last decided one"
        );
        "back"
    };
    metrics
        .clock_steps
        .get_or_create(&crate::runtime::metrics::Direction {
            direction: direction.to_string(),
        })
        .inc();
}

fn miss_reason(r: MissReason) -> String {
    match r {
        MissReason::Expired => "expired before it could be sent".to_string(),
        MissReason::CatchUp(p) => format!("later than grace; catch_up = {}", p.as_str()),
        MissReason::Bound => "beyond the catch-up bound".to_string(),
        MissReason::Superseded => {
            "superseded: a newer slot of the entry was sent or is waiting to be".to_string()
        }
        // Exactly this word: what `sqsbeat backfill` and people look for.
        MissReason::Paused => PAUSED.to_string(),
    }
}

fn report_missed(metrics: &Metrics, beat: &Beat, missed: &[crate::beat::tick::Missed]) {
    for m in missed {
        let e = &beat.entries()[m.entry];
        warn!(entry = %e.name, slot = %m.nominal.to_rfc3339(), "missed fire: {}", miss_reason(m.reason));
        let reason = match m.reason {
            MissReason::Expired => "expired".to_string(),
            MissReason::CatchUp(p) => format!("catch_up_{}", p.as_str()),
            MissReason::Bound => "bound".to_string(),
            MissReason::Superseded => "superseded".to_string(),
            MissReason::Paused => PAUSED.to_string(),
        };
        metrics
            .fires_missed
            .get_or_create(&crate::runtime::metrics::Reason { reason })
            .inc();
    }
}

/// The SQS messages of `due`, and their task ids.
fn build(
    beat: &Beat,
    opts: &MessageOptions,
    due: &[Fire],
    built_at: DateTime<Utc>,
) -> (Vec<Outgoing>, Vec<String>) {
    let mut ids = Vec::with_capacity(due.len());
    let mut outgoing = Vec::with_capacity(due.len());
    for f in due {
        let e = &beat.entries()[f.entry];
        let task_id = fire_task_id(&e.name, f.nominal);
        let id = task_id.to_string();
        let body = e
            .message(&id, f.nominal, &opts.origin)
            .sqs_body(built_at, opts.body_encoding);
        outgoing.push(crate::beat::ops::outgoing(e, opts, task_id, body));
        ids.push(id);
    }
    (outgoing, ids)
}

/// Logs each outcome of a finished send and puts failures back for retry;
/// returns the fires that gave way (superseded) as a result.
fn settle(metrics: &Metrics, beat: &mut Beat, sent: Sent) -> Vec<crate::beat::tick::Missed> {
    let Sent {
        due,
        ids,
        results,
        accepted_at,
        ..
    } = sent;
    let mut missed = Vec::new();
    for ((fire, id), result) in due.into_iter().zip(ids).zip(results) {
        let e = &beat.entries()[fire.entry];
        let span = info_span!("fire", entry = %e.name, task_id = %id, queue = %e.queue);
        let _enter = span.enter();
        let late_ms = (accepted_at - e.send_at(fire.nominal)).num_milliseconds();
        match result {
            Ok(()) => {
                metrics.fire_sent(&e.name, &e.queue);
                metrics
                    .fire_lateness
                    .observe(late_ms.max(0) as f64 / 1000.0);
                info!(
                    task = %e.task,
                    slot = %fire.nominal.to_rfc3339(),
                    late_ms,
                    attempt = fire.attempt,
                    "sent"
                );
                drop(_enter);
                missed.extend(beat.sent(fire));
            }
            Err(err) => {
                metrics.fire_failed(&e.name, &e.queue);
                let delay = err.retry_delay(fire.attempt + 1, &id);
                warn!(
                    slot = %fire.nominal.to_rfc3339(),
                    attempt = fire.attempt,
                    retry_in_ms = delay.num_milliseconds(),
                    error = %err,
                    "send failed; will retry"
                );
                drop(_enter);
                missed.extend(beat.retry(fire, accepted_at + delay));
            }
        }
    }
    missed
}
