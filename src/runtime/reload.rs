//! Reloading the schedule while `run` runs: what triggers a reload (a
//! schedule file changed, SIGHUP, the entries table changed) and the reload
//! itself, which validates the new set before it replaces the old.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::entry::file::SchedulePaths;
use crate::entry::{Entry, file};
use crate::store::listen::{Channel, Listener};
use crate::store::{Store, entries};
/// Reloads the schedule (files and entries table) whenever `changed` is
/// notified: the table changed, SIGHUP, or a schedule file changed. The new
/// set is validated first; if valid it is published and the log states
/// what was added, removed and changed; if not, every error is logged and
/// the last good schedule keeps running.
pub async fn reload_schedule(
    store: Store,
    paths: SchedulePaths,
    ctx: crate::entry::Context,
    changed: Arc<Notify>,
    entries: watch::Sender<Arc<Vec<Entry>>>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = changed.notified() => {}
            _ = shutdown.cancelled() => return,
        }
        let files = match file::load_paths(&paths, &ctx) {
            Ok(f) => f,
            Err(e) => {
                crate::runtime::metrics::get().reload_errors.inc();
                error!("schedule reload failed: {e}; the last good schedule keeps running");
                continue;
            }
        };
        let rows = match entries::list(&store).await {
            Ok(r) => r,
            Err(e) => {
                crate::runtime::metrics::get().reload_errors.inc();
                warn!(error = %e, "cannot read the entries table; the last good schedule keeps running");
                continue;
            }
        };
        let current = entries.borrow().clone();
        let (db, mut set_aside) = crate::entry::merge::set_aside_invalid(
            crate::entry::merge::validate(&rows, &ctx),
            &current,
        );
        let (db, clashes) = crate::entry::merge::set_aside_clashes(&files, db);
        set_aside.extend(clashes);
        report_set_aside(&set_aside);
        let next = crate::entry::merge::merge(files, db);
        if next.has_errors() {
            crate::runtime::metrics::get().reload_errors.inc();
            for d in next.errors() {
                error!("{d}");
            }
            error!("schedule reload rejected; the last good schedule keeps running");
            continue;
        }
        for d in next.diagnostics.iter().filter(|d| d.warning) {
            warn!("{d}");
        }
        let names = |set: &[Entry]| set.iter().map(|e| e.name.clone()).collect::<BTreeSet<_>>();
        let (before, after) = (names(&current), names(&next.entries));
        let added: Vec<&String> = after.difference(&before).collect();
        let removed: Vec<&String> = before.difference(&after).collect();
        // Same name, different definition (where it was defined aside).
        let changed_entries: Vec<&str> = next
            .entries
            .iter()
            .filter(|e| {
                current
                    .iter()
                    .any(|c| c.name == e.name && !same_definition(c, e))
            })
            .map(|e| e.name.as_str())
            .collect();
        crate::runtime::metrics::get().reloads.inc();
        if added.is_empty() && removed.is_empty() && changed_entries.is_empty() {
            info!("schedule reloaded: no changes");
            continue;
        }
        info!(?added, ?removed, changed = ?changed_entries, "schedule reloaded");
        entries.send_replace(Arc::new(next.entries));
    }
}

/// Rows of the entries table that were not loaded: each is an error in the
/// log (it names the entry and what to fix), and the gauge counts them.
pub fn report_set_aside(errors: &[crate::entry::file::Diagnostic]) {
    for d in errors {
        error!("{d}; this row is not loaded (a running replica keeps its last good definition)");
    }
    let rows: BTreeSet<&str> = errors.iter().filter_map(|d| d.entry.as_deref()).collect();
    crate::runtime::metrics::get()
        .entry_rows_invalid
        .set(rows.len() as i64);
}

fn same_definition(a: &Entry, b: &Entry) -> bool {
    let strip = |e: &Entry| {
        let mut e = e.clone();
        e.origin = crate::entry::Origin {
            file: String::new(),
            line: 0,
        };
        format!("{e:?}")
    };
    strip(a) == strip(b)
}

/// Notifies `changed` when a schedule file is added, removed or modified
/// (checked each second: size and modification time of every file).
pub async fn watch_files(paths: SchedulePaths, changed: Arc<Notify>, shutdown: CancellationToken) {
    let fingerprint =
        |paths: &SchedulePaths| -> Vec<(PathBuf, Option<(u64, std::time::SystemTime)>)> {
            file::expand_paths(paths)
                .unwrap_or_default()
                .into_iter()
                .map(|p| {
                    let meta = std::fs::metadata(&p)
                        .ok()
                        .and_then(|m| Some((m.len(), m.modified().ok()?)));
                    (p, meta)
                })
                .collect()
        };
    let mut last = fingerprint(&paths);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return,
        }
        let now = fingerprint(&paths);
        if now != last {
            info!("schedule files changed; reloading");
            last = now;
            changed.notify_one();
        }
    }
}

/// SIGHUP: reload the schedule.
pub async fn watch_hangup(
    mut hangup: tokio::signal::unix::Signal,
    changed: Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                info!("SIGHUP: reloading the schedule");
                changed.notify_one();
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Wakes `changed` whenever the entries table changes, until shutdown:
/// at once on PostgreSQL (NOTIFY), within a second on SQLite (its change
/// counter).
pub async fn watch_entries_table(
    store: Store,
    changed: std::sync::Arc<Notify>,
    shutdown: CancellationToken,
) {
    if let Some(mut listener) = Listener::new(&store, Channel::Entries) {
        loop {
            tokio::select! {
                r = listener.changed() => match r {
                    Ok(()) => changed.notify_one(),
                    Err(e) => warn!(error = %e, "entries listener failed; reconnecting"),
                },
                _ = shutdown.cancelled() => return,
            }
        }
    }
    let mut seen: Option<i64> = None;
    loop {
        match entries::version(&store).await {
            Ok(v) if v != seen => {
                if seen.is_some() {
                    changed.notify_one();
                }
                seen = v;
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot check the entries table for changes"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
