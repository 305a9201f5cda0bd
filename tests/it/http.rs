//! The operations surface: /healthz, /readyz, /metrics (parsed as
//! Prometheus text), a taken port, and secrets kept out of debug logs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::pg::TestDb;
use crate::stack::{self, json_lines};

pub fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Parses Prometheus text: every sample line is `name{labels} value`.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample line {l:?}"));
            let v: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {l:?}"));
            assert!(series.starts_with("sqsbeat_"), "{l}");
            (series.to_string(), v)
        })
        .collect()
}

#[test]
fn health_ready_and_metrics_endpoints() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_moto, endpoint) = stack::moto(d);
    let port = stack::free_port();
    std::fs::write(
        d.join("sqsbeat.toml"),
        format!("[sqs]\ncreate_missing_queues = true\n[http]\naddr = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let schedule = d.join("s.toml");
    std::fs::write(
        &schedule,
        "[entries.m]\ntask = \"m.t\"\nevery = \"1s\"\nqueue = \"mq\"\n",
    )
    .unwrap();
    let mut cmd = stack::sqsbeat_command(d, &endpoint, &schedule);
    cmd.env_remove("SQSBEAT_HTTP_ADDR")
        .env("SQSBEAT_DATABASE_URL", &db.url);
    let log = std::fs::File::create(d.join("run.log")).unwrap();
    let mut run = stack::Proc {
        child: cmd
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while json_lines(&d.join("run.log"))
        .iter()
        .filter(|l| l["message"] == "sent")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(d.join("run.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get(port, "/healthz"), (200, "ok\n".to_string()));
    let (code, body) = get(port, "/readyz");
    assert_eq!(code, 200);
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (ready["role"].as_str(), ready["database"].as_str()),
        (Some("leader"), Some("ok"))
    );
    assert!(ready["epoch"].as_i64().unwrap() >= 1 && ready["since"].is_string());
    let (code, text) = get(port, "/metrics");
    assert_eq!(code, 200);
    let s = samples(&text);
    let value = |name: &str| s.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    assert!(
        value("sqsbeat_fires_sent_total{entry=\"m\",queue=\"mq\"}").unwrap() >= 2.0,
        "{text}"
    );
    assert_eq!(value("sqsbeat_leader"), Some(1.0));
    assert!(value("sqsbeat_leader_epoch").unwrap() >= 1.0);
    assert!(value("sqsbeat_fire_lateness_seconds_count").unwrap() >= 2.0);
    assert!(
        value("sqsbeat_sqs_request_seconds_count{operation=\"SendMessageBatch\"}").unwrap() >= 2.0
    );
    assert_eq!(
        value(&format!(
            "sqsbeat_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        Some(1.0)
    );
    assert!(text.contains("# HELP sqsbeat_pending_jobs"), "{text}");
    assert_eq!(get(port, "/nope").0, 404);
    assert!(
        run.terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
}

#[test]
fn a_taken_http_port_refuses_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let schedule = d.join("s.toml");
    std::fs::write(&schedule, "[entries.m]\ntask = \"m.t\"\nevery = \"1h\"\n").unwrap();
    let mut cmd = stack::sqsbeat_command(d, "http://127.0.0.1:9", &schedule);
    cmd.env("SQSBEAT_HTTP_ADDR", format!("127.0.0.1:{port}"));
    let out = stack::output_within(&mut cmd, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot listen on 127.0.0.1:{port}: the port is taken"
        )),
        "{err}"
    );
}

#[test]
fn secrets_never_reach_the_logs_even_at_debug() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_moto, endpoint) = stack::moto(d);
    stack::config_creating_queues(d);
    let schedule = d.join("s.toml");
    std::fs::write(&schedule, "[entries.m]\ntask = \"m.t\"\nevery = \"1s\"\n").unwrap();
    // The test server trusts every connection, so any password is accepted.
    let with_password = db.url.replacen(
        "postgres://postgres@",
        "postgres://postgres:pw-hunter2-secret@",
        1,
    );
    assert_ne!(
        with_password, db.url,
        "expected a URL with a user: {}",
        db.url
    );
    let mut cmd = stack::sqsbeat_command(d, &endpoint, &schedule);
    cmd.env("SQSBEAT_DATABASE_URL", &with_password)
        .env("AWS_SECRET_ACCESS_KEY", "aws-secret-key-do-not-log")
        .env("SQSBEAT_LOG", "debug");
    let log = std::fs::File::create(d.join("run.log")).unwrap();
    let mut run = stack::Proc {
        child: cmd
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(d.join("run.log"))
        .unwrap_or_default()
        .contains("\"message\":\"sent\"")
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(d.join("run.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        run.terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    let text = std::fs::read_to_string(d.join("run.log")).unwrap();
    assert!(text.lines().count() > 20, "debug logging was on");
    assert!(
        !text.contains("pw-hunter2-secret"),
        "database password in the log"
    );
    assert!(
        !text.contains("aws-secret-key-do-not-log"),
        "AWS secret in the log"
    );
}

/// The HTTP server in-process on a free port, with a SQLite store.
async fn serve_in_process() -> (u16, tokio_util::sync::CancellationToken, tempfile::TempDir) {
    serve_entries(Vec::new()).await
}

/// [`serve_in_process`] with a schedule for the status page.
async fn serve_entries(
    entries: Vec<sqsbeat::entry::Entry>,
) -> (u16, tokio_util::sync::CancellationToken, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = sqsbeat::store::Store::Sqlite(
        sqsbeat::store::SqliteStore::open(&dir.path().join("t.db"))
            .await
            .unwrap(),
    );
    let listener = sqsbeat::runtime::http::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_tx, role) = tokio::sync::watch::channel(sqsbeat::runtime::leader::Role::Standby);
    let (_entries_tx, entries) = tokio::sync::watch::channel(std::sync::Arc::new(entries));
    let page =
        sqsbeat::runtime::http::StatusSource::new(entries, sqsbeat::clock::Clock::System, "test");
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(sqsbeat::runtime::http::serve(
        listener,
        store,
        role,
        page,
        stop.clone(),
    ));
    (port, stop, dir)
}

/// The in-process server tests one at a time: each opens many sockets or
/// builds a large page.
static IN_PROCESS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The connections on `port` this process accepted and still holds. Not
/// its open descriptors: the tests running beside it open and close their
/// own. In /proc/net/tcp a connection still in the accept backlog, or
/// closed and lingering, has no inode.
fn accepted_sockets(port: u16) -> usize {
    let local = format!(":{port:04X}");
    ["/proc/self/net/tcp", "/proc/self/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.get(1).is_some_and(|a| a.ends_with(&local))
                        && f.get(3) != Some(&"0A")
                        && f.get(9).is_some_and(|inode| *inode != "0")
                })
                .count()
        })
        .sum()
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_header_timeout() {
    use tokio::io::AsyncReadExt;
    let (port, stop, _dir) = serve_in_process().await;
    // Paused after the store is open: sqlx's pool would time out under a
    // clock that jumps while its connection opens.
    tokio::time::pause();
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 64];
    // Paused time: the read returns once the server's header timer fires.
    let n = tokio::time::timeout(std::time::Duration::from_secs(60), idle.read(&mut buf))
        .await
        .expect("the server closes an idle connection")
        .unwrap_or(0);
    assert!(
        n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
        "closed, not held: {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(started.elapsed() >= sqsbeat::runtime::http::HEADER_READ_TIMEOUT);
    stop.cancel();
}

#[tokio::test]
async fn idle_connections_beyond_the_cap_hold_no_server_socket() {
    let _one = IN_PROCESS.lock().await;
    let (port, stop, _dir) = serve_in_process().await;
    let mut clients = Vec::new();
    for _ in 0..200 {
        clients.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    // Give the accept loop every chance to take more than it may.
    for _ in 0..2_000 {
        tokio::task::yield_now().await;
    }
    let server_side = accepted_sockets(port);
    assert!(
        server_side <= sqsbeat::runtime::http::MAX_CONNECTIONS + 2,
        "{server_side} server sockets for 200 idle clients"
    );
    stop.cancel();
}

/// At 100 000 entries `/api/status` is one page of them (100 by default,
/// 500 at most) with the total, not megabytes, and `/` is the page.
#[tokio::test]
async fn the_status_json_of_100_000_entries_is_one_bounded_page() {
    let _one = IN_PROCESS.lock().await;
    let one = crate::harness::entries(
        "[entries.x]\ntask = \"t.t\"\nevery = \"1m\"\nkwargs = { token = \"kw-secret\" }\n",
    )
    .remove(0);
    let many = (0..100_000)
        .map(|i| {
            let mut e = one.clone();
            e.name = format!("e{:06}", 99_999 - i);
            e
        })
        .collect();
    let (port, stop, _dir) = serve_entries(many).await;
    let (code, body) = tokio::task::spawn_blocking(move || get(port, "/api/status?offset=200"))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.len() < 100_000, "{} bytes", body.len());
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["entries"]["total"], 100_000);
    let items = v["entries"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 100);
    assert_eq!(items[0]["name"], "e000200", "by name, from the offset");
    assert!(!body.contains("kw-secret"));
    let (code, body) = tokio::task::spawn_blocking(move || get(port, "/api/status?limit=100000"))
        .await
        .unwrap();
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["entries"]["items"].as_array().unwrap().len(),
        500,
        "capped"
    );
    let (code, page) = tokio::task::spawn_blocking(move || get(port, "/"))
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("<script src=\"/status.js\""), "{page}");
    stop.cancel();
}

