//! A minimal SQS sink for benchmarks: accepts messages and counts them.
//!
//! Speaks the AWS JSON 1.0 protocol (`X-Amz-Target: AmazonSQS.*`) for
//! GetQueueUrl, CreateQueue, GetQueueAttributes, SendMessage and
//! SendMessageBatch, on loopback. It stores nothing, so the endpoint is not
//! what a benchmark measures; its own ceiling is measured by
//! `benches/sink_ceiling.sh`. Not an SQS emulator.
//!
//!   cargo run --release --example sqs_sink -- PORT STATS_FILE
//!
//! STATS_FILE (JSON, rewritten each second): {"messages": N, "requests": N}.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
        "GetQueueAttributes" => json!({"Attributes": {}}),
        "SendMessage" => {
            stats.messages.fetch_add(1, Ordering::Relaxed);
            json!({"MessageId": uuid::Uuid::new_v4().to_string(), "MD5OfMessageBody": "00000000000000000000000000000000"})
        }
        "SendMessageBatch" => {
            let entries = v["Entries"].as_array().cloned().unwrap_or_default();
            stats
                .messages
                .fetch_add(entries.len() as u64, Ordering::Relaxed);
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().unwrap_or_else(|| "9330".into()).parse()?;
    let stats_file = args.next();
    let stats = Arc::new(Stats::default());
    if let Some(path) = stats_file {
        let s = stats.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
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
