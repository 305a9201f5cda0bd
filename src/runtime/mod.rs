//! `sqsbeat run`: load config and schedules (files and database), open the
//! store, connect to SQS, fire until SIGTERM/SIGINT.

pub mod http;
pub mod leader;
pub mod metrics;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::beat::driver::{self, Durable, Options};
use crate::config::Config;
use crate::entry::Entry;
use crate::entry::file;
use crate::jobs::releaser::{self, Releaser};
use crate::store::entries;
use crate::store::{PgStore, SqliteStore, Store};
use crate::wire::queue::QueueName;
use crate::wire::sqs::SqsSink;
use leader::Role;

pub async fn run(paths: &[PathBuf], config: &Config) -> anyhow::Result<bool> {
    // Signals first, registered synchronously: a SIGTERM during start-up,
    // even before the watcher task runs, stops cleanly.
    let shutdown = CancellationToken::new();
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let hangup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    tokio::spawn(watch_signals(term, int, shutdown.clone()));

    // Bound first: a taken port stops start-up before anything else happens.
    let http = crate::runtime::http::bind(&config.http_addr).await?;
    let paths = crate::cmd::schedule_paths(paths, config);
    let ctx = crate::cmd::context(config);
    let files = file::load_paths(&paths, &ctx)?;
    let store = tokio::select! {
        s = open_store(config) => s?,
        _ = shutdown.cancelled() => return Ok(true),
    };
    let rows = entries::list(&store)
        .await
        .context("cannot read the entries table")?;
    let (db, set_aside) = entries::set_aside_invalid(entries::validate(&rows, &ctx), &[]);
    report_set_aside(&set_aside);
    let loaded = entries::merge(files, db);
    for d in &loaded.diagnostics {
        if d.warning {
            warn!("{d}")
        } else {
            error!("{d}")
        }
    }
    if loaded.has_errors() {
        error!(
            "the schedule is not valid; not starting (run `sqsbeat check` to see every problem)"
        );
        return Ok(false);
    }
    let sink = tokio::select! {
        s = SqsSink::connect(config.sqs.clone()) => s.context("cannot set up SQS")?,
        _ = shutdown.cancelled() => return Ok(true),
    };
    probe_queues(
        &sink,
        &loaded.entries,
        &config.sqs.queue_name_prefix,
        &shutdown,
    );

    let holder = format!(
        "{}:{}",
        gethostname::gethostname().to_string_lossy(),
        std::process::id()
    );
    // Held until `run` returns: with SQLite, the lock that makes this
    // process the one replica.
    let mut _run_lock = None;
    let leader_stop = CancellationToken::new();
    let (tx, rx) = watch::channel(Role::Standby);
    let leadership = match &store {
        Store::Postgres(pg) => tokio::spawn(leader::campaign(
            pg.clone(),
            holder.clone(),
            tx,
            leader_stop.clone(),
        )),
        Store::Sqlite(lite) => {
            let (lock, epoch) = lite.lock_for_run(&holder).await.context("cannot start")?;
            _run_lock = Some(lock);
            info!(epoch, path = %config.database_path.display(), "SQLite store: this process is the one replica");
            tx.send_replace(Role::Leader {
                epoch,
                since: driver::now(),
            });
            let stop = leader_stop.clone();
            // The role channel must outlive the beat: this task keeps its sender.
            tokio::spawn(async move {
                let _keep = tx;
                stop.cancelled().await
            })
        }
    };
    tokio::spawn(crate::runtime::http::serve(
        http,
        store.clone(),
        rx.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(export_role(rx.clone(), shutdown.clone()));
    tokio::spawn(report_alive(
        store.clone(),
        holder.clone(),
        rx.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(export_pending_jobs(store.clone(), shutdown.clone()));
    tokio::spawn(prune_ledger(
        store.clone(),
        rx.clone(),
        config.ledger_retention,
        shutdown.clone(),
    ));

    let (entries_tx, entries_rx) = watch::channel(Arc::new(loaded.entries));
    let changed = Arc::new(Notify::new());
    tokio::spawn(entries::watch(
        store.clone(),
        changed.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(watch_files(
        paths.clone(),
        changed.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(watch_hangup(hangup, changed.clone(), shutdown.clone()));
    tokio::spawn(reload_schedule(
        store.clone(),
        paths.clone(),
        ctx,
        changed,
        entries_tx,
        shutdown.clone(),
    ));

    let opts = options(config);
    // Every replica releases one-off jobs, leader or not.
    let jobs_wake = Arc::new(Notify::new());
    tokio::spawn(releaser::watch_jobs(
        store.clone(),
        jobs_wake.clone(),
        shutdown.clone(),
    ));
    let release = Releaser {
        store: store.clone(),
        sink: sink.clone(),
        opts: opts.clone(),
        window: config.release_window,
        max_message_bytes: config.sqs.max_message_bytes,
    };
    let releasing = tokio::spawn(release.run(jobs_wake, shutdown.clone()));
    driver::run(
        entries_rx,
        sink,
        opts,
        Durable { store, role: rx },
        shutdown,
    )
    .await;
    // Only after the beat drained its sends does the lock go, so a standby
    // never starts while this replica still has fires in flight.
    let _ = releasing.await;
    leader_stop.cancel();
    let _ = leadership.await;
    Ok(true)
}

/// How messages are built, from the config.
pub fn options(config: &Config) -> Options {
    Options {
        origin: format!("sqsbeat@{}", gethostname::gethostname().to_string_lossy()),
        queue_name_prefix: config.sqs.queue_name_prefix.clone(),
        body_encoding: config.sqs.body_encoding,
    }
}

/// PostgreSQL when a URL is configured, else the embedded SQLite file;
/// sized for a long-running process.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    open_store_sized(config, 8).await
}

/// `open_store` for a one-shot command: a single connection.
pub async fn open_store_cli(config: &Config) -> anyhow::Result<Store> {
    open_store_sized(config, 1).await
}

async fn open_store_sized(config: &Config, connections: u32) -> anyhow::Result<Store> {
    Ok(match &config.database_url {
        Some(url) => Store::Postgres(
            PgStore::connect_sized(&url.0, &config.database_schema, connections)
                .await
                .context("cannot open the PostgreSQL database")?,
        ),
        None => Store::Sqlite(
            SqliteStore::open(&config.database_path)
                .await
                .with_context(|| {
                    format!(
                        "cannot open the SQLite database {}",
                        config.database_path.display()
                    )
                })?,
        ),
    })
}

/// Resolves every queue once in the background, so a missing one is
/// reported at start-up without delaying the first fires; its entries keep
/// retrying, the others fire normally.
fn probe_queues(sink: &SqsSink, entries: &[Entry], prefix: &str, shutdown: &CancellationToken) {
    let queues: BTreeSet<String> = entries
        .iter()
        .filter(|e| e.enabled)
        .map(|e| e.queue.clone())
        .collect();
    let (probe, prefix, stop) = (sink.clone(), prefix.to_string(), shutdown.clone());
    tokio::spawn(async move {
        for q in queues {
            let name = QueueName::new(&prefix, &q);
            let resolved = tokio::select! {
                r = probe.queue_url(&name) => r,
                _ = stop.cancelled() => return,
            };
            match resolved {
                Ok(url) => info!(queue = %q, sqs_name = %name.sqs, %url, "queue ready"),
                Err(e) => error!(queue = %q, "{e}"),
            }
        }
    });
}

/// Reloads the schedule (files and entries table) whenever `changed` is
/// notified: the table changed, SIGHUP, or a schedule file changed. The new
/// set is validated first; if valid it is published and the log states
/// what was added, removed and changed; if not, every error is logged and
/// the last good schedule keeps running.
async fn reload_schedule(
    store: Store,
    paths: Vec<PathBuf>,
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
        let (db, set_aside) = entries::set_aside_invalid(entries::validate(&rows, &ctx), &current);
        report_set_aside(&set_aside);
        let next = entries::merge(files, db);
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
fn report_set_aside(errors: &[crate::entry::file::Diagnostic]) {
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
async fn watch_files(paths: Vec<PathBuf>, changed: Arc<Notify>, shutdown: CancellationToken) {
    let fingerprint = |paths: &[PathBuf]| -> Vec<(PathBuf, Option<(u64, std::time::SystemTime)>)> {
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

/// Deletes settled ledger rows past the retention, hourly, while leading.
async fn prune_ledger(
    store: Store,
    role: watch::Receiver<Role>,
    retention: chrono::Duration,
    shutdown: CancellationToken,
) {
    loop {
        if role.borrow().epoch().is_some() {
            match store.prune(driver::now() - retention).await {
                Ok(0) => {}
                Ok(n) => info!(rows = n, "pruned old ledger rows"),
                Err(e) => warn!(error = %e, "could not prune the ledger"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Tells the store this replica is alive, and in which role, every 2 s
/// (what `sqsbeat status` lists).
async fn report_alive(
    store: Store,
    holder: String,
    role: watch::Receiver<Role>,
    shutdown: CancellationToken,
) {
    let started = driver::now();
    loop {
        let r = *role.borrow();
        if let Err(e) =
            crate::store::replicas::heartbeat(&store, &holder, r, started, driver::now()).await
        {
            warn!(error = %e, "cannot record this replica's heartbeat");
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Mirrors the role into the leader and epoch gauges.
async fn export_role(mut role: watch::Receiver<Role>, shutdown: CancellationToken) {
    loop {
        let r = *role.borrow_and_update();
        let m = crate::runtime::metrics::get();
        m.leader.set(i64::from(r.epoch().is_some()));
        m.epoch.set(r.epoch().unwrap_or(0));
        tokio::select! {
            c = role.changed() => if c.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Refreshes the pending-jobs-by-due-bucket gauge every 15 seconds.
async fn export_pending_jobs(store: Store, shutdown: CancellationToken) {
    loop {
        match crate::store::jobs::pending_by_bucket(&store, driver::now()).await {
            Ok(buckets) => {
                for (due, n) in buckets {
                    crate::runtime::metrics::get()
                        .pending_jobs
                        .get_or_create(&crate::runtime::metrics::DueBucket {
                            due: due.to_string(),
                        })
                        .set(n);
                }
            }
            Err(e) => warn!(error = %e, "cannot count pending jobs"),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(15)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// SIGHUP: reload the schedule.
async fn watch_hangup(
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

/// Cancels `token` on the first SIGTERM or SIGINT.
async fn watch_signals(
    mut term: tokio::signal::unix::Signal,
    mut int: tokio::signal::unix::Signal,
    token: CancellationToken,
) {
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: finishing in-flight sends, then stopping"),
        _ = int.recv() => info!("SIGINT: finishing in-flight sends, then stopping"),
    }
    token.cancel();
}
