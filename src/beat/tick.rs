//! The beat decision, pure: entries' state + now → fires due now, fires
//! missed, and when to wake next.
//!
//! State is a min-heap of each enabled entry's next send instant, so a tick
//! costs O(due · log n), never a scan of every entry. `tick` advances an
//! entry's cursor past every slot it decides (fire or miss); a fire that
//! then fails to send comes back through `retry`, so a send failure never
//! loses a fire. No clock is read here: `now` is always an argument.
//!
//! Rules for slots whose send instant is at or before `now`:
//! - a slot whose message would already be expired (`expires`) is missed;
//! - a slot at most `grace` late is due;
//! - older slots are late, and the entry's `catch_up` decides: `latest`
//!   sends the most recent late slot once unless an on-time slot is due
//!   anyway, `all` sends each (the most recent `max_catch_up`), `none`
//!   sends none.
//!
//! A paused entry (`sqsbeat entries pause`) is data here, a [`Pause`]
//! interval per entry: a slot whose instant lies inside the pause, or that
//! comes to be decided while the entry is paused, is missed with
//! [`MissReason::Paused`], before any other rule. Its cursor moves past it
//! like past any decided slot, so nothing of the pause is caught up when it
//! ends, whether it ends by `resume` or at its `until`; and a leader that
//! was down during a pause misses those slots just the same.
//!
//! The same rules bound what failing sends and unconfirmed claims can do:
//! an entry holds at most as many fires awaiting a retry as its `catch_up`
//! would send after an outage (`latest`, `none`: one; `all`:
//! `max_catch_up`), the oldest giving way; a retry that has become late
//! follows `catch_up` like any late slot. So a queue deleted for a day
//! costs one pending fire per entry, not one per slot, and its recovery
//! sends what `catch_up` says, not the whole day at once.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::entry::{CatchUp, Entry};

/// Most late slots one entry sends at once under `catch_up = "all"`.
pub const DEFAULT_MAX_CATCH_UP: usize = 100;
/// Most slots of one entry a tick walks through. A longer backlog (a
/// per-second entry after a day down, a clock that jumped a year) is
/// skipped in one step to where the slots `catch_up` may still send begin,
/// and recorded as one skipped span.
const MAX_WALK: usize = 10_000;

/// One fire to send: an entry's nominal slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fire {
    pub entry: usize,
    pub nominal: DateTime<Utc>,
    /// 0 for the first attempt.
    pub attempt: u32,
}

/// Why a slot was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissReason {
    /// Its `expires` had passed: a worker would discard it.
    Expired,
    /// Later than `grace` and the `catch_up` policy skips it.
    CatchUp(CatchUp),
    /// More late slots than `max_catch_up`.
    Bound,
    /// It was failing to send when a newer slot of the entry took its place
    /// (sent, or waiting for a retry itself).
    Superseded,
    /// The entry was paused (see [`Pause::holds`]).
    Paused,
}

/// An entry's pause: from `from` until `until`, exclusive (`None`: until
/// resumed). A resume ends the interval at its instant rather than
/// deleting it, so the slots it covered stay paused for a leader that
/// decides them later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pause {
    pub from: DateTime<Utc>,
    pub until: Option<DateTime<Utc>>,
}

impl Pause {
    /// Whether `t` lies inside the pause.
    pub fn covers(&self, t: DateTime<Utc>) -> bool {
        self.from <= t && self.until.is_none_or(|u| t < u)
    }

    /// Whether the slot at `nominal`, decided at `now`, is paused: its
    /// instant lies inside the pause (however late it is decided, so a
    /// pause is never caught up), or the entry is paused when it is decided
    /// (so a late slot from before the pause is not sent during it).
    pub fn holds(&self, nominal: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        self.covers(nominal) || self.covers(now)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missed {
    pub entry: usize,
    pub nominal: DateTime<Utc>,
    pub reason: MissReason,
}

/// A backlog too long to walk slot by slot: every slot of `entry` after
/// `first` (itself included) and up to `through` was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    pub entry: usize,
    pub first: DateTime<Utc>,
    pub through: DateTime<Utc>,
}

/// What one tick decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub due: Vec<Fire>,
    pub missed: Vec<Missed>,
    pub skipped: Vec<Skipped>,
}

/// An entry's next slot in the heap: (send instant, entry, nominal slot),
/// reversed so the earliest send pops first.
type Pending = Reverse<(DateTime<Utc>, usize, DateTime<Utc>)>;

/// The beat's state.
#[derive(Debug)]
pub struct Beat {
    /// Shared with the loader: one copy of the schedule per process.
    entries: Arc<Vec<Entry>>,
    /// The last slot decided per entry; later slots are pending.
    cursors: Vec<DateTime<Utc>>,
    /// Each enabled entry's next slot.
    heap: BinaryHeap<Pending>,
    /// Fires that failed to send, by when to try again. Entries taken out
    /// of `waiting` (superseded) are skipped when they surface.
    retries: BinaryHeap<Reverse<(DateTime<Utc>, Fire)>>,
    /// The slots of each entry waiting for a retry (few entries, few slots).
    waiting: HashMap<usize, BTreeSet<DateTime<Utc>>>,
    /// Each paused entry's pause (few entries).
    pauses: HashMap<usize, Pause>,
    max_catch_up: usize,
}

