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
use crate::store::Store;

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
    let mut leadership = None;
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

    let durable = match &config.database_url {
        None => {
            warn!(
                "no database configured: fires are tracked in memory only, and two replicas would both fire; set [database] url for a ledger and leadership"
            );
            None
        }
        Some(url) => {
            let store = tokio::select! {
                s = Store::connect(&url.0, &config.database_schema) => s.context("cannot open the database")?,
                _ = shutdown.cancelled() => return Ok(true),
            };
            let (tx, rx) = watch::channel(Role::Standby);
            let holder = format!(
                "{}:{}",
                gethostname::gethostname().to_string_lossy(),
                std::process::id()
            );
            leadership = Some(tokio::spawn(leader::campaign(
                store.clone(),
                holder,
                tx,
                leader_stop.clone(),
            )));
            tokio::spawn(prune_ledger(
                store.clone(),
                rx.clone(),
                config.ledger_retention,
                shutdown.clone(),
            ));
            Some(Durable { store, role: rx })
        }
    };
    let opts = Options {
        origin: format!("sqsbeat@{}", gethostname::gethostname().to_string_lossy()),
        queue_name_prefix: config.sqs.queue_name_prefix.clone(),
        body_encoding: config.sqs.body_encoding,
    };
    beat::run(loaded.entries, sink, opts, durable, shutdown).await;
    // Only after the beat drained its sends does the lock go, so a standby
    // never starts while this replica still has fires in flight.
    leader_stop.cancel();
    if let Some(l) = leadership {
        let _ = l.await;
    }
    Ok(true)
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
            match crate::store::prune(store.pool(), beat::now() - retention).await {
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
