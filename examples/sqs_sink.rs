//! A minimal SQS sink for benchmarks: accepts messages and counts them.
//!
//! Speaks the AWS JSON 1.0 protocol (`X-Amz-Target: AmazonSQS.*`) for
//! GetQueueUrl, CreateQueue, GetQueueAttributes, SendMessage and
//! SendMessageBatch, on loopback. It stores nothing, so the endpoint is not
//! what a benchmark measures; its own ceiling is measured by
//! `benches/sink_ceiling.sh`. Not an SQS emulator.
//!
//!   cargo run --release --example sqs_sink -- PORT STATS_FILE [RECORD_FILE]
//!   cargo run --release --example sqs_sink -- --load PORT SECONDS CONNECTIONS
//!
//! `--load` is the sink's own ceiling: CONNECTIONS keep-alive connections
//! send SendMessageBatch requests of 10 Celery-sized messages as fast as
//! the sink answers, for SECONDS, and print messages per second.
//!
//! STATS_FILE (JSON, rewritten every 0.5 s): {"messages": N, "requests": N}.
//! RECORD_FILE, if given, gets one CSV line per message accepted:
//! `accepted_unix_ms,scheduled_unix_ms,entry`, where the scheduled instant
//! and entry come from the Celery headers (`sqsbeat_scheduled_at` or the
//! benchmark's `x_scheduled_at`; `periodic_task_name` or `x_entry`), so
//! lateness can be measured at the endpoint, the way SQS's `SentTimestamp`
//! would.

#![allow(
    clippy::disallowed_methods,
    reason = "a stand-alone endpoint: it stamps what it receives with the real clock"
)]

use std::convert::Infallible;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

#[derive(Default)]
struct Stats {
    messages: AtomicU64,
    requests: AtomicU64,
    record: Option<Mutex<BufWriter<File>>>,
}

/// The CSV line for one message body, or `None` when it is not a Celery
/// message this benchmark stamped.
fn record_line(accepted_ms: f64, body: &str) -> Option<String> {
    let raw = B64.decode(body.trim()).ok();
    let envelope: Value = match raw {
        Some(bytes) => serde_json::from_slice(&bytes).ok()?,
        None => serde_json::from_str(body).ok()?,
    };
    let headers = &envelope["headers"];
    let scheduled_ms = match (&headers["sqsbeat_scheduled_at"], &headers["x_scheduled_at"]) {
        (Value::String(at), _) => {
            chrono::DateTime::parse_from_rfc3339(at)
                .ok()?
                .timestamp_micros() as f64
                / 1000.0
        }
        (_, Value::Number(secs)) => secs.as_f64()? * 1000.0,
        _ => return None,
    };
    let entry = headers["periodic_task_name"]
        .as_str()
        .or(headers["x_entry"].as_str())
        .unwrap_or("?");
    Some(format!("{accepted_ms:.3},{scheduled_ms:.3},{entry}\n"))
}

fn record(stats: &Stats, bodies: &[&str]) {
    let Some(out) = &stats.record else { return };
    let accepted_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or_default();
    let lines: String = bodies
        .iter()
        .filter_map(|b| record_line(accepted_ms, b))
        .collect();
    if let Ok(mut w) = out.lock() {
        let _ = w.write_all(lines.as_bytes());
    }
}

async fn handle(
    req: Request<Incoming>,
    stats: Arc<Stats>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let action = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit('.').next())
        .unwrap_or("")
        .to_string();
    let host = req
        .headers()
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let reply = match action.as_str() {
        "GetQueueUrl" | "CreateQueue" => {
            json!({"QueueUrl": format!("http://{host}/000000000000/{}", v["QueueName"].as_str().unwrap_or("q"))})
        }
        // kombu reads the count when it declares a queue.
        "GetQueueAttributes" => json!({"Attributes": {"ApproximateNumberOfMessages": "0"}}),
        "ListQueues" => json!({"QueueUrls": []}),
        "SendMessage" => {
            stats.messages.fetch_add(1, Ordering::Relaxed);
            record(&stats, &[v["MessageBody"].as_str().unwrap_or("")]);
            json!({"MessageId": uuid::Uuid::new_v4().to_string(), "MD5OfMessageBody": "00000000000000000000000000000000"})
        }
        "SendMessageBatch" => {
            let entries = v["Entries"].as_array().cloned().unwrap_or_default();
            stats
                .messages
                .fetch_add(entries.len() as u64, Ordering::Relaxed);
            let bodies: Vec<&str> = entries
                .iter()
                .map(|e| e["MessageBody"].as_str().unwrap_or(""))
                .collect();
            record(&stats, &bodies);
            let ok: Vec<Value> = entries
                .iter()
                .map(|e| json!({"Id": e["Id"], "MessageId": uuid::Uuid::new_v4().to_string(), "MD5OfMessageBody": "00000000000000000000000000000000"}))
                .collect();
            json!({"Successful": ok, "Failed": []})
        }
        other => {
            let mut r = Response::new(Full::new(Bytes::from(
                json!({"__type": "UnsupportedOperation", "message": other}).to_string(),
            )));
            *r.status_mut() = hyper::StatusCode::BAD_REQUEST;
            return Ok(r);
        }
    };
    let mut r = Response::new(Full::new(Bytes::from(reply.to_string())));
    if let Ok(ct) = "application/x-amz-json-1.0".parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, ct);
    }
    Ok(r)
}

