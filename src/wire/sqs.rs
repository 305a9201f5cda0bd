//! Sending task messages to SQS (aws-sdk-sqs).
//!
//! Queue URLs come from the config's predefined map (keyed by SQS name, as
//! kombu's `predefined_queues`), else `GetQueueUrl`, cached. A missing
//! queue is an error naming it, unless `create_missing_queues` is set.
//! Messages go out with `SendMessageBatch` (10 per call, 1 MiB per call),
//! batches in parallel, and every message gets its own outcome: a message
//! counts as sent only when SQS listed it as successful.
//!
//! `SendMessageBatch`, once per fire, goes out through [`send`]: the same
//! request the SDK would make, signed and sent without the SDK's request
//! pipeline, which cost more CPU than everything else a fire does. Every
//! other call (`GetQueueUrl`, `CreateQueue`, and the intake's) uses the SDK.
//!
//! Transient failures (throttling, 5xx, timeouts) are retried inside the
//! client with exponential backoff and jitter; what still fails is returned
//! to the caller, which schedules its own retry.
//!
//! The same client is the intake's [`Source`]: `ReceiveMessage` (a long
//! poll, given its own longer timeouts) and `DeleteMessageBatch`, on the
//! intake queue only. That queue is never created here: it needs a redrive
//! policy, which only its owner can choose.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::config::SqsConfig;
use crate::wire::queue::QueueName;
use crate::wire::sink::{Outgoing, SendError, Sink};
use crate::wire::source::{Poll, Received, Source};

pub mod send;

/// Most entries in one `SendMessageBatch`.
pub const BATCH_MAX: usize = 10;
/// Most bytes of bodies in one `SendMessageBatch` (SQS counts the total).
const BATCH_MAX_BYTES: usize = 1_048_576;
/// Batches in flight at once.
const PARALLEL_BATCHES: usize = 16;
/// Visibility timeout of queues sqsbeat creates: kombu's default.
const CREATED_VISIBILITY_TIMEOUT: &str = "1800";

/// Why the SQS client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "no AWS credentials found ({0}); set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, a container or instance role, or web identity (for a local emulator any dummy keys will do)"
    )]
    Credentials(String),
    #[error("no AWS region configured; set [sqs] region, SQSBEAT_SQS_REGION or AWS_REGION")]
    Region,
    #[error(
        "cannot resolve the SQS endpoint for region {region:?} ({error}); check [sqs] region and [sqs] endpoint_url (or AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_SQS)"
    )]
    Endpoint { region: String, error: String },
    #[error("cannot set up HTTPS for SQS: {0}")]
    Tls(String),
}

/// SQS through the AWS SDK, and [`send`] for `SendMessageBatch`.
#[derive(Clone)]
pub struct SqsSink {
    client: Client,
    /// `SendMessageBatch` (see [`send`]).
    batch: Arc<send::BatchClient>,
    config: Arc<SqsConfig>,
    /// SQS name → URL. A std mutex: never held across an await.
    urls: Arc<Mutex<HashMap<String, String>>>,
}

