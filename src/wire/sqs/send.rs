//! `SendMessageBatch` without the AWS SDK's request pipeline.
//!
//! The SDK spends about 540 000 instructions on one request (interceptors,
//! config bags, and a SigV4 signing key derived afresh each time); at a few
//! fires a second that was a quarter to two fifths of all CPU per fire.
//! This path does what that request needs and nothing else: the AWS JSON
//! 1.0 body the SDK would send, signed with SigV4 ([`crate::wire::sigv4`],
//! its key kept for the day), POSTed over the hyper client with a
//! keep-alive pool. What the SDK decided is still the SDK's: credentials
//! come from its default chain (cached here, refreshed before they expire
//! or when SQS says they expired) and the endpoint from its resolver (FIPS,
//! dual-stack, `endpoint_url`, `AWS_ENDPOINT_URL_SQS`).
//!
//! Retries and timeouts are the ones the SDK client was configured with:
//! 3 attempts for throttling, 5xx, timeouts and lost connections, with
//! exponential backoff and jitter and a retry quota; 3 s to connect, 10 s
//! per attempt, 30 s in all.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, HOST, HeaderMap};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Deserialize;
use tracing::warn;

use crate::clock::Clock;
use crate::wire::intake::AttributeValue;
use crate::wire::sigv4::{self, Keys, Signer};
use crate::wire::sink::{Outgoing, SendError};

/// Sent and signed with every request, as the SDK sends and signs them:
/// `x-amzn-query-mode` asks SQS for the query-protocol error codes
/// (`AWS.SimpleQueueService.NonExistentQueue`) in `x-amzn-query-error`.
const SIGNED: [(&str, &str); 3] = [
    ("content-type", "application/x-amz-json-1.0"),
    ("x-amz-target", "AmazonSQS.SendMessageBatch"),
    ("x-amzn-query-mode", "true"),
];
/// SQS answers a batch in a few hundred bytes; anything far larger is not
/// SQS, and is not read into memory.
const MAX_ANSWER_BYTES: usize = 1 << 20;
/// Names the client in SQS's and CloudTrail's records (`userAgent`), so an
/// operator can tell sqsbeat's calls from the application's. Not signed:
/// proxies may rewrite it.
const USER_AGENT: &str = concat!("sqsbeat/", env!("CARGO_PKG_VERSION"));
/// An error message from SQS is cut to this many bytes: `SignatureDoesNotMatch`
/// quotes the whole canonical request, which is long and says nothing an
/// operator acts on.
const MAX_MESSAGE_BYTES: usize = 512;

/// How long and how often a request is tried: the SDK client's settings.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub attempts: u32,
    /// Backoff before retry `k` (1-based): up to `initial_backoff * 2^(k-1)`,
    /// at most `max_backoff`, times a jitter fraction.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub connect_timeout: Duration,
    pub attempt_timeout: Duration,
    pub operation_timeout: Duration,
}

impl Policy {
    pub const STANDARD: Policy = Policy {
        attempts: 3,
        initial_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(3),
        attempt_timeout: Duration::from_secs(10),
        operation_timeout: Duration::from_secs(30),
    };
}

/// Retry quota (the SDK's standard token bucket): a retry takes 5 tokens
/// (10 after a timeout or a lost connection), a success gives back what
/// its call took, or one token if it took none. An endpoint that keeps
/// failing drains the bucket, and calls then fail at their first error
/// instead of tripling the load.
const QUOTA_MAX: u32 = 500;
const RETRY_COST: u32 = 5;
const TRANSIENT_RETRY_COST: u32 = 10;

/// Credentials are refreshed this long before they expire (or halfway
/// through their life, if that is shorter)...
const REFRESH_BEFORE: Duration = Duration::from_secs(300);
/// ...and ones without an expiry (keys from the environment or a profile)
/// are read again after this long, as the SDK's credentials cache does.
const NO_EXPIRY_TTL: Duration = Duration::from_secs(900);
/// After a failed refresh, still-valid credentials are used this long
/// before the next try.
const REFRESH_RETRY: Duration = Duration::from_secs(10);
/// A credentials provider that does not answer (an unreachable instance
/// metadata service) fails the request after this long.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(5);

