use super::*;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_credential_types::provider::future;
use chrono::{DateTime, Utc};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::wire::intake::MessageAttribute;
use crate::wire::queue::QueueName;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn message(n: u8, queue: &str) -> Outgoing {
    Outgoing {
        task_id: Uuid::from_bytes([n; 16]),
        queue: QueueName::new("", queue),
        queue_url: None,
        body: format!("eyJib2R5IjogIm17bn0ifQ=={n}"),
        group_id: None,
        dedup_id: None,
        delay_seconds: 0,
        attributes: Vec::new(),
    }
}

/// A standard-queue batch using every field a standard queue takes.
fn standard_batch() -> Vec<(usize, Outgoing)> {
    let plain = message(1, "celery");
    let mut delayed = message(2, "celery");
    delayed.delay_seconds = 1200;
    delayed.body = "{\"raw\": \"json \\\\ body\"}\n\t\u{1}é".into();
    let mut attributed = message(3, "celery");
    attributed.group_id = Some("tenant-7".into());
    attributed.attributes = vec![(
        "trace".into(),
        MessageAttribute {
            data_type: "String".into(),
            value: AttributeValue::String("a\"b".into()),
        },
    )];
    let mut binary = message(4, "celery");
    binary.delay_seconds = -5;
    binary.attributes = vec![(
        "blob".into(),
        MessageAttribute {
            data_type: "Binary.gz".into(),
            value: AttributeValue::Binary(vec![0, 1, 2, 250]),
        },
    )];
    vec![(7, plain), (3, delayed), (0, attributed), (9, binary)]
}

fn fifo_batch() -> Vec<(usize, Outgoing)> {
    let mut m = message(5, "jobs.fifo");
    m.group_id = Some("sqsbeat".into());
    m.dedup_id = Some("0505-task".into());
    // Ignored on FIFO queues: they take no per-message delay.
    m.delay_seconds = 30;
    let mut n = message(6, "jobs.fifo");
    n.group_id = Some("sqsbeat".into());
    n.dedup_id = Some("0606-task".into());
    vec![(0, m), (1, n)]
}

const URL: &str = "https://sqs.eu-west-1.amazonaws.com/123456789012/celery";

#[test]
fn the_body_is_the_sdks_byte_for_byte() {
    let got = String::from_utf8(batch_body(URL, false, &standard_batch())).unwrap();
    let want = concat!(
        r#"{"QueueUrl":"https://sqs.eu-west-1.amazonaws.com/123456789012/celery","Entries":["#,
        r#"{"Id":"0","MessageBody":"eyJib2R5IjogIm17bn0ifQ==1"},"#,
        r#"{"Id":"1","MessageBody":"{\"raw\": \"json \\\\ body\"}\n\t\u0001é","DelaySeconds":900},"#,
        r#"{"Id":"2","MessageBody":"eyJib2R5IjogIm17bn0ifQ==3","MessageAttributes":{"trace":{"StringValue":"a\"b","DataType":"String"}},"MessageGroupId":"tenant-7"},"#,
        r#"{"Id":"3","MessageBody":"eyJib2R5IjogIm17bn0ifQ==4","MessageAttributes":{"blob":{"BinaryValue":"AAEC+g==","DataType":"Binary.gz"}}}"#,
        r#"]}"#
    );
    assert_eq!(got, want);

    let got = String::from_utf8(batch_body(URL, true, &fifo_batch())).unwrap();
    let want = concat!(
        r#"{"QueueUrl":"https://sqs.eu-west-1.amazonaws.com/123456789012/celery","Entries":["#,
        r#"{"Id":"0","MessageBody":"eyJib2R5IjogIm17bn0ifQ==5","MessageDeduplicationId":"0505-task","MessageGroupId":"sqsbeat"},"#,
        r#"{"Id":"1","MessageBody":"eyJib2R5IjogIm17bn0ifQ==6","MessageDeduplicationId":"0606-task","MessageGroupId":"sqsbeat"}"#,
        r#"]}"#
    );
    assert_eq!(got, want);
}

#[test]
fn every_control_character_is_escaped_as_json_requires() {
    let s: String = (0u8..0x20)
        .map(char::from)
        .chain("\"\\/é".chars())
        .collect();
    let mut out = Vec::new();
    json_string(&mut out, &s);
    let back: String = serde_json::from_slice(&out).unwrap();
    assert_eq!(back, s);
    // serde_json escapes the same characters the same way as the SDK.
    assert_eq!(out, serde_json::to_vec(&s).unwrap());
}

// --- a local endpoint ---------------------------------------------------

#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
    body: String,
}