impl SqsSink {
    /// Builds the client from the standard AWS chain plus the config's
    /// overrides, and checks credentials once so a misconfiguration fails
    /// at start-up rather than at the first fire.
    pub async fn connect(config: SqsConfig) -> Result<Self, SetupError> {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        // Pinned, not `latest()`: behaviour must not change with an SDK bump.
        let mut loader = aws_config::defaults(BehaviorVersion::v2025_08_07())
            .http_client(http)
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(10))
                    .operation_timeout(Duration::from_secs(30))
                    .build(),
            );
        if let Some(region) = &config.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let shared = loader.load().await;
        let Some(region) = shared.region().map(|r| r.to_string()) else {
            return Err(SetupError::Region);
        };
        let Some(provider) = shared.credentials_provider() else {
            return Err(SetupError::Credentials("no provider".into()));
        };
        let first = {
            use aws_credential_types::provider::ProvideCredentials;
            provider
                .provide_credentials()
                .await
                .map_err(|e| SetupError::Credentials(DisplayErrorContext(e).to_string()))?
        };
        let endpoint = send::Endpoint::resolve(&shared, &region)
            .await
            .map_err(|error| SetupError::Endpoint {
                region: region.clone(),
                error,
            })?;
        let clock = Clock::System;
        let credentials = send::CredentialsCache::new(provider, Some(first), clock.now().into());
        let batch = send::BatchClient::new(
            endpoint,
            &region,
            credentials,
            send::Policy::STANDARD,
            clock,
        )
        .map_err(SetupError::Tls)?;
        let urls = config.queues.clone().into_iter().collect();
        Ok(SqsSink {
            client: Client::new(&shared),
            batch: Arc::new(batch),
            config: Arc::new(config),
            urls: Arc::new(Mutex::new(urls)),
        })
    }

    /// The URL of a queue, resolving and caching it on first use (and
    /// creating the queue if it is missing and `create_missing_queues` is on).
    pub async fn queue_url(&self, q: &QueueName) -> Result<String, SendError> {
        self.resolve(q, self.config.create_missing_queues).await
    }

    async fn resolve(&self, q: &QueueName, create: bool) -> Result<String, SendError> {
        if let Some(u) = self.urls.lock().ok().and_then(|m| m.get(&q.sqs).cloned()) {
            return Ok(u);
        }
        let started = std::time::Instant::now();
        let got = self.client.get_queue_url().queue_name(&q.sqs).send().await;
        observe(
            "GetQueueUrl",
            started,
            got.as_ref()
                .err()
                .map(|e| e.code().unwrap_or("transport").to_string()),
        );
        let url = match got {
            Ok(out) => out.queue_url.unwrap_or_default(),
            Err(e) if is_queue_missing(&e) => {
                if !create {
                    return Err(SendError::QueueMissing {
                        logical: q.logical.clone(),
                        sqs: q.sqs.clone(),
                    });
                }
                let mut req = self.client.create_queue().queue_name(&q.sqs).attributes(
                    QueueAttributeName::VisibilityTimeout,
                    CREATED_VISIBILITY_TIMEOUT,
                );
                if q.fifo {
                    req = req.attributes(QueueAttributeName::FifoQueue, "true");
                }
                let out = req.send().await.map_err(request_error)?;
                info!(queue = %q.logical, sqs_name = %q.sqs, "created missing queue");
                out.queue_url.unwrap_or_default()
            }
            Err(e) => return Err(request_error(e)),
        };
        if let Ok(mut m) = self.urls.lock() {
            m.insert(q.sqs.clone(), url.clone());
        }
        Ok(url)
    }
}

impl Sink for SqsSink {
    async fn send_all(&self, messages: Vec<Outgoing>) -> Vec<Result<(), SendError>> {
        let mut results: Vec<Option<Result<(), SendError>>> = vec![None; messages.len()];
        // Group by queue, keeping each message's index.
        type Key = (QueueName, Option<String>);
        let mut by_queue: HashMap<Key, Vec<(usize, Outgoing)>> = HashMap::new();
        for (i, m) in messages.into_iter().enumerate() {
            by_queue
                .entry((m.queue.clone(), m.queue_url.clone()))
                .or_default()
                .push((i, m));
        }
        let mut batches = Vec::new();
        for ((queue, given), items) in by_queue {
            let url = match given {
                Some(u) => Ok(u),
                None => self.queue_url(&queue).await,
            };
            let url = match url {
                Ok(u) => u,
                Err(e) => {
                    warn!(queue = %queue.logical, sqs_name = %queue.sqs, error = %e, "queue unavailable");
                    for (i, _) in items {
                        results[i] = Some(Err(e.clone()));
                    }
                    continue;
                }
            };
            let mut batch: Vec<(usize, Outgoing)> = Vec::new();
            let mut bytes = 0;
            for item in items {
                let len = item.1.body.len()
                    + item
                        .1
                        .attributes
                        .iter()
                        .map(|(n, a)| a.size(n))
                        .sum::<usize>();
                if batch.len() == BATCH_MAX || (bytes + len > BATCH_MAX_BYTES && !batch.is_empty())
                {
                    batches.push((url.clone(), queue.fifo, std::mem::take(&mut batch)));
                    bytes = 0;
                }
                bytes += len;
                batch.push(item);
            }
            if !batch.is_empty() {
                batches.push((url, queue.fifo, batch));
            }
        }
        let mut set = JoinSet::new();
        let mut pending = batches.into_iter();
        loop {
            while set.len() < PARALLEL_BATCHES {
                let Some((url, fifo, batch)) = pending.next() else {
                    break;
                };
                let client = self.batch.clone();
                set.spawn(async move { send_batch(&client, &url, fifo, batch).await });
            }
            let Some(joined) = set.join_next().await else {
                break;
            };
            match joined {
                Ok(outcomes) => {
                    for (i, r) in outcomes {
                        results[i] = Some(r);
                    }
                }
                // A panicked send task loses no fire: its messages stay
                // without an outcome and are reported as failed below.
                Err(e) => warn!(error = %e, "send task failed"),
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(SendError::Request("send task did not finish".into())))
            })
            .collect()
    }
}