/// Error codes the SDK retries as throttling.
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];
/// Error codes the SDK retries as transient.
const TRANSIENT: &[&str] = &["RequestTimeout", "RequestTimeoutException"];
/// Error codes that mean the credentials used are no longer good.
const AUTH: &[&str] = &[
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
];

/// Where requests go, from the SDK's endpoint resolution.
#[derive(Debug, Clone)]
pub struct Endpoint {
    uri: hyper::Uri,
    /// `Host` as sent and signed.
    host: String,
    /// The path as sent and signed: the endpoint's own path, then `/`.
    path: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL ({e})"))?;
        let default_port = match uri.scheme_str() {
            Some("https") => 443,
            Some("http") => 80,
            _ => return Err(format!("{url:?} is neither http:// nor https://")),
        };
        let Some(name) = uri.host() else {
            return Err(format!("{url:?} names no host"));
        };
        let host = match uri.port_u16() {
            Some(p) if p != default_port => format!("{name}:{p}"),
            _ => name.to_string(),
        };
        // As the SDK applies an endpoint with a path: the operation's `/`
        // appended to it.
        let path = match uri.path() {
            "" | "/" => "/".to_string(),
            p => format!("{}/", p.trim_end_matches('/')),
        };
        let scheme = uri.scheme_str().unwrap_or("https");
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or(name);
        let uri = format!("{scheme}://{authority}{path}")
            .parse()
            .map_err(|e| format!("{url:?} is not a URL ({e})"))?;
        Ok(Endpoint { uri, host, path })
    }

    /// The endpoint the SDK's SQS client would use with `shared`: the
    /// client's own `endpoint_url` if set in code, else a service-specific
    /// one (`AWS_ENDPOINT_URL_SQS`, a profile's `services` section), else
    /// the global one, else the resolver's regional endpoint (FIPS and
    /// dual-stack as configured).
    pub async fn resolve(shared: &aws_types::SdkConfig, region: &str) -> Result<Self, String> {
        use aws_sdk_sqs::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
        let url = if shared.get_origin("endpoint_url").is_client_config() {
            shared.endpoint_url().map(str::to_string)
        } else {
            let key = aws_types::service_config::ServiceConfigKey::builder()
                .service_id("SQS")
                .env("AWS_ENDPOINT_URL")
                .profile("endpoint_url")
                .build()
                .map_err(|e| e.to_string())?;
            shared
                .service_config()
                .and_then(|c| c.load_config(key))
                .or_else(|| shared.endpoint_url().map(str::to_string))
        };
        let params = Params::builder()
            .region(region)
            .set_use_fips(shared.use_fips())
            .set_use_dual_stack(shared.use_dual_stack())
            .set_endpoint(url)
            .build()
            .map_err(|e| e.to_string())?;
        let endpoint = DefaultResolver::new()
            .resolve_endpoint(&params)
            .await
            .map_err(|e| e.to_string())?;
        Endpoint::parse(endpoint.url())
    }
}

/// What went wrong with one call, before it becomes a [`SendError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// SQS answered with an error.
    Service {
        status: u16,
        /// As the SDK reports it: the `x-amzn-query-error` code, else the
        /// `x-amzn-errortype` header, `code` or `__type` without its
        /// namespace.
        code: Option<String>,
        message: String,
        /// `x-amzn-query-error` says the fault is SQS's (`Receiver`).
        receiver_fault: bool,
    },
    /// No answer: no connection, a connection lost, an unreadable answer.
    Transport(String),
    /// No answer within the attempt timeout.
    AttemptTimeout,
    /// Retries did not finish within the operation timeout.
    OperationTimeout,
    /// No credentials to sign with.
    Credentials(String),
    /// The request could not be built (a header value the credentials
    /// provider gave that HTTP cannot carry).
    Invalid(String),
}

impl CallError {
    /// The code counted in `sqsbeat_sqs_errors_total`, as with the SDK.
    pub fn metric_code(&self) -> &str {
        match self {
            CallError::Service {
                code: Some(code), ..
            } => code,
            _ => "transport",
        }
    }