fn reply(status: u16, headers: &[(&'static str, &'static str)], body: &str) -> Reply {
    Reply {
        status,
        headers: headers.to_vec(),
        body: body.to_string(),
    }
}

struct Recorded {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone, Default)]
struct Endpoint0 {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl Endpoint0 {
    fn requests(&self) -> std::sync::MutexGuard<'_, Vec<Recorded>> {
        self.requests.lock().unwrap()
    }
}

/// Answers with the queued replies in order, then accepts every entry.
async fn endpoint(replies: Vec<Reply>) -> (Endpoint0, String) {
    let state = Endpoint0 {
        replies: Arc::new(Mutex::new(replies.into())),
        ..Endpoint0::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = state.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = served.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(answer(&state, req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (state, url)
}

async fn answer(state: &Endpoint0, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let headers = req.headers().clone();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let planned = state.replies.lock().unwrap().pop_front();
    let entries: Vec<Value> = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["Entries"].as_array().cloned())
        .unwrap_or_default();
    state.requests.lock().unwrap().push(Recorded {
        path,
        headers,
        body,
    });
    let r = planned.unwrap_or_else(|| {
        let ok: Vec<Value> = entries
            .iter()
            .map(|e| json!({"Id": e["Id"], "MessageId": "m", "MD5OfMessageBody": "0"}))
            .collect();
        reply(
            200,
            &[],
            &json!({"Successful": ok, "Failed": []}).to_string(),
        )
    });
    let mut response = Response::new(Full::new(Bytes::from(r.body)));
    *response.status_mut() = hyper::StatusCode::from_u16(r.status).unwrap();
    for (k, v) in r.headers {
        response.headers_mut().insert(k, v.parse().unwrap());
    }
    response
}

/// Gives out these credentials in turn, the last one from then on.
#[derive(Debug)]
struct Rotating {
    calls: AtomicUsize,
    given: Vec<Credentials>,
}

impl ProvideCredentials for Rotating {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let i = self.calls.fetch_add(1, Ordering::SeqCst);
        future::ProvideCredentials::ready(Ok(self.given[i.min(self.given.len() - 1)].clone()))
    }
}

fn creds(key: &str, token: Option<&str>, expiry: Option<DateTime<Utc>>) -> Credentials {
    Credentials::new(
        key,
        format!("secret-of-{key}"),
        token.map(str::to_string),
        expiry.map(SystemTime::from),
        "test",
    )
}

const NOW: &str = "2026-11-28T10:00:00Z";

fn client(url: &str, provider: Arc<Rotating>, clock: Clock) -> BatchClient {
    let policy = Policy {
        // No waiting between attempts in tests.
        initial_backoff: Duration::ZERO,
        ..Policy::STANDARD
    };
    let cache = CredentialsCache::new(
        SharedCredentialsProvider::new(ArcProvider(provider)),
        None,
        clock.now().into(),
    );
    BatchClient::new(
        Endpoint::parse(url).unwrap(),
        "eu-west-1",
        cache,
        policy,
        clock,
    )
    .unwrap()
}

#[derive(Debug)]
struct ArcProvider(Arc<Rotating>);

impl ProvideCredentials for ArcProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        self.0.provide_credentials()
    }
}

fn rotating(given: Vec<Credentials>) -> Arc<Rotating> {
    Arc::new(Rotating {
        calls: AtomicUsize::new(0),
        given,
    })
}