async fn send_batch(
    client: &send::BatchClient,
    url: &str,
    fifo: bool,
    batch: Vec<(usize, Outgoing)>,
) -> Vec<(usize, Result<(), SendError>)> {
    // Named in errors; every message of a batch has the same queue.
    let queue = batch
        .first()
        .map(|(_, m)| m.queue.sqs.clone())
        .unwrap_or_default();
    let body = send::batch_body(url, fifo, &batch);
    let started = std::time::Instant::now();
    let sent = client.send(body).await;
    observe(
        "SendMessageBatch",
        started,
        sent.as_ref().err().map(|e| e.metric_code().to_string()),
    );
    let outcomes = match sent {
        Err(e) => {
            let err = e.into_send_error(&queue, client.policy());
            vec![Err(err); batch.len()]
        }
        Ok(answer) => {
            debug!(
                entries = batch.len(),
                ms = started.elapsed().as_millis() as u64,
                "SendMessageBatch"
            );
            send::outcomes(&answer, batch.len(), &queue)
        }
    };
    batch
        .into_iter()
        .zip(outcomes)
        .map(|((i, _), r)| (i, r))
        .collect()
}

/// A long poll takes up to its wait before SQS answers: the client's
/// per-attempt timeout (10 s) would cut it off.
fn long_poll_timeouts(wait: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(wait + Duration::from_secs(10))
        .operation_timeout(wait + Duration::from_secs(30))
        .build()
}

impl Source for SqsSink {
    async fn receive(&self, queue: &QueueName, poll: &Poll) -> Result<Vec<Received>, SendError> {
        // Never created here: see the module doc.
        let url = self.resolve(queue, false).await?;
        let started = std::time::Instant::now();
        let got = self
            .client
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(poll.max_messages.clamp(1, 10))
            .wait_time_seconds(poll.wait.as_secs().min(20) as i32)
            .visibility_timeout(poll.visibility.as_secs().min(43_200) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .customize()
            .config_override(
                aws_sdk_sqs::config::Builder::default()
                    .timeout_config(long_poll_timeouts(poll.wait)),
            )
            .send()
            .await;
        observe(
            "ReceiveMessage",
            started,
            got.as_ref()
                .err()
                .map(|e| e.code().unwrap_or("transport").to_string()),
        );
        let out = match got {
            Ok(out) => out,
            Err(e) if is_queue_missing(&e) => {
                // Deleted since its URL was cached: look it up again next time.
                if let Ok(mut m) = self.urls.lock() {
                    m.remove(&queue.sqs);
                }
                return Err(SendError::QueueMissing {
                    logical: queue.logical.clone(),
                    sqs: queue.sqs.clone(),
                });
            }
            Err(e) => return Err(request_error(e)),
        };
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let count = m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                let id = m.message_id.unwrap_or_default();
                match (m.receipt_handle, m.body) {
                    (Some(receipt_handle), Some(body)) => Some(Received {
                        message_id: id,
                        receipt_handle,
                        body,
                        receive_count: count,
                    }),
                    // Not deletable without a handle: it comes back after
                    // its visibility timeout.
                    _ => {
                        warn!(message_id = %id, queue = %queue.sqs, "SQS returned a message without a body or receipt handle; it will be received again");
                        None
                    }
                }
            })
            .collect())
    }

    async fn delete(&self, queue: &QueueName, handles: Vec<String>) -> Vec<Result<(), SendError>> {
        let url = match self.resolve(queue, false).await {
            Ok(u) => u,
            Err(e) => return handles.iter().map(|_| Err(e.clone())).collect(),
        };
        let mut results = Vec::with_capacity(handles.len());
        for chunk in handles.chunks(BATCH_MAX) {
            results.extend(delete_batch(&self.client, &url, chunk).await);
        }
        results
    }
}

