//! Reloading the schedule while `run` runs: what triggers a reload (a
//! schedule file changed, SIGHUP, the entries table or django-celery-beat's
//! tables changed) and the reload itself, which reads every source
//! ([`load_sources`]) and validates the new set before it replaces the old.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::DjangoCeleryBeat;
use crate::entry::file::{Diagnostic, Loaded, SchedulePaths};
use crate::entry::{self, Entry, file, merge};
use crate::store::listen::{Channel, Listener};
use crate::store::{self, Store, entries};

/// Reloads the schedule (files, entries table, django-celery-beat's rows)
/// whenever `changed` is notified: a table changed, SIGHUP, or a schedule
/// file changed. The new set is validated first; if valid it is published
/// and the log states what was added, removed and changed; if not, every
/// error is logged and the last good schedule keeps running.
pub async fn reload_schedule(
    store: Store,
    paths: SchedulePaths,
    ctx: crate::entry::Context,
    changed: Arc<Notify>,
    entries: watch::Sender<Arc<Vec<Entry>>>,
    django: Option<DjangoCeleryBeat>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = changed.notified() => {}
            _ = shutdown.cancelled() => return,
        }
        let current = entries.borrow().clone();
        let read = async {
            let files = file::load_paths(&paths, &ctx)?;
            load_sources(&store, files, &ctx, django.as_ref(), &current).await
        };
        let (next, set_aside) = match read.await {
            Ok(loaded) => loaded,
            Err(e) => {
                crate::runtime::metrics::get().reload_errors.inc();
                error!("schedule reload failed: {e:#}; the last good schedule keeps running");
                continue;
            }
        };
        report_set_aside(&set_aside);
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
        let changed_entries = changed_names(&current, &next.entries);
        crate::runtime::metrics::get().reloads.inc();
        if added.is_empty() && removed.is_empty() && changed_entries.is_empty() {
            info!("schedule reloaded: no changes");
            continue;
        }
        info!(?added, ?removed, changed = ?changed_entries, "schedule reloaded");
        entries.send_replace(Arc::new(shared(next.entries)));
    }
}

/// Every source of entries, validated and merged: the schedule files (as
/// loaded), the entries table and, when enabled, django-celery-beat's rows. Rows
/// that do not validate, or whose name is defined elsewhere too, are set
/// aside and come back apart for [`report_set_aside`]; a row set aside
/// keeps its definition in `current`, if it had one. An error: a source
/// could not be read at all.
pub async fn load_sources(
    store: &Store,
    files: Loaded,
    ctx: &crate::entry::Context,
    django: Option<&DjangoCeleryBeat>,
    current: &[Entry],
) -> anyhow::Result<(Loaded, Vec<Diagnostic>)> {
    let table = load_table(store, ctx)
        .await
        .context("cannot read the entries table")?;
    let (db, mut set_aside) = merge::set_aside_invalid(table, current);
    let (db, clashes) = merge::set_aside_clashes(&files, db);
    set_aside.extend(clashes);
    let loaded = merge::merge(files, db);
    let Some(dj) = django else {
        return Ok((loaded, set_aside));
    };
    let rows = store::django::list(store, &dj.schema)
        .await
        .with_context(|| {
            format!(
                "cannot read django-celery-beat's tables in schema {:?}",
                dj.schema
            )
        })?;
    let (rows, invalid) =
        entry::django::set_aside_invalid(entry::django::validate(&rows, &dj.schema, ctx), current);
    let (rows, clashes) = entry::django::set_aside_clashes(&loaded, rows);
    set_aside.extend(invalid);
    set_aside.extend(clashes);
    Ok((entry::django::merge(loaded, rows), set_aside))
}

/// Rows of the entries table read a page at a time.
const TABLE_PAGE: i64 = 2_000;