impl Beat {
    /// `cursor(entry)` is the last slot already decided for an entry (from
    /// a ledger); `None` means nothing is known and only slots after
    /// `start` are considered.
    pub fn new(
        entries: impl Into<Arc<Vec<Entry>>>,
        start: DateTime<Utc>,
        cursor: impl Fn(&Entry) -> Option<DateTime<Utc>>,
        max_catch_up: usize,
    ) -> Self {
        let entries = entries.into();
        let cursors: Vec<DateTime<Utc>> =
            entries.iter().map(|e| cursor(e).unwrap_or(start)).collect();
        // Each enabled entry has one slot in the heap: sized once, not by
        // doubling (4.2 MB for 100 000 entries where 3.2 MB hold them).
        let heap = BinaryHeap::with_capacity(entries.len());
        let mut beat = Beat {
            entries,
            cursors,
            heap,
            retries: BinaryHeap::new(),
            waiting: HashMap::new(),
            pauses: HashMap::new(),
            max_catch_up: max_catch_up.max(1),
        };
        for i in 0..beat.entries.len() {
            beat.schedule_next(i);
        }
        beat
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The last slot decided for entry `i`.
    pub fn cursor(&self, i: usize) -> DateTime<Utc> {
        self.cursors[i]
    }

    /// Replaces the pauses, given by entry name (names not in the schedule
    /// are ignored). Slots already decided stay decided.
    pub fn set_pauses(&mut self, by_name: &HashMap<String, Pause>) {
        self.pauses.clear();
        if by_name.is_empty() {
            return;
        }
        for (i, e) in self.entries.iter().enumerate() {
            if let Some(p) = by_name.get(&e.name) {
                self.pauses.insert(i, *p);
            }
        }
    }

    /// Whether entry `i`'s slot at `nominal`, decided at `now`, is paused.
    fn paused(&self, i: usize, nominal: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        self.pauses.get(&i).is_some_and(|p| p.holds(nominal, now))
    }

    fn schedule_next(&mut self, i: usize) {
        let e = &self.entries[i];
        if !e.enabled {
            return;
        }
        if let Some(f) = e.next_after(self.cursors[i]) {
            self.heap.push(Reverse((e.send_at(f.at), i, f.at)));
        }
    }

    /// When the next tick has work: the earliest pending send or retry.
    pub fn wake_at(&self) -> Option<DateTime<Utc>> {
        let next = self.heap.peek().map(|Reverse((t, _, _))| *t);
        let retry = self.retries.peek().map(|Reverse((t, _))| *t);
        match (next, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How many fires of entry `i` may wait for a retry at once: what its
    /// `catch_up` would send after an outage.
    fn retry_cap(&self, i: usize) -> usize {
        match self.entries[i].catch_up {
            CatchUp::All => self.max_catch_up,
            CatchUp::Latest | CatchUp::None => 1,
        }
    }

    /// Puts a fire that failed to send back, to be due again at `at`. If
    /// its entry already holds as many waiting fires as it may, the oldest
    /// gives way and is returned as missed (it may be this one).
    pub fn retry(&mut self, fire: Fire, at: DateTime<Utc>) -> Option<Missed> {
        let cap = self.retry_cap(fire.entry);
        let slots = self.waiting.entry(fire.entry).or_default();
        slots.insert(fire.nominal);
        let dropped = (slots.len() > cap).then(|| slots.pop_first()).flatten();
        if dropped != Some(fire.nominal) {
            self.retries.push(Reverse((
                at,
                Fire {
                    attempt: fire.attempt + 1,
                    ..fire
                },
            )));
        }
        dropped.map(|nominal| Missed {
            entry: fire.entry,
            nominal,
            reason: MissReason::Superseded,
        })
    }

    /// Notes that a fire was sent: older fires of its entry still waiting
    /// for a retry are superseded, unless the entry catches up on `all`.
    pub fn sent(&mut self, fire: Fire) -> Vec<Missed> {
        if self.entries[fire.entry].catch_up == CatchUp::All {
            return Vec::new();
        }
        let Some(slots) = self.waiting.get_mut(&fire.entry) else {
            return Vec::new();
        };
        let newer = slots.split_off(&fire.nominal);
        let older = std::mem::replace(slots, newer);
        older
            .into_iter()
            .map(|nominal| Missed {
                entry: fire.entry,
                nominal,
                reason: MissReason::Superseded,
            })
            .collect()
    }

    /// Claims found unconfirmed in the ledger at the start of a term (a
    /// leader died or its confirm failed between send and confirm): each is
    /// judged like a late slot at `now`. Those still worth sending are due
    /// at once, with their attempt counts; the rest come back as missed.
    pub fn resume_claims(&mut self, claims: Vec<Fire>, now: DateTime<Utc>) -> Vec<Missed> {
        let mut missed = Vec::new();
        let mut by_entry: HashMap<usize, Vec<Fire>> = HashMap::new();
        for c in claims {
            by_entry.entry(c.entry).or_default().push(c);
        }
        for (i, mut fires) in by_entry {
            // Newest first: they are the ones catch_up keeps.
            fires.sort_by_key(|f| Reverse(f.nominal));
            let entries = self.entries.clone();
            let e = &entries[i];
            let mut kept = 0;
            for f in fires {
                let reason = if self.paused(i, f.nominal, now) {
                    Some(MissReason::Paused)
                } else if self.expired(i, f.nominal, now) {
                    Some(MissReason::Expired)
                } else if now - e.send_at(f.nominal) <= e.grace() {
                    None
                } else {
                    match e.catch_up {
                        CatchUp::None => Some(MissReason::CatchUp(CatchUp::None)),
                        CatchUp::Latest if kept >= 1 => Some(MissReason::CatchUp(CatchUp::Latest)),
                        CatchUp::All if kept >= self.max_catch_up => Some(MissReason::Bound),
                        _ => None,
                    }
                };
                match reason {
                    Some(reason) => missed.push(Missed {
                        entry: i,
                        nominal: f.nominal,
                        reason,
                    }),
                    None => {
                        kept += 1;
                        let attempt = f.attempt.saturating_sub(1);
                        missed.extend(self.retry(Fire { attempt, ..f }, now));
                    }
                }
            }
        }
        missed
    }

    /// The entries overdue at `now` (see [`super::freshness`]): the next
    /// slot in the heap is the oldest one not decided, and a fire waiting
    /// for a retry was claimed but not sent. A slot the entry's pause takes
    /// is decided (missed as paused), and an entry paused at `now` is not
    /// overdue at all. O(entries) without allocating per entry: at 100 000
    /// entries, well under a millisecond.
    pub fn overdue(&self, now: DateTime<Utc>) -> Vec<usize> {
        use super::freshness::{is_overdue, past_pause};
        // The first slot from `slot` on that the pause leaves, if late.
        let late = |i: usize, slot: DateTime<Utc>| {
            let e = &self.entries[i];
            past_pause(e, slot, self.pauses.get(&i), now).is_some_and(|s| is_overdue(e, s, now))
        };
        // A slot waiting for a retry that the pause leaves, if late.
        let failing = |i: usize, slots: &BTreeSet<DateTime<Utc>>| {
            let (e, pause) = (&self.entries[i], self.pauses.get(&i));
            slots
                .iter()
                .find(|&&s| past_pause(e, s, pause, now) == Some(s))
                .is_some_and(|&s| is_overdue(e, s, now))
        };
        let mut out: Vec<usize> = self
            .heap
            .iter()
            .filter(|Reverse((_, i, slot))| late(*i, *slot))
            .map(|Reverse((_, i, _))| *i)
            .chain(
                self.waiting
                    .iter()
                    .filter(|(i, slots)| failing(**i, slots))
                    .map(|(i, _)| *i),
            )
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// When entry `i`'s next undecided slot is sent, if it has one: past
    /// its pause, none while the pause has no end.
    pub fn next_send(&self, i: usize) -> Option<DateTime<Utc>> {
        let e = self.entries.get(i)?;
        if !e.enabled {
            return None;
        }
        let mut slot = e.next_after(*self.cursors.get(i)?)?.at;
        if let Some(p) = self.pauses.get(&i).filter(|p| p.covers(slot)) {
            slot = e
                .next_after(p.until? - chrono::Duration::microseconds(1))?
                .at;
        }
        Some(e.send_at(slot))
    }

    /// Decides everything due at `now`.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Decision {
        self.tick_at_most(now, usize::MAX)
    }

    /// Decides what is due at `now`, earliest first, for at most `limit`
    /// entries (a waiting retry counts as one); the rest stay due, and
    /// [`Beat::wake_at`] says so. Deciding, claiming and sending a burst a
    /// part at a time lets the first messages leave while the rest is
    /// claimed, and lets a fire falling due meanwhile be decided in the
    /// next part instead of after the whole burst.
    pub fn tick_at_most(&mut self, now: DateTime<Utc>, limit: usize) -> Decision {
        let mut d = Decision::default();
        let mut taken = 0;
        while let Some(Reverse((at, fire))) = self.retries.peek().copied() {
            if at > now || taken >= limit {
                break;
            }
            taken += 1;
            self.retries.pop();
            self.decide_retry(fire, now, &mut d);
        }
        while let Some(Reverse((at, i, _))) = self.heap.peek().copied() {
            if at > now || taken >= limit {
                break;
            }
            taken += 1;
            self.heap.pop();
            self.decide_entry(i, now, &mut d);
            self.schedule_next(i);
        }
        d
    }

    /// A retry that came due: sent again, unless it expired, or it has
    /// become late and its entry's `catch_up` would not send it.
    fn decide_retry(&mut self, fire: Fire, now: DateTime<Utc>, d: &mut Decision) {
        let still_waiting = self
            .waiting
            .get_mut(&fire.entry)
            .is_some_and(|s| s.remove(&fire.nominal));
        if !still_waiting {
            // Superseded while it waited; already reported.
            return;
        }
        let e = &self.entries[fire.entry];
        let reason = if self.paused(fire.entry, fire.nominal, now) {
            Some(MissReason::Paused)
        } else if self.expired(fire.entry, fire.nominal, now) {
            Some(MissReason::Expired)
        } else if e.catch_up == CatchUp::None && now - e.send_at(fire.nominal) > e.grace() {
            Some(MissReason::CatchUp(CatchUp::None))
        } else {
            None
        };
        match reason {
            Some(reason) => d.missed.push(Missed {
                entry: fire.entry,
                nominal: fire.nominal,
                reason,
            }),
            None => d.due.push(fire),
        }
    }

    fn expired(&self, i: usize, nominal: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        self.entries[i].expiry(nominal).is_some_and(|x| x <= now)
    }

    /// Where to start walking entry `i`'s backlog at `now`: its cursor, or,
    /// when more than [`MAX_WALK`] slots are due, a later instant from which
    /// the walk still sees every slot `catch_up` could send (the most recent
    /// late ones and every on-time one). The span in between is skipped.
    fn walk_start(&self, i: usize, now: DateTime<Utc>) -> (DateTime<Utc>, Option<Skipped>) {
        let e = &self.entries[i];
        let cursor = self.cursors[i];
        // The common case, one slot due (or none), costs two steps.
        let second_due = e
            .next_after(cursor)
            .and_then(|f| e.next_after(f.at))
            .is_some_and(|f| e.send_at(f.at) <= now);
        if !second_due {
            return (cursor, None);
        }
        let due_after = |from: DateTime<Utc>, limit: usize| {
            let mut n = 0;
            let mut at = from;
            while let Some(f) = e.next_after(at) {
                if e.send_at(f.at) > now || n > limit {
                    break;
                }
                n += 1;
                at = f.at;
            }
            n
        };
        if due_after(cursor, MAX_WALK) <= MAX_WALK {
            return (cursor, None);
        }
        let keep = match e.catch_up {
            CatchUp::All => self.max_catch_up,
            CatchUp::Latest | CatchUp::None => 1,
        };
        let late_edge = now - e.grace() - e.jitter().unwrap_or_else(Duration::zero);
        // Widen a look-back window until it holds `keep` late slots; it
        // starts at one period and doubles, so it costs about twice the
        // final window.
        let period = match e
            .next_after(cursor)
            .and_then(|a| Some((a.at, e.next_after(a.at)?.at)))
        {
            Some((a, b)) => (b - a).max(Duration::milliseconds(1)),
            None => return (cursor, None),
        };
        let mut back = period;
        let start = loop {
            let from = late_edge - back;
            if from <= cursor {
                break cursor;
            }
            let late = {
                let mut n = 0;
                let mut at = from;
                while let Some(f) = e.next_after(at) {
                    if f.at > late_edge || n >= keep {
                        break;
                    }
                    n += 1;
                    at = f.at;
                }
                n
            };
            if late >= keep {
                break from;
            }
            back = back * 2;
        };
        match e.next_after(cursor) {
            Some(first) if start > cursor && first.at <= start => (
                start,
                Some(Skipped {
                    entry: i,
                    first: first.at,
                    through: start,
                }),
            ),
            _ => (cursor, None),
        }
    }

    /// Every slot of entry `i` whose send instant is at or before `now`,
    /// at most [`MAX_WALK`] of them (the rest wait for the next tick).
    fn decide_entry(&mut self, i: usize, now: DateTime<Utc>, d: &mut Decision) {
        let (start, skipped) = self.walk_start(i, now);
        d.skipped.extend(skipped);
        let e = &self.entries[i];
        let mut on_time = Vec::new();
        // Late slots in order; only the most recent `keep` can still be sent.
        let keep = match e.catch_up {
            CatchUp::All => self.max_catch_up,
            CatchUp::Latest => 1,
            CatchUp::None => 0,
        };
        let mut late: VecDeque<DateTime<Utc>> = VecDeque::new();
        let mut cursor = start;
        let mut walked = 0;
        while let Some(f) = e.next_after(cursor) {
            if e.send_at(f.at) > now || walked == MAX_WALK {
                break;
            }
            cursor = f.at;
            walked += 1;
            if self.paused(i, f.at, now) {
                d.missed.push(Missed {
                    entry: i,
                    nominal: f.at,
                    reason: MissReason::Paused,
                });
            } else if self.expired(i, f.at, now) {
                d.missed.push(Missed {
                    entry: i,
                    nominal: f.at,
                    reason: MissReason::Expired,
                });
            } else if now - e.send_at(f.at) <= e.grace() {
                on_time.push(f.at);
            } else {
                late.push_back(f.at);
                if late.len() > keep.max(1) {
                    let old = late.pop_front().unwrap_or(f.at);
                    let reason = if e.catch_up == CatchUp::All {
                        MissReason::Bound
                    } else {
                        MissReason::CatchUp(e.catch_up)
                    };
                    d.missed.push(Missed {
                        entry: i,
                        nominal: old,
                        reason,
                    });
                }
            }
        }
        self.cursors[i] = cursor;
        let send_late = match e.catch_up {
            CatchUp::All => true,
            CatchUp::Latest => on_time.is_empty(),
            CatchUp::None => false,
        };
        for nominal in late {
            if send_late {
                d.due.push(Fire {
                    entry: i,
                    nominal,
                    attempt: 0,
                });
            } else {
                d.missed.push(Missed {
                    entry: i,
                    nominal,
                    reason: MissReason::CatchUp(e.catch_up),
                });
            }
        }
        d.due.extend(on_time.into_iter().map(|nominal| Fire {
            entry: i,
            nominal,
            attempt: 0,
        }));
    }
}

/// Smallest disagreement between the wall clock and the monotonic clock
/// that counts as a step (NTP slews far less than this between two turns).
pub const CLOCK_STEP: chrono::Duration = chrono::Duration::seconds(1);

/// How far the wall clock stepped between two readings: the wall time that
/// passed minus the monotonic time that passed, when they disagree by at
/// least [`CLOCK_STEP`]. Positive is forward (also a suspended host: the
/// monotonic clock stops while suspended), negative is back.
pub fn clock_step(
    wall_before: DateTime<Utc>,
    wall_now: DateTime<Utc>,
    monotonic_elapsed: std::time::Duration,
) -> Option<chrono::Duration> {
    let elapsed = chrono::Duration::from_std(monotonic_elapsed).ok()?;
    let step = (wall_now - wall_before) - elapsed;
    (step.abs() >= CLOCK_STEP).then_some(step)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Context, Origin, RawEntry, validate};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn entry(name: &str, f: impl FnOnce(&mut RawEntry)) -> Entry {
        let mut raw = RawEntry {
            task: Some("t.t".into()),
            every: Some("1m".into()),
            ..Default::default()
        };
        f(&mut raw);
        let (e, p) = validate(
            name,
            raw,
            Origin {
                file: "t".into(),
                line: 1,
            },
            &Context::default(),
        );
        e.unwrap_or_else(|| panic!("{p:?}"))
    }

    fn slots(beat: &Beat, d: &Decision) -> Vec<(String, String)> {
        d.due
            .iter()
            .map(|f| {
                (
                    beat.entries()[f.entry].name.clone(),
                    f.nominal.format("%H:%M:%S").to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn a_tick_at_most_n_decides_the_earliest_n_and_leaves_the_rest_due() {
        let es: Vec<Entry> = ["a", "b", "c"]
            .iter()
            .map(|n| entry(n, |r| r.every = Some("30s".into())))
            .chain([entry("late", |r| {
                r.every = Some("30s".into());
                r.jitter = Some("20s".into());
            })])
            .collect();
        let mut beat = Beat::new(es, at("2026-11-21T10:00:05Z"), |_| None, 100);
        let now = at("2026-11-21T10:00:59Z");
        let d = beat.tick_at_most(now, 2);
        assert_eq!(
            slots(&beat, &d),
            [
                ("a".into(), "10:00:30".into()),
                ("b".into(), "10:00:30".into())
            ]
        );
        assert!(
            beat.wake_at().is_some_and(|w| w <= now),
            "the rest stay due"
        );
        let rest = beat.tick_at_most(now, 2);
        let mut names: Vec<String> = slots(&beat, &rest).into_iter().map(|(n, _)| n).collect();
        names.sort();
        assert_eq!(names, ["c", "late"]);
        assert_eq!(beat.tick(now), Decision::default(), "each slot once");
    }

    #[test]
    fn fires_each_slot_once_and_wakes_at_the_next() {
        let mut beat = Beat::new(
            vec![entry("a", |_| {})],
            at("2026-11-21T10:00:30Z"),
            |_| None,
            100,
        );
        assert_eq!(beat.wake_at(), Some(at("2026-11-21T10:01:00Z")));
        assert!(beat.tick(at("2026-11-21T10:00:59Z")).due.is_empty());
        let d = beat.tick(at("2026-11-21T10:01:00.004Z"));
        assert_eq!(slots(&beat, &d), [("a".into(), "10:01:00".into())]);
        assert!(
            beat.tick(at("2026-11-21T10:01:00.005Z")).due.is_empty(),
            "never twice"
        );
        assert_eq!(beat.wake_at(), Some(at("2026-11-21T10:02:00Z")));
    }

    #[test]
    fn overdue_are_entries_behind_by_more_than_grace_or_failing_that_long() {
        let mut beat = Beat::new(
            vec![
                entry("a", |_| {}),
                entry("b", |r| r.grace = Some("5m".into())),
                entry("off", |r| r.enabled = Some(false)),
            ],
            at("2026-11-21T10:00:30Z"),
            |_| None,
            100,
        );
        assert!(
            beat.overdue(at("2026-11-21T10:01:30Z")).is_empty(),
            "within grace"
        );
        // No tick for three minutes: a's 10:01 slot is 2 minutes late.
        assert_eq!(beat.overdue(at("2026-11-21T10:03:00Z")), [0]);
        assert_eq!(beat.next_send(0), Some(at("2026-11-21T10:01:00Z")));
        let d = beat.tick(at("2026-11-21T10:03:00Z"));
        assert!(
            beat.overdue(at("2026-11-21T10:03:00Z")).is_empty(),
            "caught up"
        );
        // a's fire fails and waits for a retry: overdue once past grace.
        let a = *d
            .due
            .iter()
            .filter(|f| f.entry == 0)
            .max_by_key(|f| f.nominal)
            .unwrap();
        let _ = beat.retry(a, at("2026-11-21T10:10:00Z"));
        assert!(beat.overdue(at("2026-11-21T10:03:30Z")).is_empty());
        assert_eq!(beat.overdue(at("2026-11-21T10:04:01Z")), [0]);
        assert_eq!(beat.next_send(2), None, "disabled");
    }

    #[test]
    fn a_paused_entry_is_not_overdue_and_its_next_send_is_after_the_pause() {
        let mut beat = Beat::new(
            vec![entry("a", |_| {}), entry("b", |_| {})],
            at("2026-11-21T10:00:30Z"),
            |_| None,
            100,
        );
        let open = Pause {
            from: at("2026-11-21T10:00:45Z"),
            until: None,
        };
        beat.set_pauses(&paused_names(open, &["a"]));
        // No tick for three minutes: b is stuck behind 10:01, a is paused.
        assert_eq!(beat.overdue(at("2026-11-21T10:03:00Z")), [1]);
        assert_eq!(beat.next_send(0), None, "paused until resumed");
        // Resumed at 10:02:30: 10:01 and 10:02 are the pause's; 10:03 is
        // the first slot to send, and it is late from 10:04 on.
        let ended = Pause {
            until: Some(at("2026-11-21T10:02:30Z")),
            ..open
        };
        beat.set_pauses(&paused_names(ended, &["a"]));
        assert_eq!(beat.next_send(0), Some(at("2026-11-21T10:03:00Z")));
        assert_eq!(beat.overdue(at("2026-11-21T10:03:30Z")), [1]);
        assert_eq!(beat.overdue(at("2026-11-21T10:04:01Z")), [0, 1]);
        // Decided: a's paused slots are missed as such, 10:03 and 10:04
        // are due, and neither entry is overdue any more.
        let d = beat.tick(at("2026-11-21T10:04:01Z"));
        assert_eq!(missed_at(&d, MissReason::Paused), ["10:01:00", "10:02:00"]);
        assert!(beat.overdue(at("2026-11-21T10:04:01Z")).is_empty());
    }

    #[test]
    fn disabled_entries_never_fire_and_windows_end() {
        let off = entry("off", |r| r.enabled = Some(false));
        let window = entry("w", |r| {
            r.end_at = Some(crate::entry::RawInstant::Text(
                "2026-11-21T10:02:00Z".into(),
            ))
        });
        let mut beat = Beat::new(vec![off, window], at("2026-11-21T10:00:30Z"), |_| None, 100);
        let d = beat.tick(at("2026-11-21T10:05:00Z"));
        assert!(d.due.iter().all(|f| f.entry == 1));
        assert_eq!(beat.wake_at(), None, "nothing left to fire");
    }

    #[test]
    fn pause_with_catch_up_latest_fires_the_most_recent_once() {
        let mut beat = Beat::new(
            vec![entry("a", |_| {})],
            at("2026-11-21T10:00:30Z"),
            |_| None,
            100,
        );
        // Paused for ten minutes: slots 10:01..10:10; 10:10 is within grace.
        let d = beat.tick(at("2026-11-21T10:10:20Z"));
        assert_eq!(slots(&beat, &d), [("a".into(), "10:10:00".into())]);
        assert_eq!(d.missed.len(), 9);
        // Everything later than grace: the latest one goes out once.
        let mut beat = Beat::new(
            vec![entry("a", |_| {})],
            at("2026-11-21T10:00:30Z"),
            |_| None,
            100,
        );
        let d = beat.tick(at("2026-11-21T10:10:59Z"));
        assert_eq!(
            slots(&beat, &d),
            [("a".into(), "10:10:00".into())],
            "1m grace"
        );
        let mut beat = Beat::new(
            vec![entry("a", |r| r.grace = Some("10s".into()))],
            at("2026-11-21T10:00:30Z"),
            |_| None,
            100,
        );
        let d = beat.tick(at("2026-11-21T10:10:59Z"));
        assert_eq!(slots(&beat, &d), [("a".into(), "10:10:00".into())]);
        assert!(
            d.missed
                .iter()
                .all(|m| m.reason == MissReason::CatchUp(CatchUp::Latest))
        );
    }

    #[test]
    fn pause_with_catch_up_all_is_bounded_and_none_skips() {
        let all = entry("all", |r| {
            r.catch_up = Some("all".into());
            r.grace = Some("1s".into());
        });
        let none = entry("none", |r| {
            r.catch_up = Some("none".into());
            r.grace = Some("1s".into());
        });
        let mut beat = Beat::new(vec![all, none], at("2026-11-21T10:00:30Z"), |_| None, 3);
        let d = beat.tick(at("2026-11-21T10:10:30Z"));
        assert_eq!(
            slots(&beat, &d),
            [
                ("all".into(), "10:08:00".into()),
                ("all".into(), "10:09:00".into()),
                ("all".into(), "10:10:00".into())
            ]
        );
        let bound = d.missed.iter().filter(|m| m.entry == 0).count();
        assert_eq!(bound, 7);
        assert!(
            d.missed
                .iter()
                .filter(|m| m.entry == 1)
                .all(|m| m.reason == MissReason::CatchUp(CatchUp::None))
        );
        assert_eq!(d.missed.iter().filter(|m| m.entry == 1).count(), 10);
    }

    #[test]
    fn expired_slots_are_not_sent() {
        let e = entry("x", |r| {
            r.expires = Some("30s".into());
            r.catch_up = Some("all".into());
        });
        let mut beat = Beat::new(vec![e], at("2026-11-21T10:00:30Z"), |_| None, 100);
        let d = beat.tick(at("2026-11-21T10:02:40Z"));
        assert!(d.due.is_empty());
        assert!(d.missed.iter().all(|m| m.reason == MissReason::Expired));
        assert_eq!(d.missed.len(), 2);
    }

    #[test]
    fn a_failed_send_comes_back_until_it_expires() {
        let e = entry("x", |r| r.expires = Some("50s".into()));
        let mut beat = Beat::new(vec![e], at("2026-11-21T10:00:30Z"), |_| None, 100);
        let d = beat.tick(at("2026-11-21T10:01:00Z"));
        let fire = d.due[0];
        beat.retry(fire, at("2026-11-21T10:01:02Z"));
        assert_eq!(beat.wake_at(), Some(at("2026-11-21T10:01:02Z")));
        let d = beat.tick(at("2026-11-21T10:01:02Z"));
        assert_eq!(d.due, [Fire { attempt: 1, ..fire }]);
        beat.retry(d.due[0], at("2026-11-21T10:01:55Z"));
        let d = beat.tick(at("2026-11-21T10:01:55Z"));
        assert!(d.due.is_empty());
        assert_eq!(d.missed[0].reason, MissReason::Expired);
    }

    #[test]
    fn cursor_from_a_ledger_resumes_without_refiring() {
        let start = at("2026-11-21T10:05:30Z");
        let mut beat = Beat::new(
            vec![entry("a", |r| r.catch_up = Some("all".into()))],
            start,
            |_| Some(at("2026-11-21T10:03:00Z")),
            100,
        );
        let d = beat.tick(start);
        assert_eq!(
            slots(&beat, &d),
            [
                ("a".into(), "10:04:00".into()),
                ("a".into(), "10:05:00".into())
            ]
        );
    }

    #[test]
    fn jitter_delays_the_send_not_the_slot() {
        let e = entry("j", |r| r.jitter = Some("30s".into()));
        let mut beat = Beat::new(vec![e.clone()], at("2026-11-21T10:00:30Z"), |_| None, 100);
        let send = e.send_at(at("2026-11-21T10:01:00Z"));
        assert_eq!(beat.wake_at(), Some(send));
        assert!(
            beat.tick(send - chrono::Duration::milliseconds(1))
                .due
                .is_empty()
        );
        assert_eq!(beat.tick(send).due[0].nominal, at("2026-11-21T10:01:00Z"));
    }

    /// Runs a beat from `start`, ticking whenever it asks to wake, and
    /// counts the slots of the next 24 hours sent and missed.
    fn day_of_ticks(e: Entry, start: DateTime<Utc>) -> (usize, usize) {
        let end = start + Duration::hours(24);
        let mut beat = Beat::new(vec![e], start, |_| None, 100);
        let (mut sent, mut missed) = (0, 0);
        // An hour past the end, so the last slots' jittered sends happen.
        while let Some(now) = beat.wake_at().filter(|t| *t <= end + Duration::hours(1)) {
            let d = beat.tick(now);
            sent += d.due.iter().filter(|f| f.nominal <= end).count();
            missed += d.missed.iter().filter(|m| m.nominal <= end).count();
        }
        (sent, missed)
    }

    /// A cron entry whose jitter is shorter than the gap between its fires
    /// (as validation now requires) never has a later slot overtake an
    /// earlier one, across a DST change included; one that validation now
    /// refuses (`* * * * *` with a 5-minute jitter) lost most of its slots.
    #[test]
    fn a_jittered_cron_entry_misses_no_slot_in_a_day() {
        let start = at("2026-11-01T00:00:00-04:00");
        let ok = entry("j", |r| {
            r.every = None;
            r.cron = Some("*/5 * * * *".into());
            r.timezone = Some("America/New_York".into());
            r.jitter = Some("4m59s".into());
        });
        // 24 hours of 5-minute slots, the repeated hour's included.
        assert_eq!(day_of_ticks(ok, start), (288, 0));

        let mut overtaking = entry("o", |r| {
            r.every = None;
            r.cron = Some("* * * * *".into());
        });
        overtaking.update_extras(|x| x.jitter = Some(Duration::minutes(5)));
        let (sent, missed) = day_of_ticks(overtaking, start);
        assert!(missed > 100, "sent {sent}, missed {missed}");
    }

    #[test]
    fn clock_steps_are_the_wall_time_not_explained_by_monotonic_time() {
        let t = at("2026-11-21T10:00:00Z");
        let secs = std::time::Duration::from_secs;
        assert_eq!(
            clock_step(t, t + chrono::Duration::seconds(30), secs(30)),
            None
        );
        assert_eq!(
            clock_step(t, t + chrono::Duration::milliseconds(30_900), secs(30)),
            None,
            "slew and scheduling noise under a second"
        );
        assert_eq!(
            clock_step(t, t + chrono::Duration::seconds(301), secs(1)),
            Some(chrono::Duration::seconds(300))
        );
        assert_eq!(
            clock_step(t, t - chrono::Duration::seconds(119), secs(1)),
            Some(chrono::Duration::seconds(-120))
        );
    }

    #[test]
    fn clock_stepping_back_fires_no_slot_twice_and_resumes_after_the_last_decided() {
        let every_second = entry("s", |r| r.every = Some("1s".into()));
        let mut beat = Beat::new(
            vec![every_second],
            at("2026-11-21T10:00:00Z"),
            |_| None,
            100,
        );
        let mut fired = Vec::new();
        for ms in (1_000..=10_000).step_by(250) {
            let now = at("2026-11-21T10:00:00Z") + chrono::Duration::milliseconds(ms);
            fired.extend(beat.tick(now).due.iter().map(|f| f.nominal));
        }
        assert_eq!(fired.len(), 10);
        // Two minutes back: the ten decided slots lie ahead of the new
        // clock. None is due again, and the beat says when it resumes.
        let back = at("2026-11-21T09:58:10Z");
        for ms in (0..=119_000).step_by(500) {
            let d = beat.tick(back + chrono::Duration::milliseconds(ms));
            assert!(d.due.is_empty() && d.missed.is_empty(), "{d:?}");
        }
        assert_eq!(beat.wake_at(), Some(at("2026-11-21T10:00:11Z")));
        let d = beat.tick(at("2026-11-21T10:00:11Z"));
        assert_eq!(slots(&beat, &d), [("s".into(), "10:00:11".into())]);
    }

    #[test]
    fn clock_stepping_forward_is_a_pause_that_catch_up_decides() {
        let latest = entry("latest", |r| r.every = Some("1s".into()));
        let all = entry("all", |r| {
            r.every = Some("1s".into());
            r.catch_up = Some("all".into());
        });
        let none = entry("none", |r| {
            r.every = Some("1s".into());
            r.catch_up = Some("none".into());
        });
        let start = at("2026-11-21T10:00:00Z");
        let mut beat = Beat::new(vec![latest, all, none], start, |_| None, 100);
        assert_eq!(beat.tick(start + chrono::Duration::seconds(1)).due.len(), 3);
        // Five minutes forward: 300 slots of each entry lie in the skip.
        let d = beat.tick(start + chrono::Duration::seconds(301));
        let count = |name: &str, v: &[Fire]| {
            v.iter()
                .filter(|f| beat.entries()[f.entry].name == name)
                .count()
        };
        let missed = |name: &str| {
            d.missed
                .iter()
                .filter(|m| beat.entries()[m.entry].name == name)
                .count()
        };
        // 300 slots lie in the skip: the 61 within `grace` (1m) of the new
        // now are on time and fire for each entry; of the 239 late ones,
        // `latest` adds none beside on-time fires, `all` sends the most
        // recent 100, `none` none; every other slot is recorded as missed.
        assert_eq!(count("latest", &d.due), 61);
        assert_eq!(missed("latest"), 239);
        assert_eq!(count("all", &d.due), 161);
        assert_eq!(missed("all"), 139);
        assert_eq!(count("none", &d.due), 61);
        assert_eq!(missed("none"), 239);
        // No slot is decided twice.
        let mut seen = std::collections::HashSet::new();
        for f in &d.due {
            assert!(seen.insert((f.entry, f.nominal)));
        }
        for m in &d.missed {
            assert!(seen.insert((m.entry, m.nominal)));
        }
    }

    #[test]
    fn a_long_backlog_keeps_the_newest_slots_and_bounds_the_work() {
        // An every-second entry down for two days: 172 800 slots behind.
        let start = at("2026-11-23T10:00:00Z");
        for (policy, late_sent) in [("latest", 0), ("all", 100), ("none", 0)] {
            let e = entry("s", |r| {
                r.every = Some("1s".into());
                r.catch_up = Some(policy.into());
            });
            let mut beat = Beat::new(
                vec![e],
                start,
                |_| Some(start - chrono::Duration::days(2)),
                100,
            );
            let d = beat.tick(start);
            // The 61 slots within grace (1m) are on time and go out, the
            // newest of them `start` itself; `all` adds the 100 late ones
            // just before them; `latest` adds none beside on-time fires.
            assert_eq!(d.due.len(), 61 + late_sent, "{policy}");
            assert_eq!(d.due.iter().map(|f| f.nominal).max(), Some(start));
            let oldest_due = d.due.iter().map(|f| f.nominal).min().unwrap();
            assert_eq!(
                oldest_due,
                start - chrono::Duration::seconds(60 + late_sent as i64),
                "{policy}"
            );
            // The rest is one skipped span plus a bounded number of misses.
            assert_eq!(d.skipped.len(), 1, "{policy}");
            assert_eq!(
                d.skipped[0].first,
                start - chrono::Duration::days(2) + chrono::Duration::seconds(1)
            );
            assert!(d.skipped[0].through < oldest_due);
            assert!(d.missed.len() <= MAX_WALK, "{policy}: {}", d.missed.len());
            assert_eq!(beat.cursor(0), start);
        }
    }

    #[test]
    fn a_long_cron_backlog_is_skipped_too() {
        let start = at("2026-11-23T10:00:30Z");
        let e = entry("c", |r| {
            r.every = None;
            r.cron = Some("* * * * * *".into());
        });
        let mut beat = Beat::new(
            vec![e],
            start,
            |_| Some(start - chrono::Duration::days(3)),
            100,
        );
        let d = beat.tick(start);
        assert_eq!(d.due.len(), 61);
        assert_eq!(d.skipped.len(), 1);
        assert!(d.missed.len() <= 2);
    }

    #[test]
    fn a_failing_entry_holds_one_retry_and_recovers_as_catch_up_says() {
        // Every send of an every-second entry fails for 1 000 s (a deleted
        // queue): one fire waits for a retry at any time, the older ones
        // give way, and recovery sends only what `latest` allows.
        let start = at("2026-11-21T10:00:00Z");
        let e = entry("s", |r| r.every = Some("1s".into()));
        let mut beat = Beat::new(vec![e], start, |_| None, 100);
        let mut superseded = 0;
        for s in 1..=1000 {
            let now = start + chrono::Duration::seconds(s);
            let d = beat.tick(now);
            superseded += d.missed.len();
            for f in d.due {
                superseded += beat
                    .retry(f, now + chrono::Duration::seconds(2))
                    .into_iter()
                    .count();
            }
            assert!(beat.waiting.values().map(|w| w.len()).sum::<usize>() <= 1);
            assert!(
                beat.retries.len() <= 3,
                "lazy deletions stay few: {}",
                beat.retries.len()
            );
        }
        assert!(superseded >= 997, "{superseded}");
        // Recovered: the next tick sends the waiting retry and the new slot.
        let d = beat.tick(start + chrono::Duration::seconds(1003));
        assert!(d.due.len() <= 4, "{:?}", d.due);
    }

    #[test]
    fn a_newer_fire_sent_supersedes_older_retries_unless_catch_up_is_all() {
        let start = at("2026-11-21T10:00:00Z");
        let latest = entry("l", |r| r.every = Some("1s".into()));
        let all = entry("a", |r| {
            r.every = Some("1s".into());
            r.catch_up = Some("all".into());
        });
        let mut beat = Beat::new(vec![latest, all], start, |_| None, 100);
        let d = beat.tick(start + chrono::Duration::seconds(1));
        for f in &d.due {
            assert_eq!(beat.retry(*f, start + chrono::Duration::seconds(30)), None);
        }
        let d = beat.tick(start + chrono::Duration::seconds(2));
        let mut gone = Vec::new();
        for f in d.due {
            gone.extend(beat.sent(f));
        }
        assert_eq!(
            gone.len(),
            1,
            "only `latest` gives up its older fire: {gone:?}"
        );
        assert_eq!(gone[0].entry, 0);
        assert_eq!(gone[0].reason, MissReason::Superseded);
        let d = beat.tick(start + chrono::Duration::seconds(30));
        assert!(
            d.due
                .iter()
                .any(|f| f.entry == 1 && f.nominal == start + chrono::Duration::seconds(1))
        );
        assert!(
            !d.due
                .iter()
                .any(|f| f.entry == 0 && f.nominal == start + chrono::Duration::seconds(1))
        );
    }

    #[test]
    fn claims_unconfirmed_at_resume_follow_grace_and_catch_up() {
        // A leader died (or its confirms failed) days ago with claims in the
        // ledger: a new term sends only what a late slot would get.
        let now = at("2026-11-25T10:00:00Z");
        let latest = entry("latest", |_| {});
        let none = entry("none", |r| r.catch_up = Some("none".into()));
        let expiring = entry("exp", |r| r.expires = Some("10m".into()));
        let fresh = entry("fresh", |_| {});
        let mut beat = Beat::new(vec![latest, none, expiring, fresh], now, |_| None, 100);
        let old = |m: i64| now - chrono::Duration::minutes(m);
        let claim = |entry, nominal| Fire {
            entry,
            nominal,
            attempt: 1,
        };
        let missed = beat.resume_claims(
            vec![
                claim(0, old(3000)),
                claim(0, old(2000)),
                claim(1, old(3000)),
                claim(2, old(3000)),
                claim(3, now - chrono::Duration::seconds(20)),
            ],
            now,
        );
        let why = |e: usize, t| {
            missed
                .iter()
                .find(|m| m.entry == e && m.nominal == t)
                .map(|m| m.reason)
        };
        assert_eq!(
            why(0, old(3000)),
            Some(MissReason::CatchUp(CatchUp::Latest))
        );
        assert_eq!(why(0, old(2000)), None, "the newest late one goes once");
        assert_eq!(why(1, old(3000)), Some(MissReason::CatchUp(CatchUp::None)));
        assert_eq!(why(2, old(3000)), Some(MissReason::Expired));
        let d = beat.tick(now);
        let mut resent: Vec<(usize, u32)> = d.due.iter().map(|f| (f.entry, f.attempt)).collect();
        resent.sort();
        assert_eq!(resent, [(0, 1), (3, 1)], "with their attempt counts");
    }

    fn paused_names(pause: Pause, names: &[&str]) -> HashMap<String, Pause> {
        names.iter().map(|n| (n.to_string(), pause)).collect()
    }

    fn missed_at(d: &Decision, reason: MissReason) -> Vec<String> {
        d.missed
            .iter()
            .filter(|m| m.reason == reason)
            .map(|m| m.nominal.format("%H:%M:%S").to_string())
            .collect()
    }

    #[test]
    fn a_pause_holds_slots_inside_it_and_slots_decided_during_it() {
        let p = Pause {
            from: at("2026-11-21T10:00:30Z"),
            until: Some(at("2026-11-21T10:05:00Z")),
        };
        // Inside, at the edges: `from` is paused, `until` is not.
        assert!(p.covers(at("2026-11-21T10:00:30Z")));
        assert!(p.covers(at("2026-11-21T10:04:59.999Z")));
        assert!(!p.covers(at("2026-11-21T10:05:00Z")));
        assert!(!p.covers(at("2026-11-21T10:00:29Z")));
        // A slot inside, decided long after the pause ended (the leader was down).
        assert!(p.holds(at("2026-11-21T10:02:00Z"), at("2026-11-21T11:00:00Z")));
        // A late slot from before the pause, decided during it.
        assert!(p.holds(at("2026-11-21T09:59:00Z"), at("2026-11-21T10:01:00Z")));
        // Before the pause and decided before it; after it and decided after.
        assert!(!p.holds(at("2026-11-21T10:00:00Z"), at("2026-11-21T10:00:10Z")));
        assert!(!p.holds(at("2026-11-21T10:05:00Z"), at("2026-11-21T10:05:00Z")));
        // Late slots from before the pause, decided after it: not the pause's.
        assert!(!p.holds(at("2026-11-21T09:59:00Z"), at("2026-11-21T10:06:00Z")));
        let open = Pause {
            from: at("2026-11-21T10:00:30Z"),
            until: None,
        };
        assert!(open.covers(at("2036-11-21T10:00:30Z")), "until resumed");
    }

    #[test]
    fn a_paused_entry_misses_each_slot_and_resumes_at_until_without_catch_up() {
        let e = entry("a", |r| r.catch_up = Some("all".into()));
        let mut beat = Beat::new(vec![e], at("2026-11-21T10:00:10Z"), |_| None, 100);
        beat.set_pauses(&paused_names(
            Pause {
                from: at("2026-11-21T10:00:20Z"),
                until: Some(at("2026-11-21T10:05:00Z")),
            },
            &["a", "not-in-the-schedule"],
        ));
        let mut sent = Vec::new();
        let mut paused = Vec::new();
        for m in 1..=7 {
            let now = at("2026-11-21T10:00:00Z") + Duration::minutes(m);
            let d = beat.tick(now);
            sent.extend(slots(&beat, &d).into_iter().map(|(_, t)| t));
            paused.extend(missed_at(&d, MissReason::Paused));
            assert_eq!(d.missed.len(), missed_at(&d, MissReason::Paused).len());
        }
        assert_eq!(paused, ["10:01:00", "10:02:00", "10:03:00", "10:04:00"]);
        assert_eq!(
            sent,
            ["10:05:00", "10:06:00", "10:07:00"],
            "`until` resumes by itself; catch_up = all sends nothing of the pause"
        );
    }

    #[test]
    fn slots_of_a_pause_no_leader_saw_are_not_caught_up_after_it() {
        // No leader ran during the pause: the first tick after it finds the
        // paused slots late. catch_up = all would send late slots; the
        // paused ones are missed, the later late one still goes out.
        let e = entry("a", |r| r.catch_up = Some("all".into()));
        let mut beat = Beat::new(vec![e], at("2026-11-21T10:00:10Z"), |_| None, 100);
        beat.set_pauses(&paused_names(
            Pause {
                from: at("2026-11-21T10:00:20Z"),
                until: Some(at("2026-11-21T10:03:30Z")),
            },
            &["a"],
        ));
        let d = beat.tick(at("2026-11-21T10:06:10Z"));
        assert_eq!(
            missed_at(&d, MissReason::Paused),
            ["10:01:00", "10:02:00", "10:03:00"]
        );
        assert_eq!(
            slots(&beat, &d)
                .into_iter()
                .map(|(_, t)| t)
                .collect::<Vec<_>>(),
            ["10:04:00", "10:05:00", "10:06:00"]
        );
    }

    #[test]
    fn a_pause_holds_retries_and_unconfirmed_claims_too() {
        let now = at("2026-11-21T10:01:00Z");
        let mut beat = Beat::new(
            vec![entry("a", |_| {})],
            at("2026-11-21T10:00:10Z"),
            |_| None,
            100,
        );
        let d = beat.tick(now);
        assert_eq!(d.due.len(), 1);
        beat.retry(d.due[0], now + Duration::seconds(2));
        beat.set_pauses(&paused_names(
            Pause {
                from: now + Duration::seconds(1),
                until: None,
            },
            &["a"],
        ));
        let d = beat.tick(now + Duration::seconds(2));
        assert!(d.due.is_empty(), "{d:?}");
        assert_eq!(missed_at(&d, MissReason::Paused), ["10:01:00"]);
        let claim = Fire {
            entry: 0,
            nominal: now,
            attempt: 1,
        };
        let missed = beat.resume_claims(vec![claim], now + Duration::seconds(3));
        assert_eq!(missed.len(), 1);
        assert_eq!(missed[0].reason, MissReason::Paused);
        // Resumed (the pause ends now): the next slot fires.
        beat.set_pauses(&paused_names(
            Pause {
                from: now + Duration::seconds(1),
                until: Some(now + Duration::seconds(30)),
            },
            &["a"],
        ));
        let d = beat.tick(at("2026-11-21T10:02:00Z"));
        assert_eq!(slots(&beat, &d), [("a".into(), "10:02:00".into())]);
        beat.set_pauses(&HashMap::new());
        assert!(beat.pauses.is_empty());
    }
}
