//! Sentry Crons check-ins from the leader: the `in_progress` check-in of
//! each fire of a `sentry_monitor` entry, which celery beat's Sentry
//! integration sends from the beat process (the worker's integration
//! closes it with `ok` or `error`; see [`crate::wire::sentry`]).
//!
//! Off the fire's path: the beat queues a check-in and never waits for
//! Sentry. One task posts them in order; when Sentry is slow or away the
//! queue fills and further check-ins are dropped and counted, as
//! sentry-sdk's own transport drops events. A fire never waits for, or
//! fails because of, Sentry.

use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::SentryConfig;
use crate::wire::sentry::{Dsn, Monitor, check_in_envelope};

/// Check-ins waiting to be posted; more are dropped (sentry-sdk's
/// transport queue holds 100 events; one per fire of a busy schedule
/// needs more).
const QUEUE: usize = 1000;
/// Longest a post may take; Sentry answers in milliseconds.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the beat hands check-ins; does nothing without a DSN.
#[derive(Clone, Debug, Default)]
pub struct CheckIns {
    tx: Option<mpsc::Sender<Value>>,
    environment: String,
}

impl CheckIns {
    /// No Sentry: monitored fires carry their headers, and nothing is posted.
    pub fn off() -> Self {
        CheckIns::default()
    }

    /// Queues the `in_progress` check-in of the fire with `task_id`.
    pub fn in_progress(&self, monitor: &Monitor, task_id: &str) {
        let Some(tx) = &self.tx else { return };
        let check_in = monitor.in_progress(task_id, &self.environment);
        if tx.try_send(check_in).is_err() {
            count("dropped");
        }
    }
}

fn count(outcome: &str) {
    crate::runtime::metrics::get()
        .sentry_check_ins
        .get_or_create(&crate::runtime::metrics::Outcome {
            outcome: outcome.to_string(),
        })
        .inc();
}

/// The handle and the task that posts, when a DSN is configured.
pub fn start(
    config: &SentryConfig,
    clock: Clock,
    shutdown: CancellationToken,
) -> anyhow::Result<(CheckIns, Option<impl Future<Output = ()> + Send + 'static>)> {
    let Some(secret) = &config.dsn else {
        return Ok((CheckIns::off(), None));
    };
    let dsn = Dsn::parse(&secret.0).map_err(|e| anyhow::anyhow!("[sentry] dsn: {e}"))?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| {
            anyhow::anyhow!("[sentry] dsn: cannot load the system's CA certificates for Sentry ({e}); install ca-certificates")
        })?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let (tx, rx) = mpsc::channel(QUEUE);
    info!(
        environment = %config.environment,
        "Sentry Crons: the leader sends an in_progress check-in for each fire of a sentry_monitor entry"
    );
    let poster = post_all(rx, client, dsn, clock, shutdown);
    Ok((
        CheckIns {
            tx: Some(tx),
            environment: config.environment.clone(),
        },
        Some(poster),
    ))
}

async fn post_all(
    mut rx: mpsc::Receiver<Value>,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    dsn: Dsn,
    clock: Clock,
    shutdown: CancellationToken,
) {
    let (url, auth) = (
        dsn.envelope_url(),
        dsn.auth_header(concat!("sqsbeat/", env!("CARGO_PKG_VERSION"))),
    );
    // Logged once per run of failures, not once per check-in.
    let mut failing = false;
    loop {
        let check_in = tokio::select! {
            c = rx.recv() => match c { Some(c) => c, None => return },
            _ = shutdown.cancelled() => return,
        };
        let body = check_in_envelope(&check_in, clock.now());
        let request = hyper::Request::post(&url)
            .header("content-type", "application/x-sentry-envelope")
            .header("x-sentry-auth", &auth)
            .body(Full::new(Bytes::from(body)));
        let outcome = match request {
            Ok(r) => match tokio::time::timeout(POST_TIMEOUT, client.request(r)).await {
                Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
                Ok(Ok(resp)) => Err(format!("Sentry answered {}", resp.status())),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {}s", POST_TIMEOUT.as_secs())),
            },
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => {
                count("sent");
                if failing {
                    info!("Sentry check-ins go through again");
                }
                failing = false;
            }
            Err(e) => {
                count("failed");
                if !failing {
                    warn!(error = %e, "cannot send a Sentry check-in (fires are unaffected); check [sentry] dsn and the network");
                }
                failing = true;
            }
        }
    }
}