/// Drives a running sink with raw HTTP/1.1 requests (no SDK, no signing),
/// so the figure is the sink's, not a client's.
async fn load(port: u16, seconds: f64, connections: usize) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Shaped like a Celery envelope, so the record path parses it.
    let envelope = json!({
        "body": "x".repeat(1200),
        "headers": {"sqsbeat_scheduled_at": "2026-11-21T10:00:00.000Z", "periodic_task_name": "load"},
    });
    let body_b64 = B64.encode(envelope.to_string());
    let entries: Vec<Value> = (0..10)
        .map(|i| json!({"Id": i.to_string(), "MessageBody": body_b64}))
        .collect();
    let body = json!({"QueueUrl": format!("http://127.0.0.1:{port}/000000000000/bench"), "Entries": entries}).to_string();
    let request = format!(
        "POST / HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nx-amz-target: AmazonSQS.SendMessageBatch\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let request = Arc::new(request.into_bytes());
    let end = std::time::Instant::now() + std::time::Duration::from_secs_f64(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let request = request.clone();
        tasks.spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            let mut sent = 0u64;
            let mut buf = vec![0u8; 64 * 1024];
            while std::time::Instant::now() < end {
                stream.write_all(&request).await?;
                // One response: headers, then Content-Length bytes of body.
                let mut have = 0;
                loop {
                    let n = stream.read(&mut buf[have..]).await?;
                    anyhow::ensure!(n > 0, "sink closed the connection");
                    have += n;
                    let text = String::from_utf8_lossy(&buf[..have]);
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let len: usize = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if have >= head_end + 4 + len {
                            break;
                        }
                    }
                }
                sent += 10;
            }
            anyhow::Ok(sent)
        });
    }
    let started = std::time::Instant::now();
    let mut total = 0;
    while let Some(r) = tasks.join_next().await {
        total += r??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sink ceiling: {total} messages in {secs:.1} s over {connections} connections = {:.0} msg/s",
        total as f64 / secs
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    if std::env::args().nth(1).as_deref() == Some("--load") {
        let _ = args.next();
        let port: u16 = args.next().unwrap_or_default().parse()?;
        let seconds: f64 = args.next().unwrap_or_else(|| "10".into()).parse()?;
        let connections: usize = args.next().unwrap_or_else(|| "16".into()).parse()?;
        return load(port, seconds, connections).await;
    }
    let port: u16 = args.next().unwrap_or_else(|| "9330".into()).parse()?;
    let stats_file = args.next();
    let record = match args.next() {
        Some(path) => Some(Mutex::new(BufWriter::new(File::create(path)?))),
        None => None,
    };
    let stats = Arc::new(Stats {
        record,
        ..Stats::default()
    });
    if let Some(path) = stats_file {
        let s = stats.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                if let Some(Ok(mut w)) = s.record.as_ref().map(|r| r.lock()) {
                    let _ = w.flush();
                }
                let snap = json!({"messages": s.messages.load(Ordering::Relaxed), "requests": s.requests.load(Ordering::Relaxed)});
                let tmp = format!("{path}.tmp");
                if std::fs::write(&tmp, snap.to_string()).is_ok() {
                    let _ = std::fs::rename(&tmp, &path);
                }
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("sqs_sink on 127.0.0.1:{port}");
    loop {
        let (stream, _) = listener.accept().await?;
        let stats = stats.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, stats.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