/// The entries table's rows as entries, validated a page at a time, so only
/// one page of rows is held at once (see [`entries::page`]), two while the
/// next page is read, which it is while this one is validated: on another
/// core, the read (SQLite's thread, or PostgreSQL) and the validation
/// overlap instead of taking turns.
pub async fn load_table(
    store: &Store,
    ctx: &crate::entry::Context,
) -> Result<crate::entry::file::Loaded, store::StoreError> {
    let mut all = crate::entry::file::Loaded::default();
    let mut next = entries::page(store, None, TABLE_PAGE).await?;
    loop {
        let (rows, last) = next;
        let full = rows.len() as i64 == TABLE_PAGE;
        let ahead = match (full, &last) {
            (true, Some(last)) => {
                let (store, last) = (store.clone(), last.clone());
                Some(tokio::spawn(async move {
                    entries::page(&store, Some(&last), TABLE_PAGE).await
                }))
            }
            _ => None,
        };
        let part = merge::validate(&rows, ctx);
        drop(rows);
        all.entries.extend(part.entries);
        all.diagnostics.extend(part.diagnostics);
        all.names.extend(part.names);
        match (full, ahead) {
            (true, Some(ahead)) => {
                next = match ahead.await {
                    Ok(page) => page?,
                    // Never cancelled: only a panic of the read ends it so.
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                }
            }
            // A name that does not read as text cannot be continued from:
            // read the whole table at once instead.
            (true, None) => return Ok(merge::validate(&entries::list(store).await?, ctx)),
            (false, _) => return Ok(all),
        }
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

/// The schedule as the running parts share it: without the spare capacity
/// the loaders' vectors grew by doubling (a third of the vector at 100 000
/// entries, about 18 MiB).
pub fn shared(mut entries: Vec<Entry>) -> Vec<Entry> {
    entries.shrink_to_fit();
    entries
}

/// The entries of `next` whose name `current` defines otherwise. By name
/// through a map: scanning `current` for each entry of `next` was
/// 10 000 000 000 name comparisons for a schedule of 100 000 entries.
fn changed_names<'a>(current: &[Entry], next: &'a [Entry]) -> Vec<&'a str> {
    let before: HashMap<&str, &Entry> = current.iter().map(|e| (e.name.as_str(), e)).collect();
    next.iter()
        .filter(|e| {
            before
                .get(e.name.as_str())
                .is_some_and(|c| !c.same_definition(e))
        })
        .map(|e| e.name.as_str())
        .collect()
}

/// How often schedule files, and a SQLite store's file, are looked at.
pub const LOOK_EVERY: Duration = store::listen::LOOK_EVERY;

/// How long after a SQLite file's look is due the watcher makes it itself:
/// a decision of the beat about to look at it along with its write (at the
/// same instant, one slot every second) makes it first.
const LOOK_SLACK: Duration = Duration::from_millis(50);

/// How long a changed schedule file must stay as it is before it is read:
/// a file written in place is first truncated, then written, and a look in
/// between saw an empty file, so every entry was removed until the next
/// look (seen in the reload test with eight tests at once).
pub const SETTLE: Duration = Duration::from_millis(100);