fn header<'a>(r: &'a Recorded, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The `Authorization` the aws-sigv4 crate computes for what `r` carried.
fn sdk_signature(r: &Recorded, c: &Credentials) -> String {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    use aws_sigv4::sign::v4::SigningParams;
    let time = DateTime::parse_from_str(
        &format!("{} +0000", header(r, "x-amz-date")),
        "%Y%m%dT%H%M%SZ %z",
    )
    .unwrap()
    .to_utc();
    let identity = c.clone().into();
    let params = SigningParams::builder()
        .identity(&identity)
        .region("eu-west-1")
        .name("sqs")
        .time(time.into())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let url = format!("http://{}{}", header(r, "host"), r.path);
    let headers =
        ["host", "content-type", "x-amz-target", "x-amzn-query-mode"].map(|h| (h, header(r, h)));
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.into_iter(),
        SignableBody::Bytes(&r.body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let (headers, _) = instructions.into_parts();
    headers
        .into_iter()
        .find(|h| h.name() == "authorization")
        .unwrap()
        .value()
        .to_string()
}

#[tokio::test]
async fn a_batch_goes_out_signed_as_the_sdk_signs_and_each_entry_gets_its_outcome() {
    let answer = json!({
        "Successful": [{"Id": "0", "MessageId": "a", "MD5OfMessageBody": "0"}],
        "Failed": [{"Id": "1", "SenderFault": true, "Code": "InvalidParameterValue", "Message": "One or more parameters are invalid."}]
    });
    let (ep, url) = endpoint(vec![reply(200, &[], &answer.to_string())]).await;
    let c = creds("ASIAONE", Some("session/token+1=="), None);
    let provider = rotating(vec![c.clone()]);
    let client = client(&format!("{url}/prefix"), provider, Clock::manual(at(NOW)));
    let batch = standard_batch();
    let body = batch_body(URL, false, &batch);
    let answer = client.send(body.clone()).await.unwrap();
    let results = outcomes(&answer, batch.len(), "celery");
    assert_eq!(results[0], Ok(()));
    assert!(
        matches!(&results[1], Err(e) if e.needs_a_fix()),
        "{results:?}"
    );
    // SQS said nothing of these: not sent.
    assert!(matches!(&results[2], Err(SendError::Request(_))));
    assert!(results[3].is_err());

    let requests = ep.requests();
    let r = &requests[0];
    assert_eq!(r.path, "/prefix/");
    assert_eq!(r.body, body);
    assert_eq!(header(r, "x-amz-target"), "AmazonSQS.SendMessageBatch");
    assert_eq!(header(r, "content-type"), "application/x-amz-json-1.0");
    assert_eq!(header(r, "x-amzn-query-mode"), "true");
    assert_eq!(header(r, "x-amz-date"), "20261128T100000Z");
    assert_eq!(header(r, "x-amz-security-token"), "session/token+1==");
    assert_eq!(header(r, "authorization"), sdk_signature(r, &c));
}

/// The SDK's own request for the same messages, as the SDK path built it.
async fn sdk_body(queue_url: &str, fifo: bool, batch: &[(usize, Outgoing)]) -> Value {
    use aws_sdk_sqs::primitives::Blob;
    use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
    let (ep, endpoint_url) = endpoint(Vec::new()).await;
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::v2025_08_07())
        .region(aws_sdk_sqs::config::Region::new("eu-west-1"))
        .endpoint_url(&endpoint_url)
        .credentials_provider(creds("AKIDSDK", None, None))
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    let client = aws_sdk_sqs::Client::from_conf(config);
    let mut req = client.send_message_batch().queue_url(queue_url);
    for (n, (_, m)) in batch.iter().enumerate() {
        let mut entry = SendMessageBatchRequestEntry::builder()
            .id(n.to_string())
            .message_body(&m.body)
            .set_message_group_id(m.group_id.clone());
        if fifo {
            entry = entry.set_message_deduplication_id(m.dedup_id.clone());
        } else if m.delay_seconds > 0 {
            entry = entry.delay_seconds(m.delay_seconds.min(900));
        }
        for (name, a) in &m.attributes {
            let v = MessageAttributeValue::builder().data_type(&a.data_type);
            let v = match &a.value {
                AttributeValue::String(s) => v.string_value(s),
                AttributeValue::Binary(b) => v.binary_value(Blob::new(b.clone())),
            };
            entry = entry.message_attributes(name, v.build().unwrap());
        }
        req = req.entries(entry.build().unwrap());
    }
    req.send().await.unwrap();
    let requests = ep.requests();
    serde_json::from_slice(&requests[0].body).unwrap()
}

#[tokio::test]
async fn the_body_says_what_the_sdks_says_for_the_same_messages() {
    for (fifo, batch) in [(false, standard_batch()), (true, fifo_batch())] {
        let ours: Value = serde_json::from_slice(&batch_body(URL, fifo, &batch)).unwrap();
        assert_eq!(ours, sdk_body(URL, fifo, &batch).await, "fifo: {fifo}");
    }
}

#[tokio::test]
async fn transient_failures_are_retried_within_the_call() {
    let (ep, url) = endpoint(vec![
        reply(
            500,
            &[("x-amzn-query-error", "InternalError;Receiver")],
            r#"{"__type":"com.amazonaws.sqs#InternalError","message":"We encountered an internal error. Please try again."}"#,
        ),
        reply(
            400,
            &[],
            r#"{"__type": "ThrottlingException", "message": "Rate exceeded (injected)"}"#,
        ),
    ])
    .await;
    let provider = rotating(vec![creds("AKIDONE", None, None)]);
    let client = client(&url, provider, Clock::manual(at(NOW)));
    let batch = fifo_batch();
    let answer = client.send(batch_body(URL, true, &batch)).await.unwrap();
    assert_eq!(outcomes(&answer, 2, "jobs.fifo"), vec![Ok(()), Ok(())]);
    assert_eq!(ep.requests().len(), 3);
}