    /// Tokens a retry of this error takes, or `None` if it is not retried.
    fn retry_cost(&self) -> Option<u32> {
        match self {
            CallError::AttemptTimeout | CallError::Transport(_) => Some(TRANSIENT_RETRY_COST),
            CallError::Service { status, code, .. } => {
                let code = code.as_deref().unwrap_or("");
                if THROTTLING.contains(&code) {
                    Some(RETRY_COST)
                } else if TRANSIENT.contains(&code) || matches!(status, 500 | 502 | 503 | 504) {
                    Some(TRANSIENT_RETRY_COST)
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    fn is_auth(&self) -> bool {
        matches!(self, CallError::Service { code: Some(c), .. } if AUTH.contains(&c.as_str()))
    }

    /// What each message of the batch is told. The text names the queue
    /// and what to do, never a message's content.
    pub fn into_send_error(self, queue: &str, policy: &Policy) -> SendError {
        match self {
            CallError::Service {
                status,
                code: Some(code),
                message,
                receiver_fault,
            } => {
                let transient = receiver_fault
                    || status >= 500
                    || THROTTLING.contains(&code.as_str())
                    || TRANSIENT.contains(&code.as_str())
                    || [
                        "InternalError",
                        "InternalFailure",
                        "ServiceUnavailable",
                        "Throttl",
                    ]
                    .iter()
                    .any(|t| code.contains(t));
                SendError::Rejected {
                    code,
                    message,
                    sender_fault: !transient,
                }
            }
            CallError::Service {
                status, code: None, ..
            } => SendError::Request(format!(
                "SendMessageBatch to queue {queue:?}: HTTP {status} without an SQS error code; check that [sqs] endpoint_url (or AWS_ENDPOINT_URL) points at SQS"
            )),
            CallError::Transport(e) => SendError::Request(format!(
                "SendMessageBatch to queue {queue:?}: no answer after {} attempts ({e}); check the network path to SQS",
                policy.attempts
            )),
            CallError::AttemptTimeout => SendError::Request(format!(
                "SendMessageBatch to queue {queue:?}: no answer within {} s, {} attempts; SQS may have taken the messages, and a retry sends them with the same task ids",
                policy.attempt_timeout.as_secs(),
                policy.attempts
            )),
            CallError::OperationTimeout => SendError::Request(format!(
                "SendMessageBatch to queue {queue:?}: not done within {} s; SQS may have taken the messages, and a retry sends them with the same task ids",
                policy.operation_timeout.as_secs()
            )),
            CallError::Credentials(e) => SendError::Request(format!(
                "SendMessageBatch to queue {queue:?}: no AWS credentials ({e}); check the credentials source (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, container or instance role, web identity)"
            )),
            CallError::Invalid(e) => SendError::Request(format!(
                "SendMessageBatch to queue {queue:?}: the request could not be built ({e}); check the credentials source"
            )),
        }
    }
}

/// The error SQS answered with, read as the SDK reads it.
pub fn service_error(status: u16, headers: &HeaderMap, body: &[u8]) -> CallError {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).unwrap_or_default();
    let field = |name: &str| fields.get(name).and_then(|v| v.as_str());
    let query = header("x-amzn-query-error").and_then(|v| v.split_once(';'));
    let code = match query {
        Some((code, _)) => Some(code.to_string()),
        None => header("x-amzn-errortype")
            .or_else(|| field("code"))
            .or_else(|| field("__type"))
            .map(|c| sanitize_code(c).to_string()),
    };
    let message = ["message", "Message", "errorMessage"]
        .iter()
        .find_map(|k| field(k))
        .unwrap_or_default()
        .to_string();
    CallError::Service {
        status,
        code,
        message,
        receiver_fault: query.is_some_and(|(_, fault)| fault == "Receiver"),
    }
}

/// SQS's error message as it may be logged and stored: without the
/// canonical request and string to sign that `SignatureDoesNotMatch`
/// quotes (the session token is one of the signed headers), without any
/// credential in it, and at most [`MAX_MESSAGE_BYTES`] long.
fn redacted(message: &str, keys: &Keys<'_>) -> String {
    let mut m = before_signing_quote(message);
    for secret in [Some(keys.secret_access_key), keys.session_token] {
        if let Some(secret) = secret.filter(|s| !s.is_empty()) {
            m = m.replace(secret, "<redacted>");
        }
    }
    cut(m)
}

/// SQS's error text, from a call the SDK made and signed (whose keys
/// this does not see), as it may be logged and stored: without the
/// canonical request `SignatureDoesNotMatch` quotes, where the session
/// token is, and at most [`MAX_MESSAGE_BYTES`] long.
pub(crate) fn without_signing_quote(message: &str) -> String {
    cut(before_signing_quote(message))
}

fn before_signing_quote(message: &str) -> String {
    message
        .split("The Canonical String")
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

/// `text` cut to [`MAX_MESSAGE_BYTES`] at a character boundary.
fn cut(mut text: String) -> String {
    if text.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// `aws.namespace#Code:http://...` → `Code`.
fn sanitize_code(code: &str) -> &str {
    let code = code.split(':').next().unwrap_or(code);
    code.rsplit_once('#').map_or(code, |(_, c)| c)
}

/// The request body, field for field what the SDK serializes for the same
/// entries: `Id` is the entry's position in the batch.
pub fn batch_body(queue_url: &str, fifo: bool, batch: &[(usize, Outgoing)]) -> Vec<u8> {
    let size: usize = batch
        .iter()
        .map(|(_, m)| {
            m.body.len()
                + 160
                + m.attributes
                    .iter()
                    .map(|(n, a)| a.size(n) * 4 / 3 + 64)
                    .sum::<usize>()
        })
        .sum();
    let mut out = Vec::with_capacity(queue_url.len() + 32 + size);
    out.extend_from_slice(b"{\"QueueUrl\":");
    json_string(&mut out, queue_url);
    out.extend_from_slice(b",\"Entries\":[");
    for (n, (_, m)) in batch.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"Id\":\"");
        out.extend_from_slice(n.to_string().as_bytes());
        out.extend_from_slice(b"\",\"MessageBody\":");
        json_string(&mut out, &m.body);
        // FIFO queues take no per-message delay.
        if !fifo && m.delay_seconds > 0 {
            out.extend_from_slice(b",\"DelaySeconds\":");
            out.extend_from_slice(m.delay_seconds.min(900).to_string().as_bytes());
        }
        if !m.attributes.is_empty() {
            out.extend_from_slice(b",\"MessageAttributes\":{");
            for (i, (name, a)) in m.attributes.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_string(&mut out, name);
                out.push(b':');
                match &a.value {
                    AttributeValue::String(s) => {
                        out.extend_from_slice(b"{\"StringValue\":");
                        json_string(&mut out, s);
                    }
                    AttributeValue::Binary(b) => {
                        out.extend_from_slice(b"{\"BinaryValue\":\"");
                        out.extend_from_slice(B64.encode(b).as_bytes());
                        out.push(b'"');
                    }
                }
                out.extend_from_slice(b",\"DataType\":");
                json_string(&mut out, &a.data_type);
                out.push(b'}');
            }
            out.push(b'}');
        }
        if fifo && let Some(d) = &m.dedup_id {
            out.extend_from_slice(b",\"MessageDeduplicationId\":");
            json_string(&mut out, d);
        }
        if let Some(g) = &m.group_id {
            out.extend_from_slice(b",\"MessageGroupId\":");
            json_string(&mut out, g);
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}

/// A JSON string, escaped as the SDK's serializer escapes it (`"`, `\`
/// and control characters; everything else as is).
fn json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    // Base64 bodies (kombu's default) need no escape: one branch-free pass
    // the compiler vectorizes, then one copy.
    let plain = !bytes.iter().fold(false, |any, &b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "Successful")]
    successful: Option<Vec<Succeeded>>,
    #[serde(rename = "Failed")]
    failed: Option<Vec<Failed>>,
}

#[derive(Deserialize)]
struct Succeeded {
    #[serde(rename = "Id")]
    id: String,
}

#[derive(Deserialize)]
struct Failed {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "SenderFault", default)]
    sender_fault: Option<bool>,
    #[serde(rename = "Code", default)]
    code: Option<String>,
    #[serde(rename = "Message", default)]
    message: Option<String>,
}