/// Looks at what only looking reveals, one wake-up for both: at idle each
/// wake-up is most of what the process costs.
///
/// Schedule files: notifies `changed` when one is added, removed or
/// modified (size and modification time of every file), checked at each
/// wake-up and at least every [`LOOK_EVERY`], once the files have stayed
/// as they are for [`SETTLE`] (a writer in the middle of a file does not
/// get it read half-written, unless it pauses that long).
///
/// SQLite: whether another process committed to the database file, for
/// every store watcher at once ([`store::listen`]), at most
/// [`LOOK_EVERY`] (and [`LOOK_SLACK`]) after the last look. The beat's
/// decisions look along with their writes, so while it fires every second
/// or more often this makes no look of its own.
pub async fn watch_files(
    paths: SchedulePaths,
    store: Store,
    changed: Arc<Notify>,
    shutdown: CancellationToken,
) {
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
    // What the previous look saw: a change is read once two looks agree.
    let mut seen = last.clone();
    let mut failing = false;
    let looking = store::listen::needs_looking(&store);
    loop {
        let now = tokio::time::Instant::now();
        if looking && store::listen::next_look(&store).is_none_or(|at| now >= at) {
            match store::listen::look(&store).await {
                Ok(()) if failing => {
                    info!("the database file can be checked for changes again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    warn!(error = %e, "cannot check the database file for changes by other processes; retrying every second");
                    failing = true;
                }
                Err(_) => {}
            }
        }
        // A look that failed is tried again a second later, not at once.
        let mut wake = now + LOOK_EVERY;
        if seen != last {
            wake = wake.min(now + SETTLE);
        }
        if looking
            && let Some(at) = store::listen::next_look(&store)
            && at + LOOK_SLACK > now
        {
            wake = wake.min(at + LOOK_SLACK);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = shutdown.cancelled() => return,
        }
        let now = fingerprint(&paths);
        if now != last && now == seen {
            info!("schedule files changed; reloading");
            last = now.clone();
            changed.notify_one();
        }
        seen = now;
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
/// counter, checked whenever the file changed: see [`store::listen`]).
pub async fn watch_entries_table(
    store: Store,
    changed: std::sync::Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut listener = Listener::new(&store, Channel::Entries);
    if store.pushes_changes() {
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
        let settled = match entries::version(&store).await {
            Ok(v) if v != seen => {
                if seen.is_some() {
                    changed.notify_one();
                }
                seen = v;
                true
            }
            Ok(_) => true,
            Err(e) => {
                warn!(error = %e, "cannot check the entries table for changes");
                false
            }
        };
        tokio::select! {
            _ = listener.changed(), if settled => {}
            _ = tokio::time::sleep(Duration::from_secs(1)), if !settled => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// How often django-celery-beat's rows are read again although
/// `last_update` did not move: a change made with `QuerySet.update()` or in
/// SQL fires no Django signal. django-celery-beat's own scheduler re-reads
/// every 5 minutes for the same reason.
pub const DJANGO_FULL_READ: Duration = Duration::from_secs(300);

/// How long after `last_update` moved the rows are read once more.
/// django-celery-beat bumps it in a task's `pre_save` and `pre_delete`:
/// in autocommit the bump commits before the row's own change, and the
/// reload it wakes can read the row as it was. The row's statement comes
/// right after the bump; this second read sees it without waiting for the
/// next full read.
pub const DJANGO_SETTLE: Duration = Duration::from_secs(2);

/// Wakes `changed` within a second of any change made through Django (the
/// admin, the ORM): django-celery-beat's signal handlers bump
/// `django_celery_beat_periodictasks.last_update` on every save and delete
/// of a task or a schedule; [`DJANGO_SETTLE`] later it wakes `changed`
/// again. One single-row read a second, on every replica; it writes
/// nothing.
pub async fn watch_django(
    store: Store,
    schema: String,
    changed: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut seen: Option<Option<chrono::DateTime<chrono::Utc>>> = None;
    let mut failing = false;
    let mut full_read = tokio::time::Instant::now() + DJANGO_FULL_READ;
    let mut settled: Option<tokio::time::Instant> = None;
    loop {
        match store::django::last_update(&store, &schema).await {
            Ok(t) => {
                if failing {
                    info!("django-celery-beat's tables readable again");
                    failing = false;
                }
                // The first reading reloads too: a change between the
                // start-up read and this one would otherwise go unseen.
                if seen.is_none_or(|s| s != t) {
                    if seen.is_some() {
                        info!("django-celery-beat's tables changed; reloading");
                        settled = Some(tokio::time::Instant::now() + DJANGO_SETTLE);
                    }
                    changed.notify_one();
                    full_read = tokio::time::Instant::now() + DJANGO_FULL_READ;
                }
                seen = Some(t);
            }
            Err(e) if !failing => {
                warn!(error = %e, "cannot check django-celery-beat's tables for changes; retrying every second");
                failing = true;
            }
            Err(_) => {}
        }
        if settled.is_some_and(|at| tokio::time::Instant::now() >= at) {
            changed.notify_one();
            settled = None;
        }
        if tokio::time::Instant::now() >= full_read {
            changed.notify_one();
            full_read = tokio::time::Instant::now() + DJANGO_FULL_READ;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(src: &str) -> Vec<Entry> {
        let l = file::parse_str("s.toml", src, &entry::Context::default());
        assert!(!l.has_errors(), "{:?}", l.diagnostics);
        l.entries
    }

    /// A reload names the entries whose definition changed, and only
    /// those: not one that merely moved in its file or wrote out a
    /// default.
    #[test]
    fn a_reload_sees_what_changed_and_only_that() {
        let before = entries(
            "[entries.same]\ntask = \"t.a\"\nevery = \"1m\"\nkwargs = { n = 1 }\n\
             [entries.moved]\ntask = \"t.a\"\nevery = \"1m\"\n\
             [entries.kwargs]\ntask = \"t.a\"\nevery = \"1m\"\nkwargs = { n = 1 }\n\
             [entries.args]\ntask = \"t.a\"\nevery = \"1m\"\nargs = [1]\n\
             [entries.headers]\ntask = \"t.a\"\nevery = \"1m\"\n\
             [entries.grace]\ntask = \"t.a\"\nevery = \"1m\"\n\
             [entries.queue]\ntask = \"t.a\"\nevery = \"1m\"\n\
             [entries.default]\ntask = \"t.a\"\nevery = \"1m\"\n\
             [entries.gone]\ntask = \"t.a\"\nevery = \"1m\"\n",
        );
        let after = entries(
            "# a new first line moves every entry\n\
             [entries.kwargs]\ntask = \"t.a\"\nevery = \"1m\"\nkwargs = { n = 2 }\n\
             [entries.same]\ntask = \"t.a\"\nevery = \"1m\"\nkwargs = { n = 1 }\n\
             [entries.moved]\ntask = \"t.a\"\nevery = \"1m\"\n\n\n\
             [entries.args]\ntask = \"t.a\"\nevery = \"1m\"\nargs = [1.0]\n\
             [entries.headers]\ntask = \"t.a\"\nevery = \"1m\"\nheaders = { h = \"x\" }\n\
             [entries.grace]\ntask = \"t.a\"\nevery = \"1m\"\ngrace = \"2m\"\n\
             [entries.queue]\ntask = \"t.a\"\nevery = \"1m\"\nqueue = \"other\"\n\
             [entries.default]\ntask = \"t.a\"\nevery = \"1m\"\ngrace = \"1m\"\n\
             [entries.new]\ntask = \"t.a\"\nevery = \"1m\"\n",
        );
        assert_eq!(
            changed_names(&before, &after),
            ["kwargs", "args", "headers", "grace", "queue"]
        );
        assert!(changed_names(&before, &before).is_empty());
    }
}
