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

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::entry::{CatchUp, Entry};

/// Most late slots one entry sends at once under `catch_up = "all"`.
pub const DEFAULT_MAX_CATCH_UP: usize = 100;
/// Slots examined per entry per tick before the rest count as missed, so a
/// long pause of a per-second entry cannot stall a tick.
const MAX_SLOTS_PER_TICK: usize = 100_000;

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
    /// More late slots than `max_catch_up`, or than one tick examines.
    Bound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missed {
    pub entry: usize,
    pub nominal: DateTime<Utc>,
    pub reason: MissReason,
}

/// What one tick decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub due: Vec<Fire>,
    pub missed: Vec<Missed>,
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
    /// Fires that failed to send, by when to try again.
    retries: BinaryHeap<Reverse<(DateTime<Utc>, Fire)>>,
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
        let mut beat = Beat {
            entries,
            cursors,
            heap: BinaryHeap::new(),
            retries: BinaryHeap::new(),
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

    /// Puts a fire that failed to send back, to be due again at `at`.
    pub fn retry(&mut self, fire: Fire, at: DateTime<Utc>) {
        let fire = Fire {
            attempt: fire.attempt + 1,
            ..fire
        };
        self.retries.push(Reverse((at, fire)));
    }

    /// Decides everything due at `now`.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Decision {
        let mut d = Decision::default();
        while let Some(Reverse((at, fire))) = self.retries.peek().copied() {
            if at > now {
                break;
            }
            self.retries.pop();
            if self.expired(fire.entry, fire.nominal, now) {
                d.missed.push(Missed {
                    entry: fire.entry,
                    nominal: fire.nominal,
                    reason: MissReason::Expired,
                });
            } else {
                d.due.push(fire);
            }
        }
        while let Some(Reverse((at, i, _))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            self.decide_entry(i, now, &mut d);
            self.schedule_next(i);
        }
        d
    }

    fn expired(&self, i: usize, nominal: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        self.entries[i].expires.is_some_and(|x| nominal + x <= now)
    }

    /// Every slot of entry `i` whose send instant is at or before `now`.
    fn decide_entry(&mut self, i: usize, now: DateTime<Utc>, d: &mut Decision) {
        let e = &self.entries[i];
        let mut on_time = Vec::new();
        // Late slots in order; only the most recent `keep` can still be sent.
        let keep = match e.catch_up {
            CatchUp::All => self.max_catch_up,
            CatchUp::Latest => 1,
            CatchUp::None => 0,
        };
        let mut late: std::collections::VecDeque<DateTime<Utc>> = std::collections::VecDeque::new();
        let mut cursor = self.cursors[i];
        let mut examined = 0;
        while let Some(f) = e.next_after(cursor) {
            if e.send_at(f.at) > now {
                break;
            }
            cursor = f.at;
            examined += 1;
            if examined > MAX_SLOTS_PER_TICK {
                // Skip ahead: the rest of this backlog is missed in bulk.
                d.missed.push(Missed {
                    entry: i,
                    nominal: f.at,
                    reason: MissReason::Bound,
                });
                continue;
            }
            if self.expired(i, f.at, now) {
                d.missed.push(Missed {
                    entry: i,
                    nominal: f.at,
                    reason: MissReason::Expired,
                });
            } else if now - e.send_at(f.at) <= e.grace {
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
}