#[tokio::test]
async fn a_transient_failure_ends_after_three_attempts_and_is_not_one_that_needs_a_fix() {
    let unavailable = reply(
        503,
        &[],
        r#"{"__type":"com.amazon.coral.availability#ServiceUnavailableException","message":"Service Unavailable"}"#,
    );
    let (ep, url) = endpoint(vec![unavailable.clone(); 4]).await;
    let client = client(
        &url,
        rotating(vec![creds("AKIDONE", None, None)]),
        Clock::manual(at(NOW)),
    );
    let err = client.send(batch_body(URL, false, &standard_batch())).await;
    assert_eq!(ep.requests().len(), 3);
    let err = err.unwrap_err();
    assert_eq!(err.metric_code(), "ServiceUnavailableException");
    let err = err.into_send_error("celery", &Policy::STANDARD);
    assert!(!err.needs_a_fix(), "{err:?}");
}

#[tokio::test]
async fn a_missing_queue_is_not_retried_and_needs_a_fix() {
    let (ep, url) = endpoint(vec![reply(
        400,
        &[
            ("x-amzn-query-error", "AWS.SimpleQueueService.NonExistentQueue;Sender"),
            ("x-amzn-errortype", "com.amazonaws.sqs#QueueDoesNotExist"),
        ],
        r#"{"__type": "com.amazonaws.sqs#QueueDoesNotExist", "message": "The specified queue does not exist.", "Message": "The specified queue does not exist."}"#,
    )])
    .await;
    let client = client(
        &url,
        rotating(vec![creds("AKIDONE", None, None)]),
        Clock::manual(at(NOW)),
    );
    let err = client
        .send(batch_body(URL, false, &standard_batch()))
        .await
        .unwrap_err();
    assert_eq!(ep.requests().len(), 1);
    assert_eq!(
        err.clone().into_send_error("celery", &Policy::STANDARD),
        SendError::Rejected {
            code: "AWS.SimpleQueueService.NonExistentQueue".into(),
            message: "The specified queue does not exist.".into(),
            sender_fault: true,
        }
    );
}

