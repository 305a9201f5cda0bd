//! `/healthz`, `/readyz` and `/metrics`, on loopback by default.
//!
//! - `/healthz`: the process is alive and serving (always 200).
//! - `/readyz`: 200 when the database answers and the role is known (leader
//!   or standby, with epoch and since when), 503 otherwise, JSON either way.
//! - `/metrics`: Prometheus text format.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::runtime::leader::Role;
use crate::store::Store;

/// Binds the address; a taken port is an error that says what to do.
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    let parsed: SocketAddr = addr.parse().map_err(|e| {
        anyhow::anyhow!("[http] addr {addr:?} is not an address like 127.0.0.1:9405: {e}")
    })?;
    TcpListener::bind(parsed).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "cannot listen on {addr}: the port is taken (another sqsbeat?); set [http] addr or SQSBEAT_HTTP_ADDR to a free one"
        ),
        _ => anyhow::anyhow!("cannot listen on {addr}: {e}"),
    })
}

/// Most connections served at once; more wait in the kernel's accept
/// backlog. Bound in a pod (`0.0.0.0`), anyone in the cluster can connect:
/// unbounded, idle sockets would use up the file descriptors the database
/// pool and the SQS client need.
pub const MAX_CONNECTIONS: usize = 64;
/// A client must send its request headers within this (hyper's default
/// needs a timer, which it otherwise silently lacks).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer than this, whatever it does.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves until shutdown. One request per connection: probes and scrapes
/// do not need keep-alive, and it bounds how long a connection holds a slot.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    role: watch::Receiver<Role>,
    shutdown: CancellationToken,
) {
    if let Ok(a) = listener.local_addr() {
        info!(addr = %a, "http: /healthz /readyz /metrics");
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => return,
            },
            _ = shutdown.cancelled() => return,
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and the like: waiting beats a hot loop.
                    warn!(error = %e, "http accept failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                        _ = shutdown.cancelled() => return,
                    }
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let (store, role) = (store.clone(), role.clone());
        connections.spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| handle(req, store.clone(), role.clone()));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
        });
    }
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    store: Store,
    role: watch::Receiver<Role>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = content_type.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        Ok(r)
    };
    if req.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            crate::runtime::metrics::get().render(),
        ),
        "/readyz" => {
            let db = tokio::time::timeout(Duration::from_secs(2), store.ping()).await;
            let db_ok = matches!(db, Ok(Ok(())));
            let current = *role.borrow();
            let body = match current {
                Role::Leader { epoch, since } => {
                    json!({"ready": db_ok, "database": if db_ok { "ok" } else { "unreachable" }, "role": "leader", "epoch": epoch, "since": since.to_rfc3339()})
                }
                Role::Standby => {
                    json!({"ready": db_ok, "database": if db_ok { "ok" } else { "unreachable" }, "role": "standby"})
                }
            };
            let status = if db_ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            reply(status, "application/json", format!("{body}\n"))
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /healthz, /readyz, /metrics\n".into(),
        ),
    }
}
