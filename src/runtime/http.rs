//! `/healthz`, `/readyz`, `/metrics` and the status page, on loopback by
//! default.
//!
//! - `/healthz`: the process is alive and serving (always 200).
//! - `/readyz`: 200 when the database answers and the role is known (leader
//!   or standby, with epoch and since when), 503 otherwise, JSON either way.
//! - `/metrics`: Prometheus text format.
//! - `/`: the status page, read-only, served from the binary; its script
//!   fetches `/api/status` (the same data as JSON, see
//!   [`crate::runtime::status`]) every few seconds.
//!
//! GET only: anything else is 405. The page has no actions.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

use crate::clock::Clock;
use crate::entry::Entry;
use crate::runtime::leader::Role;
use crate::runtime::status::{self, Page};
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

/// Most connections served at once. Bound in a pod (`0.0.0.0`), anyone in
/// the cluster can connect: unbounded, idle sockets would use up the file
/// descriptors the database pool and the SQS client need.
///
/// A connection that comes when all are taken closes the oldest one that
/// is not inside a request's handler (still sending its request, or
/// being sent its answer): a probe or a scrape sends its request as soon
/// as it connects, so connections that send nothing cannot keep
/// `/healthz` waiting for their header timeout, and have the kubelet
/// restart sqsbeat. (A separate budget for probes could be filled the
/// same way.) Only when every connection is inside a handler does a new
/// one wait for a slot, and those after it in the kernel's accept backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// A client must send its request headers within this (hyper's default
/// needs a timer, which it otherwise silently lacks).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer than this, whatever it does.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an `/api/status` answer is reused: however many pages are
/// open, the store is read at most this often per query.
const STATUS_CACHE: Duration = Duration::from_secs(2);

/// What the status page shows beside the store: this replica's schedule
/// (as its reload loop keeps it) and name.
#[derive(Clone)]
pub struct StatusSource {
    entries: watch::Receiver<Arc<Vec<Entry>>>,
    clock: Clock,
    holder: String,
    cache: Arc<tokio::sync::Mutex<Option<(String, tokio::time::Instant, Bytes)>>>,
}

impl StatusSource {
    pub fn new(entries: watch::Receiver<Arc<Vec<Entry>>>, clock: Clock, holder: &str) -> Self {
        StatusSource {
            entries,
            clock,
            holder: holder.to_string(),
            cache: Arc::default(),
        }
    }

    /// The JSON of `/api/status?{query}`, from the cache when fresh. The
    /// lock is held while the answer is built, so concurrent requests
    /// wait for one read of the store instead of each making their own.
    async fn answer(
        &self,
        query: Option<&str>,
        role: Role,
        store: &Store,
    ) -> Result<Bytes, String> {
        let key = query.unwrap_or_default().to_string();
        let mut cache = self.cache.lock().await;
        if let Some((k, at, body)) = cache.as_ref()
            && *k == key
            && at.elapsed() < STATUS_CACHE
        {
            return Ok(body.clone());
        }
        let entries = self.entries.borrow().clone();
        let page = Page::from_query(query);
        let m = crate::runtime::metrics::get();
        let buckets = ["overdue", "15m", "1h", "1d", "7d", "later"]
            .into_iter()
            .map(|due| {
                let n = m
                    .pending_jobs
                    .get_or_create(&crate::runtime::metrics::DueBucket {
                        due: due.to_string(),
                    })
                    .get();
                (due, n)
            })
            .collect();
        let served_by = json!({"holder": self.holder, "role": if role.epoch().is_some() { "leader" } else { "standby" }});
        let now = self.clock.now();
        let built = tokio::time::timeout(
            Duration::from_secs(5),
            status::snapshot(store, &entries, &page, buckets, served_by, now),
        )
        .await;
        let value = match built {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("the database did not answer within 5 s".into()),
        };
        let body = Bytes::from(format!("{value}\n"));
        *cache = Some((key, tokio::time::Instant::now(), body.clone()));
        Ok(body)
    }
}

/// The connections being served, oldest first: whether each is inside a
/// request's handler, and how to close it (see [`MAX_CONNECTIONS`]).
#[derive(Default)]
struct Live {
    next: u64,
    open: std::collections::BTreeMap<u64, (Arc<AtomicBool>, CancellationToken)>,
}

type Registry = Arc<std::sync::Mutex<Live>>;