/// Each of the `n` entries' outcome from SQS's answer: sent only if SQS
/// listed it as successful.
pub fn outcomes(answer: &[u8], n: usize, queue: &str) -> Vec<Result<(), SendError>> {
    let answer: Answer = match serde_json::from_slice(answer) {
        Ok(a) => a,
        Err(e) => {
            let err = SendError::Request(format!(
                "SendMessageBatch to queue {queue:?}: the answer is not SQS's ({e}); check that [sqs] endpoint_url (or AWS_ENDPOINT_URL) points at SQS"
            ));
            return vec![Err(err); n];
        }
    };
    let mut out: Vec<Option<Result<(), SendError>>> = vec![None; n];
    for f in answer.failed.unwrap_or_default() {
        if let Some(i) = entry_index(&f.id, n) {
            out[i] = Some(Err(SendError::Rejected {
                code: f.code.unwrap_or_default(),
                message: f.message.unwrap_or_default(),
                sender_fault: f.sender_fault.unwrap_or(false),
            }));
        }
    }
    for s in answer.successful.unwrap_or_default() {
        if let Some(i) = entry_index(&s.id, n) {
            out[i] = Some(Ok(()));
        }
    }
    out.into_iter()
        .map(|r| {
            r.unwrap_or_else(|| Err(SendError::Request("SQS did not report this entry".into())))
        })
        .collect()
}