async fn delete_batch(
    client: &Client,
    url: &str,
    handles: &[String],
) -> Vec<Result<(), SendError>> {
    let mut req = client.delete_message_batch().queue_url(url);
    for (n, h) in handles.iter().enumerate() {
        match DeleteMessageBatchRequestEntry::builder()
            .id(n.to_string())
            .receipt_handle(h)
            .build()
        {
            Ok(e) => req = req.entries(e),
            Err(e) => warn!(error = %e, "could not build delete entry"),
        }
    }
    let started = std::time::Instant::now();
    let sent = req.send().await;
    observe(
        "DeleteMessageBatch",
        started,
        sent.as_ref()
            .err()
            .map(|e| e.code().unwrap_or("transport").to_string()),
    );
    let out = match sent {
        Ok(out) => out,
        Err(e) => {
            let err = request_error(e);
            return handles.iter().map(|_| Err(err.clone())).collect();
        }
    };
    let ok: std::collections::HashSet<String> =
        out.successful.iter().map(|s| s.id.clone()).collect();
    let failed: HashMap<String, SendError> = out
        .failed
        .iter()
        .map(|f| {
            (
                f.id.clone(),
                SendError::Rejected {
                    code: f.code.clone(),
                    message: f.message.clone().unwrap_or_default(),
                    sender_fault: f.sender_fault,
                },
            )
        })
        .collect();
    (0..handles.len())
        .map(|n| {
            let id = n.to_string();
            if ok.contains(&id) {
                Ok(())
            } else {
                Err(failed
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| SendError::Request("SQS did not report this entry".into())))
            }
        })
        .collect()
}

/// Records one SQS request's latency, and its error code if it failed.
fn observe(operation: &str, started: std::time::Instant, error: Option<String>) {
    let m = crate::runtime::metrics::get();
    m.sqs_request_seconds
        .get_or_create(&crate::runtime::metrics::Operation {
            operation: operation.to_string(),
        })
        .observe(started.elapsed().as_secs_f64());
    if let Some(code) = error {
        m.sqs_errors
            .get_or_create(&crate::runtime::metrics::OperationCode {
                operation: operation.to_string(),
                code,
            })
            .inc();
    }
}

fn is_queue_missing<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error()
        .and_then(|s| s.code())
        .is_some_and(|c| c.contains("NonExistentQueue") || c.contains("QueueDoesNotExist"))
}

fn request_error<E, R>(e: SdkError<E, R>) -> SendError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if let Some(code) = e.as_service_error().and_then(|s| s.code()) {
        return SendError::Rejected {
            code: code.to_string(),
            // The SDK's calls (GetQueueUrl, ReceiveMessage,
            // DeleteMessageBatch) are refused with the same quote of the
            // canonical request as SendMessageBatch.
            message: send::without_signing_quote(
                e.as_service_error()
                    .and_then(|s| s.message())
                    .unwrap_or_default(),
            ),
            sender_fault: !code.contains("InternalError")
                && !code.contains("ServiceUnavailable")
                && !code.contains("Throttl"),
        };
    }
    SendError::Request(send::without_signing_quote(
        &DisplayErrorContext(e).to_string(),
    ))
}

#[cfg(test)]
mod request_error_tests {
    use super::*;
    use aws_sdk_sqs::operation::get_queue_url::GetQueueUrlError;

    fn refused(
        code: Option<&str>,
    ) -> SdkError<GetQueueUrlError, aws_sdk_sqs::config::http::HttpResponse> {
        let mut meta = aws_sdk_sqs::error::ErrorMetadata::builder().message(
            "The request signature we calculated does not match the signature you provided.\n\n\
             The Canonical String for this request should have been\n'POST\n/\n\n\
             x-amz-security-token:the-session-token\n'",
        );
        if let Some(code) = code {
            meta = meta.code(code);
        }
        SdkError::service_error(
            GetQueueUrlError::generic(meta.build()),
            aws_sdk_sqs::config::http::HttpResponse::new(
                403.try_into().unwrap(),
                aws_smithy_types::body::SdkBody::empty(),
            ),
        )
    }

    /// SQS refuses a signature it calculated otherwise by quoting the
    /// canonical request, the session token among its headers: the SDK's
    /// calls put that quote in the error that is logged (GetQueueUrl at
    /// start, ReceiveMessage and DeleteMessageBatch in the intake).
    #[test]
    fn a_refused_signature_on_an_sdk_call_never_puts_the_session_token_in_the_error() {
        let SendError::Rejected { code, message, .. } =
            request_error(refused(Some("SignatureDoesNotMatch")))
        else {
            panic!("not rejected");
        };
        assert_eq!(code, "SignatureDoesNotMatch");
        assert!(message.starts_with("The request signature we calculated"));
        assert!(!message.contains("the-session-token"), "{message}");
        let SendError::Request(text) = request_error(refused(None)) else {
            panic!("not a request error");
        };
        assert!(!text.contains("the-session-token"), "{text}");
    }
}