/// The registry, even after a panic elsewhere held its lock: it is a list
/// of connections, consistent after every single operation.
fn lock(live: &Registry) -> std::sync::MutexGuard<'_, Live> {
    live.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Live {
    fn add(&mut self) -> (u64, Arc<AtomicBool>, CancellationToken) {
        self.next += 1;
        let (busy, close) = (Arc::new(AtomicBool::new(false)), CancellationToken::new());
        self.open.insert(self.next, (busy.clone(), close.clone()));
        (self.next, busy, close)
    }

    /// Closes the oldest connection not inside a handler, if any.
    fn close_oldest_idle(&mut self) {
        let oldest = self
            .open
            .iter()
            .find(|(_, (busy, _))| !busy.load(Ordering::Acquire))
            .map(|(id, _)| *id);
        if let Some((_, close)) = oldest.and_then(|id| self.open.remove(&id)) {
            close.cancel();
        }
    }
}

/// Takes a connection off [`Live`] when its task ends, however it ends.
struct Leaves(Registry, u64);

impl Drop for Leaves {
    fn drop(&mut self) {
        lock(&self.0).open.remove(&self.1);
    }
}

/// Serves until shutdown. One request per connection: probes and scrapes
/// do not need keep-alive, and it bounds how long a connection holds a slot.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    role: watch::Receiver<Role>,
    page: StatusSource,
    shutdown: CancellationToken,
) {
    if let Ok(a) = listener.local_addr() {
        info!(addr = %a, "http: / (status page) /api/status /healthz /readyz /metrics");
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let live = Registry::default();
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
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
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                lock(&live).close_oldest_idle();
                tokio::select! {
                    s = slots.clone().acquire_owned() => match s {
                        Ok(s) => s,
                        Err(_) => return,
                    },
                    _ = shutdown.cancelled() => return,
                }
            }
        };
        let (id, busy, close) = lock(&live).add();
        let leaves = Leaves(live.clone(), id);
        let (store, role, page) = (store.clone(), role.clone(), page.clone());
        connections.spawn(async move {
            let (_slot, _leaves) = (slot, leaves);
            let service = service_fn(move |req| {
                let (store, role, page, busy) =
                    (store.clone(), role.clone(), page.clone(), busy.clone());
                async move {
                    busy.store(true, Ordering::Release);
                    let answer = handle(req, store, role, page).await;
                    busy.store(false, Ordering::Release);
                    answer
                }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn) => {}
                _ = close.cancelled() => {}
            }
        });
    }
}

/// The page and its assets, served from the binary: no build step.
const PAGE_HTML: &str = include_str!("page/index.html");
const PAGE_JS: &str = include_str!("page/status.js");
const PAGE_CSS: &str = include_str!("page/status.css");

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    if let Ok(v) = content_type.parse() {
        h.insert(hyper::header::CONTENT_TYPE, v);
    }
    // The page runs its own script only, fetches from its own origin, and
    // is framed by no one; entry names are text, never markup.
    for (k, v) in [
        (
            "content-security-policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        if let Ok(v) = v.parse() {
            h.insert(k, v);
        }
    }
    r
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    store: Store,
    role: watch::Receiver<Role>,
    page: StatusSource,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only: this endpoint has no actions\n",
        );
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET"),
        );
        return Ok(r);
    }
    let current = *role.borrow();
    Ok(match req.uri().path() {
        "/" => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE_HTML),
        "/status.js" => reply(StatusCode::OK, "text/javascript; charset=utf-8", PAGE_JS),
        "/status.css" => reply(StatusCode::OK, "text/css; charset=utf-8", PAGE_CSS),
        "/api/status" => match page.answer(req.uri().query(), current, &store).await {
            Ok(body) => reply(StatusCode::OK, "application/json", body),
            Err(e) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                format!("{}\n", json!({"error": e})),
            ),
        },
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n"),
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            crate::runtime::metrics::get().render(),
        ),
        "/readyz" => ready(&store, current).await,
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /, /api/status, /healthz, /readyz, /metrics\n",
        ),
    })
}

async fn ready(store: &Store, role: Role) -> Response<Full<Bytes>> {
    let db = tokio::time::timeout(Duration::from_secs(2), store.ping()).await;
    let db_ok = matches!(db, Ok(Ok(())));
    let body = match role {
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