/// The position an `Id` names, if it is one this request sent (`0`..`n`
/// written as [`batch_body`] writes them).
fn entry_index(id: &str, n: usize) -> Option<usize> {
    let canonical = id.bytes().all(|b| b.is_ascii_digit()) && (id == "0" || !id.starts_with('0'));
    let i: usize = id.parse().ok().filter(|_| canonical)?;
    (i < n).then_some(i)
}

#[derive(Clone)]
struct Cached {
    credentials: Credentials,
    refresh_at: SystemTime,
    expires: Option<SystemTime>,
    /// When SQS refused these and the provider, asked again, gave the same
    /// ones: until [`REFRESH_RETRY`] later, a refusal does not ask again.
    refused_unchanged: Option<SystemTime>,
}

impl Cached {
    fn new(credentials: Credentials, now: SystemTime) -> Self {
        let expires = credentials.expiry();
        let refresh_at = match expires {
            None => now + NO_EXPIRY_TTL,
            Some(e) => {
                let life = e.duration_since(now).unwrap_or_default();
                e - REFRESH_BEFORE.min(life / 2)
            }
        };
        Cached {
            credentials,
            // Credentials handed out already expired (a provider whose own
            // source is stale) are asked for again after a pause, not at
            // every send.
            refresh_at: if refresh_at > now {
                refresh_at
            } else {
                now + REFRESH_RETRY
            },
            expires,
            refused_unchanged: None,
        }
    }
}

/// The SDK's credentials provider behind a cache: the provider (the
/// default chain) is asked again only when the credentials are near their
/// expiry, after 15 minutes for ones without one, or when SQS
/// refused them.
pub struct CredentialsCache {
    provider: SharedCredentialsProvider,
    /// A std mutex: held only to read or replace, never across an await.
    cached: Mutex<Option<Cached>>,
    /// One refresh at a time: the others wait for its result.
    refreshing: tokio::sync::Mutex<()>,
}

