//! `sqsbeat run`: load config and schedules, connect to SQS, fire until
//! SIGTERM/SIGINT.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use tokio::sync::watch;

use crate::beat::{self, Durable, Options};
use crate::config::Config;
use crate::leader::{self, Role};
use crate::queue::QueueName;
use crate::schedule_file;
use crate::sink::SqsSink;
use crate::store::{PgStore, SqliteStore, Store};

pub async fn run(paths: &[PathBuf], config: &Config) -> anyhow::Result<bool> {
    // Signals first: a SIGTERM during start-up must stop cleanly too.
    let shutdown = CancellationToken::new();
    // Registered here, synchronously: a signal that arrives before the
    // watcher task first runs is still caught, never the default action.
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    tokio::spawn(watch_signals(term, int, shutdown.clone()));
    let leader_stop = CancellationToken::new();
    let paths = super::schedule_paths(paths, config);
    let loaded = schedule_file::load_paths(&paths, &super::context(config))?;
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

    // Resolve every queue once in the background, so a missing one is
    // reported at start-up without delaying the first fires; its entries
    // keep retrying, the others fire normally.
    let queues: BTreeSet<String> = loaded
        .entries
        .iter()
        .filter(|e| e.enabled)
        .map(|e| e.queue.clone())
        .collect();
    let (probe, prefix) = (sink.clone(), config.sqs.queue_name_prefix.clone());
    let stop = shutdown.clone();
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

    let holder = format!(
        "{}:{}",
        gethostname::gethostname().to_string_lossy(),
        std::process::id()
    );
    // Held until `run` returns: with SQLite, the lock that makes this
    // process the one replica.
    let mut _run_lock = None;
    let store = tokio::select! {
        s = open_store(config) => s?,
        _ = shutdown.cancelled() => return Ok(true),
    };
    let (tx, rx) = watch::channel(Role::Standby);
    let leadership = match &store {
        Store::Postgres(pg) => tokio::spawn(leader::campaign(
            pg.clone(),
            holder,
            tx,
            leader_stop.clone(),
        )),
        Store::Sqlite(lite) => {
            let (lock, epoch) = lite.lock_for_run(&holder).await.context("cannot start")?;
            _run_lock = Some(lock);
            info!(epoch, path = %config.database_path.display(), "SQLite store: this process is the one replica");
            tx.send_replace(Role::Leader {
                epoch,
                since: beat::now(),
            });
            // The channel must outlive the beat: keep the sender.
            tokio::spawn(async move {
                let _keep = tx;
                std::future::pending::<()>().await
            })
        }
    };
    tokio::spawn(prune_ledger(
        store.clone(),
        rx.clone(),
        config.ledger_retention,
        shutdown.clone(),
    ));
    let durable = Some(Durable { store, role: rx });
    let opts = Options {
        origin: format!("sqsbeat@{}", gethostname::gethostname().to_string_lossy()),
        queue_name_prefix: config.sqs.queue_name_prefix.clone(),
        body_encoding: config.sqs.body_encoding,
    };
    beat::run(loaded.entries, sink, opts, durable, shutdown).await;
    // Only after the beat drained its sends does the lock go, so a standby
    // never starts while this replica still has fires in flight.
    leader_stop.cancel();
    if config.database_url.is_none() {
        leadership.abort();
    }
    let _ = leadership.await;
    Ok(true)
}

/// PostgreSQL when a URL is configured, else the embedded SQLite file.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    Ok(match &config.database_url {
        Some(url) => Store::Postgres(
            PgStore::connect(&url.0, &config.database_schema)
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

/// Deletes settled ledger rows past the retention, hourly, while leading.
async fn prune_ledger(
    store: Store,
    role: watch::Receiver<Role>,
    retention: chrono::Duration,
    shutdown: CancellationToken,
) {
    loop {
        if role.borrow().epoch().is_some() {
            match store.prune(beat::now() - retention).await {
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
