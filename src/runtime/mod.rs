//! `sqsbeat run`: the daemon. Loads the configuration and schedules (files
//! and database), opens the store, connects to SQS, and fires until
//! SIGTERM/SIGINT.

pub mod housekeeping;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod reload;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::beat::driver::{self, Durable};
use crate::config::Config;
use crate::entry::Entry;
use crate::entry::file;
use crate::jobs::releaser::{self, Releaser};
use crate::store::{Store, entries};
use crate::wire::MessageOptions;
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
    let paths = paths.to_vec();
    let ctx = crate::cmd::context(config);
    let files = file::load_paths(&paths, &ctx)?;
    let store = tokio::select! {
        s = Store::open(config, crate::store::DAEMON_CONNECTIONS) => s.map_err(|e| crate::cmd::open_error(config, e))?,
        _ = shutdown.cancelled() => return Ok(true),
    };
    let rows = entries::list(&store)
        .await
        .context("cannot read the entries table")?;
    let (db, set_aside) =
        crate::entry::merge::set_aside_invalid(crate::entry::merge::validate(&rows, &ctx), &[]);
    reload::report_set_aside(&set_aside);
    let loaded = crate::entry::merge::merge(files, db);
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
                since: crate::clock::system_now(),
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
    tokio::spawn(housekeeping::export_role(rx.clone(), shutdown.clone()));
    tokio::spawn(housekeeping::report_alive(
        store.clone(),
        holder.clone(),
        rx.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(housekeeping::export_pending_jobs(
        store.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(housekeeping::prune_ledger(
        store.clone(),
        rx.clone(),
        config.ledger_retention,
        shutdown.clone(),
    ));

    let (entries_tx, entries_rx) = watch::channel(Arc::new(loaded.entries));
    let changed = Arc::new(Notify::new());
    tokio::spawn(reload::watch_entries_table(
        store.clone(),
        changed.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(reload::watch_files(
        paths.clone(),
        changed.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(reload::watch_hangup(
        hangup,
        changed.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(reload::reload_schedule(
        store.clone(),
        paths.clone(),
        ctx,
        changed,
        entries_tx,
        shutdown.clone(),
    ));

    let opts = MessageOptions::from_config(config);
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