impl CredentialsCache {
    pub fn new(
        provider: SharedCredentialsProvider,
        first: Option<Credentials>,
        now: SystemTime,
    ) -> Self {
        CredentialsCache {
            provider,
            cached: Mutex::new(first.map(|c| Cached::new(c, now))),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    fn fresh(&self, now: SystemTime) -> Option<Credentials> {
        let cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        cached
            .as_ref()
            .filter(|c| now < c.refresh_at)
            .map(|c| c.credentials.clone())
    }

    pub async fn get(&self, now: SystemTime) -> Result<Credentials, String> {
        if let Some(c) = self.fresh(now) {
            return Ok(c);
        }
        let _one = self.refreshing.lock().await;
        if let Some(c) = self.fresh(now) {
            return Ok(c);
        }
        let loaded =
            match tokio::time::timeout(PROVIDER_TIMEOUT, self.provider.provide_credentials()).await
            {
                Ok(Ok(c)) => Ok(c),
                // Cut: a `credential_process` failing puts its whole
                // stderr in the provider's error, and this text is logged
                // and stored with each job the send fails.
                Ok(Err(e)) => Err(cut(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())),
                Err(_) => Err(format!(
                    "the credentials provider did not answer within {} s",
                    PROVIDER_TIMEOUT.as_secs()
                )),
            };
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        match loaded {
            Ok(c) => {
                *cached = Some(Cached::new(c.clone(), now));
                Ok(c)
            }
            Err(e) => match cached.as_mut() {
                Some(c) if c.expires.is_none_or(|x| now < x) => {
                    warn!(error = %e, "could not refresh AWS credentials; using the current ones until they expire");
                    c.refresh_at = now + REFRESH_RETRY;
                    Ok(c.credentials.clone())
                }
                _ => Err(e),
            },
        }
    }

    /// SQS refused `used`: the next [`get`](Self::get) asks the provider,
    /// unless it gave these same ones again after a refusal less than
    /// [`REFRESH_RETRY`] ago. Whether it will be asked.
    pub fn invalidate(&self, used: &Credentials, now: SystemTime) -> bool {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cached.as_mut()
            && same(&c.credentials, used)
            && c.refused_unchanged.is_none_or(|t| now >= t + REFRESH_RETRY)
        {
            c.refresh_at = SystemTime::UNIX_EPOCH;
            return true;
        }
        false
    }

    /// SQS refused `used` and the provider, asked because of it, gave them
    /// again: the next [`REFRESH_RETRY`] of refusals do not ask it, so a
    /// provider stuck on expired credentials is not asked at every send.
    /// Only after asking: noted at a refusal that did not ask, the hold-off
    /// would start over at each one, and refusals coming more often than
    /// that would keep the provider from being asked ever again.
    fn refused_unchanged(&self, used: &Credentials, now: SystemTime) {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cached.as_mut()
            && same(&c.credentials, used)
        {
            c.refused_unchanged = Some(now);
            c.refresh_at = c.refresh_at.max(now + REFRESH_RETRY);
        }
    }
}

fn same(a: &Credentials, b: &Credentials) -> bool {
    a.access_key_id() == b.access_key_id()
        && a.secret_access_key() == b.secret_access_key()
        && a.session_token() == b.session_token()
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// The client for `SendMessageBatch`.
pub struct BatchClient {
    http: Client<Https, Full<Bytes>>,
    endpoint: Endpoint,
    signer: Signer,
    credentials: CredentialsCache,
    policy: Policy,
    clock: Clock,
    /// Retry quota tokens left (see [`QUOTA_MAX`]).
    quota: Mutex<u32>,
}

impl BatchClient {
    pub fn new(
        endpoint: Endpoint,
        region: &str,
        credentials: CredentialsCache,
        policy: Policy,
        clock: Clock,
    ) -> Result<Self, String> {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(policy.connect_timeout));
        let provider = rustls::crypto::ring::default_provider();
        let no_roots = |provider| {
            rustls::ClientConfig::builder_with_provider(Arc::new(provider))
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                })
                .map(|c| hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(c))
                .map_err(|e| format!("TLS with ring: {e}"))
        };
        let tls = if endpoint.uri.scheme_str() != Some("https") {
            // An http:// endpoint (an emulator) never makes a TLS
            // connection: the system's CA certificates are not read.
            no_roots(provider)?
        } else {
            match hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_native_roots(provider.clone())
            {
                Ok(b) => b,
                Err(e) => {
                    // As the SDK's client: a warning, and the TLS
                    // handshakes then fail (retried, and logged per send).
                    warn!(error = %e, "no CA certificates found; HTTPS to SQS will fail until ca-certificates is installed");
                    no_roots(provider)?
                }
            }
        };
        let connector = tls.https_or_http().enable_http1().wrap_connector(tcp);
        let http = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Ok(BatchClient {
            http,
            endpoint,
            signer: Signer::new(region, "sqs"),
            credentials,
            policy,
            clock,
            quota: Mutex::new(QUOTA_MAX),
        })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// One `SendMessageBatch` with `body`, retried as the policy says;
    /// SQS's answer on success.
    pub async fn send(&self, body: Vec<u8>) -> Result<Bytes, CallError> {
        let body = Bytes::from(body);
        let payload_sha256 = sigv4::sha256(&body);
        match tokio::time::timeout(
            self.policy.operation_timeout,
            self.attempts(body, &payload_sha256),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(CallError::OperationTimeout),
        }
    }

    async fn attempts(&self, body: Bytes, payload_sha256: &[u8; 32]) -> Result<Bytes, CallError> {
        let mut taken = 0;
        let mut reauthenticated = false;
        let mut attempt = 1;
        loop {
            let credentials = self
                .credentials
                .get(self.clock.now().into())
                .await
                .map_err(CallError::Credentials)?;
            let outcome = tokio::time::timeout(
                self.policy.attempt_timeout,
                self.attempt(&credentials, body.clone(), payload_sha256),
            )
            .await
            .unwrap_or(Err(CallError::AttemptTimeout));
            let error = match outcome {
                Ok(answer) => {
                    self.give_back(taken);
                    return Ok(answer);
                }
                Err(e) => e,
            };
            if error.is_auth() && !reauthenticated {
                // Expired or revoked: once per call, with whatever the
                // provider has now, if that is something else.
                reauthenticated = true;
                let now = self.clock.now().into();
                let asks = self.credentials.invalidate(&credentials, now);
                match self.credentials.get(now).await {
                    Ok(fresh) if !same(&fresh, &credentials) => continue,
                    Ok(_) if asks => self.credentials.refused_unchanged(&credentials, now),
                    Ok(_) | Err(_) => {}
                }
            }
            let Some(cost) = error.retry_cost() else {
                return Err(error);
            };
            if attempt >= self.policy.attempts || !self.take(cost) {
                return Err(error);
            }
            taken += cost;
            tokio::time::sleep(self.backoff(attempt, payload_sha256)).await;
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        credentials: &Credentials,
        body: Bytes,
        payload_sha256: &[u8; 32],
    ) -> Result<Bytes, CallError> {
        let keys = Keys {
            access_key_id: credentials.access_key_id(),
            secret_access_key: credentials.secret_access_key(),
            session_token: credentials.session_token(),
        };
        let signature = self.signer.sign(
            keys,
            &sigv4::Request {
                host: &self.endpoint.host,
                path: &self.endpoint.path,
                headers: &SIGNED,
                payload_sha256,
            },
            self.clock.now(),
        );
        let mut request =
            hyper::Request::post(self.endpoint.uri.clone()).header(HOST, &self.endpoint.host);
        for (name, value) in SIGNED {
            request = request.header(name, value);
        }
        let mut request = request
            .header("x-amz-date", signature.amz_date)
            .header(AUTHORIZATION, signature.authorization)
            .header(hyper::header::USER_AGENT, USER_AGENT);
        if let Some(token) = keys.session_token {
            request = request.header("x-amz-security-token", token);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| CallError::Invalid(e.to_string()))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| CallError::Transport(error_chain(&e)))?;
        let (parts, body) = response.into_parts();
        let answer = Limited::new(body, MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| CallError::Transport(format!("reading the answer: {e}")))?
            .to_bytes();
        if parts.status.is_success() {
            Ok(answer)
        } else {
            let mut error = service_error(parts.status.as_u16(), &parts.headers, &answer);
            if let CallError::Service { message, .. } = &mut error {
                *message = redacted(message, &keys);
            }
            Err(error)
        }
    }

    /// Before retry `attempt` (1-based): up to `initial * 2^(attempt-1)`,
    /// capped, times a fraction taken from the payload's hash, which
    /// differs between batches as a random jitter would, without an RNG.
    fn backoff(&self, attempt: u32, payload_sha256: &[u8; 32]) -> Duration {
        let ceiling = self
            .policy
            .initial_backoff
            .saturating_mul(1 << (attempt - 1).min(16))
            .min(self.policy.max_backoff);
        let fraction = f64::from(payload_sha256[attempt as usize % 32]) / 256.0;
        ceiling.mul_f64(fraction)
    }

    fn take(&self, cost: u32) -> bool {
        let mut quota = self.quota.lock().unwrap_or_else(|p| p.into_inner());
        if *quota < cost {
            return false;
        }
        *quota -= cost;
        true
    }

    fn give_back(&self, taken: u32) {
        let mut quota = self.quota.lock().unwrap_or_else(|p| p.into_inner());
        *quota = (*quota + taken.max(1)).min(QUOTA_MAX);
    }
}

/// An error and its causes, `a: b: c` (hyper's own text is terse:
/// "client error (Connect)").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests;