/// 64 connections that sent nothing once filled the cap, and `/healthz`
/// waited until their header timeout closed them: anyone who could reach
/// the port, re-opening them every 5 s, could fail the liveness probe and
/// have sqsbeat restarted. A new connection now takes the place of the
/// oldest idle one. Paused time: an answer that waited for the header
/// timeout would come 5 s later.
#[tokio::test]
async fn healthz_answers_while_idle_connections_fill_the_cap() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _one = IN_PROCESS.lock().await;
    let (port, stop, _dir) = serve_in_process().await;
    tokio::time::pause();
    let mut idle = Vec::new();
    for _ in 0..sqsbeat::runtime::http::MAX_CONNECTIONS {
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    for _ in 0..2_000 {
        tokio::task::yield_now().await;
    }
    let started = tokio::time::Instant::now();
    let mut probe = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    probe.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.ends_with("\r\n\r\nok\n"), "{raw}");
    assert!(
        started.elapsed() < sqsbeat::runtime::http::HEADER_READ_TIMEOUT,
        "answered after {:?}: it waited for the idle connections' header timeout",
        started.elapsed()
    );
    // The oldest idle connection gave its place: closed, without an answer.
    let mut buf = [0u8; 16];
    assert_eq!(idle[0].read(&mut buf).await.unwrap(), 0);
    stop.cancel();
}
