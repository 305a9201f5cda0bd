//! `sqsbeat run`: signals, the SQS client, and exit codes around the
//! daemon in [`crate::runtime`].

use std::path::PathBuf;

use anyhow::Context as _;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::Config;
use crate::runtime;
use crate::wire::sqs::SqsSink;

pub async fn run(paths: &[PathBuf], config: &Config) -> anyhow::Result<bool> {
    // Signals first, registered synchronously: a SIGTERM during start-up,
    // even before the watcher task runs, stops cleanly.
    let shutdown = CancellationToken::new();
    let term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let hangup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    tokio::spawn(watch_signals(term, int, shutdown.clone()));
    // Bound first: a taken port stops start-up before anything else happens.
    let http = runtime::http::bind(&config.http_addr).await?;
    let paths = crate::cmd::schedule_paths(paths, config);
    let Some(prepared) = runtime::prepare(config, &paths, Some(http), &shutdown).await? else {
        return Ok(shutdown.is_cancelled());
    };
    let sink = tokio::select! {
        s = SqsSink::connect(config.sqs.clone()) => s.context("cannot set up SQS")?,
        _ = shutdown.cancelled() => return Ok(true),
    };
    let probe = runtime::probe_queues(
        sink.clone(),
        runtime::queues(&prepared.entries),
        config.sqs.queue_name_prefix.clone(),
    );
    runtime::serve(
        prepared,
        sink.clone(),
        sink,
        Clock::System,
        Some(hangup),
        Some(Box::pin(probe)),
        shutdown,
    )
    .await?;
    Ok(true)
}

/// Cancels `token` on the first SIGTERM or SIGINT; a second one exits at
/// once, without waiting for in-flight sends (they stay claimed in the
/// ledger and the next leader re-sends them with the same task ids).
async fn watch_signals(mut term: Signal, mut int: Signal, token: CancellationToken) {
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: finishing in-flight sends, then stopping"),
        _ = int.recv() => info!("SIGINT: finishing in-flight sends, then stopping"),
    }
    token.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    warn!("second signal: exiting now without waiting for in-flight sends");
    std::process::exit(130);
}