#[tokio::test]
async fn expired_credentials_are_replaced_and_the_request_sent_again() {
    let (ep, url) = endpoint(vec![reply(
        400,
        &[("x-amzn-query-error", "ExpiredToken;Sender")],
        r#"{"__type":"com.amazon.coral.service#ExpiredTokenException","message":"The security token included in the request is expired"}"#,
    )])
    .await;
    let old = creds(
        "ASIAOLD",
        Some("old-token"),
        Some(at("2026-11-28T16:00:00Z")),
    );
    let new = creds(
        "ASIANEW",
        Some("new-token"),
        Some(at("2026-11-28T22:00:00Z")),
    );
    let provider = rotating(vec![old.clone(), new.clone()]);
    let client = client(&url, provider.clone(), Clock::manual(at(NOW)));
    let answer = client
        .send(batch_body(URL, false, &standard_batch()))
        .await
        .unwrap();
    assert!(outcomes(&answer, 4, "celery").iter().all(Result::is_ok));
    let requests = ep.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(header(&requests[0], "x-amz-security-token"), "old-token");
    assert_eq!(header(&requests[1], "x-amz-security-token"), "new-token");
    assert_eq!(
        header(&requests[1], "authorization"),
        sdk_signature(&requests[1], &new)
    );
    assert_eq!(provider.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn credentials_are_cached_and_refreshed_before_they_expire() {
    let (ep, url) = endpoint(Vec::new()).await;
    let first = creds("ASIAFIRST", Some("t1"), Some(at("2026-11-28T11:00:00Z")));
    let second = creds("ASIASECOND", Some("t2"), Some(at("2026-11-28T12:00:00Z")));
    let provider = rotating(vec![first, second]);
    let clock = Clock::manual(at(NOW));
    let client = client(&url, provider.clone(), clock.clone());
    let body = batch_body(URL, false, &standard_batch());
    for _ in 0..3 {
        client.send(body.clone()).await.unwrap();
    }
    assert_eq!(provider.calls.load(Ordering::SeqCst), 1);
    // Five minutes before the first ones expire: the next call refreshes.
    clock.set(at("2026-11-28T10:55:00Z"));
    client.send(body.clone()).await.unwrap();
    clock.set(at("2026-11-28T10:56:00Z"));
    client.send(body.clone()).await.unwrap();
    assert_eq!(provider.calls.load(Ordering::SeqCst), 2);
    let tokens: Vec<String> = ep
        .requests()
        .iter()
        .map(|r| header(r, "x-amz-security-token").to_string())
        .collect();
    assert_eq!(tokens, ["t1", "t1", "t1", "t2", "t2"]);
}

#[tokio::test]
async fn credentials_without_expiry_are_read_again_every_fifteen_minutes() {
    let (_ep, url) = endpoint(Vec::new()).await;
    let provider = rotating(vec![creds("AKIDSTATIC", None, None)]);
    let clock = Clock::manual(at(NOW));
    let client = client(&url, provider.clone(), clock.clone());
    let body = batch_body(URL, false, &standard_batch());
    client.send(body.clone()).await.unwrap();
    clock.set(at("2026-11-28T10:14:59Z"));
    client.send(body.clone()).await.unwrap();
    assert_eq!(provider.calls.load(Ordering::SeqCst), 1);
    clock.set(at("2026-11-28T10:15:00Z"));
    client.send(body.clone()).await.unwrap();
    assert_eq!(provider.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn no_endpoint_is_a_transient_request_error_after_three_attempts() {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = client(
        &format!("http://127.0.0.1:{port}"),
        rotating(vec![creds("AKIDONE", None, None)]),
        Clock::manual(at(NOW)),
    );
    let err = client
        .send(batch_body(URL, false, &standard_batch()))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Transport(_)), "{err:?}");
    assert_eq!(err.metric_code(), "transport");
    let err = err.into_send_error("celery", &Policy::STANDARD);
    assert!(!err.needs_a_fix());
    assert!(err.to_string().contains("\"celery\""), "{err}");
}

/// Error answers as SQS (AWS JSON 1.0, query-compatible) and moto give
/// them, and how each is classified.
#[test]
fn error_answers_are_classified_as_the_sdk_path_classified_them() {
    struct Case {
        status: u16,
        headers: &'static [(&'static str, &'static str)],
        body: &'static str,
        code: Option<&'static str>,
        retried: bool,
        needs_a_fix: bool,
    }
    let cases = [
        // SQS: a queue deleted since its URL was looked up.
        Case {
            status: 400,
            headers: &[(
                "x-amzn-query-error",
                "AWS.SimpleQueueService.NonExistentQueue;Sender",
            )],
            body: r#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"The specified queue does not exist."}"#,
            code: Some("AWS.SimpleQueueService.NonExistentQueue"),
            retried: false,
            needs_a_fix: true,
        },
        // SQS: no sqs:SendMessage permission.
        Case {
            status: 400,
            headers: &[("x-amzn-query-error", "AccessDenied;Sender")],
            body: r#"{"__type":"com.amazon.coral.service#AccessDeniedException","Message":"User: arn:aws:iam::123456789012:user/beat is not authorized to perform: sqs:sendmessage on resource: arn:aws:sqs:eu-west-1:123456789012:celery because no identity-based policy allows the sqs:sendmessage action"}"#,
            code: Some("AccessDenied"),
            retried: false,
            needs_a_fix: true,
        },
        // moto: DelaySeconds on a FIFO queue.
        Case {
            status: 400,
            headers: &[
                (
                    "x-amzn-errortype",
                    "com.amazonaws.sqs#InvalidParameterValue",
                ),
                ("x-amzn-query-error", "InvalidParameterValue;Sender"),
            ],
            body: r#"{"__type": "com.amazonaws.sqs#InvalidParameterValue", "Message": "Value 5 for parameter DelaySeconds is invalid. Reason: The request include parameter that is not valid for this queue type."}"#,
            code: Some("InvalidParameterValue"),
            retried: false,
            needs_a_fix: true,
        },
        // moto: FIFO without MessageGroupId.
        Case {
            status: 400,
            headers: &[("x-amzn-query-error", "MissingParameter;Sender")],
            body: r#"{"__type": "com.amazon.coral.service#MissingRequiredParameterException", "Message": "The request must contain the parameter MessageGroupId."}"#,
            code: Some("MissingParameter"),
            retried: false,
            needs_a_fix: true,
        },
        // moto: over 1 MiB.
        Case {
            status: 400,
            headers: &[(
                "x-amzn-query-error",
                "AWS.SimpleQueueService.BatchRequestTooLong;Sender",
            )],
            body: r#"{"__type": "com.amazonaws.sqs#BatchRequestTooLong", "message": "Batch requests cannot be longer than 1048576 bytes. You have sent 1200000 bytes.", "Message": "Batch requests cannot be longer than 1048576 bytes. You have sent 1200000 bytes."}"#,
            code: Some("AWS.SimpleQueueService.BatchRequestTooLong"),
            retried: false,
            needs_a_fix: true,
        },
        // SQS: throttled.
        Case {
            status: 400,
            headers: &[("x-amzn-query-error", "RequestThrottled;Sender")],
            body: r#"{"__type":"com.amazonaws.sqs#RequestThrottled","message":"Request is throttled."}"#,
            code: Some("RequestThrottled"),
            retried: true,
            needs_a_fix: false,
        },
        // The fault proxy's injected throttling (no header).
        Case {
            status: 400,
            headers: &[],
            body: r#"{"__type": "ThrottlingException", "message": "Rate exceeded (injected)"}"#,
            code: Some("ThrottlingException"),
            retried: true,
            needs_a_fix: false,
        },
        // SQS's side: 500.
        Case {
            status: 500,
            headers: &[("x-amzn-query-error", "InternalError;Receiver")],
            body: r#"{"__type":"com.amazonaws.sqs#InternalError","message":"We encountered an internal error. Please try again."}"#,
            code: Some("InternalError"),
            retried: true,
            needs_a_fix: false,
        },
        // A generic 500 from the JSON front end, no query code.
        Case {
            status: 500,
            headers: &[],
            body: r#"{"__type":"com.amazon.coral.service#InternalFailure"}"#,
            code: Some("InternalFailure"),
            retried: true,
            needs_a_fix: false,
        },
        // Any other 5xx is SQS's side too, whatever its code.
        Case {
            status: 500,
            headers: &[],
            body: r#"{"__type":"com.amazon.coral.service#InternalServerError","message":"Internal server error"}"#,
            code: Some("InternalServerError"),
            retried: true,
            needs_a_fix: false,
        },
        // A load balancer's 502 page: no code at all.
        Case {
            status: 502,
            headers: &[],
            body: "<html><body>502 Bad Gateway</body></html>",
            code: None,
            retried: true,
            needs_a_fix: false,
        },
        // Expired session credentials: refreshed, not retried as such.
        Case {
            status: 400,
            headers: &[("x-amzn-query-error", "ExpiredToken;Sender")],
            body: r#"{"__type":"com.amazon.coral.service#ExpiredTokenException","message":"The security token included in the request is expired"}"#,
            code: Some("ExpiredToken"),
            retried: false,
            needs_a_fix: true,
        },
        // A code with a namespace and a URL, and `code` before `__type`.
        Case {
            status: 400,
            headers: &[],
            body: r#"{"code":"aws.sqs#InvalidAddress:http://internal.amazon.com/","__type":"Other"}"#,
            code: Some("InvalidAddress"),
            retried: false,
            needs_a_fix: true,
        },
    ];
    for c in cases {
        let mut headers = HeaderMap::new();
        for (k, v) in c.headers {
            headers.insert(*k, v.parse().unwrap());
        }
        let e = service_error(c.status, &headers, c.body.as_bytes());
        let CallError::Service { code, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(code.as_deref(), c.code, "{}", c.body);
        assert_eq!(e.retry_cost().is_some(), c.retried, "{}", c.body);
        let send_error = e.into_send_error("celery", &Policy::STANDARD);
        assert_eq!(send_error.needs_a_fix(), c.needs_a_fix, "{}", c.body);
        if let SendError::Request(text) = &send_error {
            assert!(text.contains("\"celery\""), "{text}");
        }
    }
}

#[test]
fn only_the_ids_sent_count() {
    let answer = br#"{"Successful":[{"Id":"00"},{"Id":"+1"},{"Id":"2"},{"Id":"9"}],"Failed":null}"#;
    let r = outcomes(answer, 3, "celery");
    assert!(r[0].is_err() && r[1].is_err() && r[2].is_ok(), "{r:?}");
    // Listed as both: SQS took it.
    let answer = br#"{"Successful":[{"Id":"0"}],"Failed":[{"Id":"0","SenderFault":false,"Code":"InternalError"}]}"#;
    assert_eq!(outcomes(answer, 1, "celery"), vec![Ok(())]);
    // Not an answer at all.
    let r = outcomes(b"<html>", 2, "celery");
    assert!(matches!(&r[1], Err(SendError::Request(t)) if t.contains("\"celery\"")));
}

#[test]
fn endpoints_are_sent_to_and_signed_as_the_sdk_applies_them() {
    let e = Endpoint::parse("https://sqs.eu-west-1.amazonaws.com").unwrap();
    assert_eq!(
        (e.uri.to_string().as_str(), e.host.as_str(), e.path.as_str()),
        (
            "https://sqs.eu-west-1.amazonaws.com/",
            "sqs.eu-west-1.amazonaws.com",
            "/"
        )
    );
    let e = Endpoint::parse("http://localhost:80/").unwrap();
    assert_eq!((e.host.as_str(), e.path.as_str()), ("localhost", "/"));
    let e = Endpoint::parse("http://127.0.0.1:4566/emulator/").unwrap();
    assert_eq!(
        (e.uri.to_string().as_str(), e.host.as_str(), e.path.as_str()),
        (
            "http://127.0.0.1:4566/emulator/",
            "127.0.0.1:4566",
            "/emulator/"
        )
    );
    assert!(Endpoint::parse("ftp://example.com").is_err());
    assert!(Endpoint::parse("not a url").is_err());
}

#[tokio::test]
async fn the_sdks_resolver_picks_the_endpoint() {
    let shared = |b: aws_types::sdk_config::Builder| b.build();
    let base = || {
        aws_types::SdkConfig::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::v2025_08_07())
            .region(aws_types::region::Region::new("us-east-1"))
    };
    let e = Endpoint::resolve(&shared(base()), "us-east-1")
        .await
        .unwrap();
    assert_eq!(e.host, "sqs.us-east-1.amazonaws.com");
    let e = Endpoint::resolve(&shared(base().use_fips(true)), "us-east-1")
        .await
        .unwrap();
    assert_eq!(e.host, "sqs-fips.us-east-1.amazonaws.com");
    let e = Endpoint::resolve(&shared(base().use_dual_stack(true)), "us-east-1")
        .await
        .unwrap();
    assert_eq!(e.host, "sqs.us-east-1.api.aws");
    let e = Endpoint::resolve(
        &shared(base().endpoint_url("http://127.0.0.1:5000")),
        "us-east-1",
    )
    .await
    .unwrap();
    assert_eq!((e.host.as_str(), e.path.as_str()), ("127.0.0.1:5000", "/"));
    let e = Endpoint::resolve(&shared(base()), "cn-north-1")
        .await
        .unwrap();
    assert_eq!(e.host, "sqs.cn-north-1.amazonaws.com.cn");
}

#[test]
fn an_https_endpoint_gets_a_client_with_the_systems_roots() {
    let clock = Clock::manual(at(NOW));
    let cache = CredentialsCache::new(
        SharedCredentialsProvider::new(creds("AKIDONE", None, None)),
        None,
        clock.now().into(),
    );
    let endpoint = Endpoint::parse("https://sqs.eu-west-1.amazonaws.com").unwrap();
    assert!(BatchClient::new(endpoint, "eu-west-1", cache, Policy::STANDARD, clock).is_ok());
}

/// SQS's `SignatureDoesNotMatch` quotes the canonical request, whose signed
/// headers include the session token: that text went into the send error,
/// and so into logs and the jobs table. The error keeps SQS's sentence and
/// drops the quote and every credential.
#[tokio::test]
async fn a_refused_signature_never_puts_the_session_token_in_the_error() {
    let body = json!({
        "__type": "com.amazon.coral.service#SignatureDoesNotMatch",
        "message": "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.\n\nThe Canonical String for this request should have been\n'POST\n/\n\nhost:sqs.eu-west-1.amazonaws.com\nx-amz-security-token:the-session-token\n'\n\nThe String-to-Sign should have been ... secret-of-ASIAKEY the-session-token",
    })
    .to_string();
    let refusals: Vec<Reply> = (0..2)
        .map(|_| {
            reply(
                403,
                &[("x-amzn-query-error", "SignatureDoesNotMatch;Sender")],
                &body,
            )
        })
        .collect();
    let (ep, url) = endpoint(refusals).await;
    let key = creds(
        "ASIAKEY",
        Some("the-session-token"),
        Some(at("2026-11-28T16:00:00Z")),
    );
    let client = client(&url, rotating(vec![key]), Clock::manual(at(NOW)));
    let err = client
        .send(batch_body(URL, false, &standard_batch()))
        .await
        .unwrap_err();
    let CallError::Service { code, message, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(code.as_deref(), Some("SignatureDoesNotMatch"));
    assert!(message.starts_with("The request signature we calculated"));
    assert!(!message.contains("the-session-token"), "{message}");
    assert!(!message.contains("secret-of-ASIAKEY"), "{message}");
    let text = err.into_send_error("celery", &Policy::STANDARD).to_string();
    assert!(!text.contains("the-session-token"), "{text}");
    assert_eq!(
        header(&ep.requests()[0], "user-agent"),
        concat!("sqsbeat/", env!("CARGO_PKG_VERSION"))
    );
}

/// A provider stuck on expired credentials (a stale container credentials
/// file, say) was asked again at every send, each time SQS refused them;
/// now at most once per ten seconds of refusals.
#[tokio::test]
async fn a_provider_that_keeps_giving_expired_credentials_is_not_asked_at_every_send() {
    let expired = || {
        reply(
            400,
            &[("x-amzn-query-error", "ExpiredToken;Sender")],
            r#"{"__type":"com.amazon.coral.service#ExpiredTokenException","message":"The security token included in the request is expired"}"#,
        )
    };
    let (ep, url) = endpoint((0..20).map(|_| expired()).collect()).await;
    let stale = creds(
        "ASIASTALE",
        Some("stale-token"),
        Some(at("2026-11-28T09:00:00Z")),
    );
    let provider = rotating(vec![stale]);
    let clock = Clock::manual(at(NOW));
    let client = client(&url, provider.clone(), clock.clone());
    let body = batch_body(URL, false, &standard_batch());
    for _ in 0..5 {
        assert!(client.send(body.clone()).await.is_err());
    }
    assert_eq!(ep.requests().len(), 5, "an auth refusal is not retried");
    // The first send asks, and asks again after the refusal; the next four
    // within ten seconds do not.
    assert_eq!(provider.calls.load(Ordering::SeqCst), 2);
    clock.set(at("2026-11-28T10:00:10Z"));
    assert!(client.send(body.clone()).await.is_err());
    assert_eq!(provider.calls.load(Ordering::SeqCst), 4);
}

/// A refusal within ten seconds of the provider giving the refused
/// credentials again started the ten seconds over, without asking it:
/// with refusals coming more often than every ten seconds (a beat that
/// sends every second) the provider was never asked again, and
/// credentials it had since rotated were never used.
#[tokio::test]
async fn rotated_credentials_are_used_within_ten_seconds_while_refusals_keep_coming() {
    let refused = || {
        reply(
            400,
            &[("x-amzn-query-error", "ExpiredToken;Sender")],
            r#"{"__type":"com.amazon.coral.service#ExpiredTokenException","message":"The security token included in the request is expired"}"#,
        )
    };
    let (ep, url) = endpoint((0..3).map(|_| refused()).collect()).await;
    // Revoked before their stated expiry: only a refusal asks again.
    let revoked = creds(
        "ASIAREVOKED",
        Some("revoked-token"),
        Some(at("2026-11-28T16:00:00Z")),
    );
    let rotated = creds(
        "ASIAROTATED",
        Some("rotated-token"),
        Some(at("2026-11-28T16:00:00Z")),
    );
    let provider = rotating(vec![revoked.clone(), revoked, rotated]);
    let clock = Clock::manual(at(NOW));
    let client = client(&url, provider.clone(), clock.clone());
    let body = batch_body(URL, false, &standard_batch());
    assert!(client.send(body.clone()).await.is_err());
    assert_eq!(provider.calls.load(Ordering::SeqCst), 2);
    clock.set(at("2026-11-28T10:00:05Z"));
    assert!(client.send(body.clone()).await.is_err());
    assert_eq!(
        provider.calls.load(Ordering::SeqCst),
        2,
        "within ten seconds"
    );
    clock.set(at("2026-11-28T10:00:10Z"));
    let answer = client.send(body.clone()).await.unwrap();
    assert!(outcomes(&answer, 4, "celery").iter().all(Result::is_ok));
    assert_eq!(provider.calls.load(Ordering::SeqCst), 3);
    let requests = ep.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(
        header(&requests[3], "x-amz-security-token"),
        "rotated-token"
    );
}

#[derive(Debug)]
struct Failing(String);

impl ProvideCredentials for Failing {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(Err(
            aws_credential_types::provider::error::CredentialsError::provider_error(self.0.clone()),
        ))
    }
}

/// A failing `credential_process` puts its whole stderr in the provider's
/// error, and that text went, however long, into the send error that is
/// logged and stored with each job. It is cut to 512 bytes, never inside
/// a character.
#[tokio::test]
async fn a_credentials_providers_error_is_cut_to_512_bytes_at_a_character() {
    // Two-byte characters after an odd and an even prefix: one of them
    // straddles byte 512.
    for prefix in ["Stderr: ", "Stderr:"] {
        let stderr = format!("{prefix}{}", "é".repeat(4000));
        let cache = CredentialsCache::new(
            SharedCredentialsProvider::new(Failing(stderr)),
            None,
            at(NOW).into(),
        );
        let err = cache.get(at(NOW).into()).await.unwrap_err();
        assert!(err.len() <= 512 + "...".len(), "{} bytes", err.len());
        assert!(err.contains(&format!("{prefix}é")), "{err}");
        assert!(err.ends_with("é..."), "{err}");
    }
}
