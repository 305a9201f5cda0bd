//! The intake contract (`python/INTAKE.md`), sqsbeat's side: an SQS
//! message from the intake queue → the one-off job it becomes, or why it
//! is malformed; and the body and delay of its release. Pure.
//!
//! `sqsbeat_celery.install(app)` diverts a task message whose ETA is far
//! ahead to the intake queue, whole, with a `sqsbeat_intake` header saying
//! where it was going. [`read`] checks it as the reference reader
//! (`python/sqsbeat_celery/intake.py`) does and builds, once, the envelope
//! Celery would have sent: the header removed, `delivery_info` the original
//! routing, serialized like Python's `json.dumps`. Building it when the
//! message arrives, not when it is due, means a message that can never be
//! released is a `failed` job at once, not weeks later; the release then
//! sends the stored bytes unchanged ([`release_body`]): nothing is rebuilt
//! from columns, and no header of sqsbeat's own is added.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::wire::celery::python_json;
use crate::wire::limits;
use crate::wire::queue::QueueName;

/// The header that marks an intake message and says where it was going.
pub const HEADER: &str = "sqsbeat_intake";
/// The layout of [`HEADER`] this reader knows.
pub const VERSION: i64 = 1;
/// SQS's longest per-message delay.
const MAX_DELAY_SECONDS: i64 = 900;
/// SQS's most message attributes per message.
const MAX_ATTRIBUTES: usize = 10;

/// An SQS message attribute, as kombu hands it to SendMessage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageAttribute {
    pub data_type: String,
    pub value: AttributeValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeValue {
    String(String),
    Binary(Vec<u8>),
}

impl MessageAttribute {
    /// What it adds to the message's size as SQS counts it (name, type
    /// and value).
    pub fn size(&self, name: &str) -> usize {
        let value = match &self.value {
            AttributeValue::String(s) => s.len(),
            AttributeValue::Binary(b) => b.len(),
        };
        name.len() + self.data_type.len() + value
    }
}

/// A checked intake message: the job it becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct Diverted {
    /// `headers.id`: the job's key and the id the worker sees.
    pub id: Uuid,
    pub task: String,
    /// `headers.retries`: tells a Celery retry from a duplicate.
    pub retries: i64,
    /// `sqsbeat_intake.eta`.
    pub due_at: DateTime<Utc>,
    /// The destination as the application named it: its logical queue,
    /// the SQS name with the application's prefix, FIFO or not.
    pub queue: QueueName,
    /// From the application's `predefined_queues`.
    pub queue_url: Option<String>,
    /// The task's `message_attributes` option, as received.
    pub message_attributes: Option<Map<String, Value>>,
    /// `MessageGroupId`: the task's, else `"default"` on a FIFO queue.
    pub group_id: Option<String>,
    /// FIFO only: the task's `MessageDeduplicationId`, else
    /// `"<task id>:<retries>"` so a re-send within SQS's window is dropped.
    pub dedup_id: Option<String>,
    /// `headers.expires`, for display: the worker applies it.
    pub expires_at: Option<DateTime<Utc>>,
    /// `properties.priority`, for display.
    pub priority: i64,
    /// Decoded from the task body for display, NUL characters shown as
    /// U+FFFD (jsonb cannot hold them); sqsbeat never re-encodes it.
    pub args: Value,
    pub kwargs: Value,
    /// `headers.origin`: who sent it.
    pub origin: Option<String>,
    /// The envelope Celery would have sent, as `json.dumps` writes it.
    pub envelope: String,
    /// Whether SQS bodies are base64 of the envelope (kombu's
    /// `sqs_base64_encoding`), as the intake message's body was.
    pub base64: bool,
}

/// An intake message that cannot become a pending job.
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    pub reason: String,
    /// What could be read of it: enough to keep it as a `failed` job.
    pub known: Option<Known>,
    /// Written by a newer sqsbeat_celery (another `v`): left on the queue
    /// whatever is known, so it can be redriven once sqsbeat is upgraded.
    pub newer: bool,
    /// The envelope as received (decoded from base64 when it was).
    pub text: String,
}

impl Malformed {
    /// What to keep as a `failed` job; `None`: leave the message on the
    /// queue for its redrive policy.
    pub fn failed_job(&self) -> Option<&Known> {
        self.known.as_ref().filter(|_| !self.newer)
    }
}

/// The readable part of a malformed message.
#[derive(Debug, Clone, PartialEq)]
pub struct Known {
    pub id: Uuid,
    pub task: String,
    pub due_at: DateTime<Utc>,
    /// 0 when `headers.retries` cannot be read.
    pub retries: i64,
    /// The destination's logical queue, when it can be read.
    pub queue: Option<String>,
    pub origin: Option<String>,
}

/// Why a check failed: the reason, and whether a newer layout is the cause.
enum Bad {
    Invalid(String),
    Newer(String),
}

impl From<String> for Bad {
    fn from(s: String) -> Self {
        Bad::Invalid(s)
    }
}

/// Reads one intake SQS message body. `intake` is the intake queue itself
/// (a message bound for it is refused: it would come straight back);
/// `max_message_bytes` bounds the released message as it bounds every
/// other.
pub fn read(
    sqs_body: &str,
    intake: &QueueName,
    max_message_bytes: usize,
) -> Result<Diverted, Box<Malformed>> {
    let (text, base64) = decode_body(sqs_body);
    let malformed = |bad: Bad, env: Option<&Value>| {
        let (reason, newer) = match bad {
            Bad::Invalid(r) => (r, false),
            Bad::Newer(r) => (r, true),
        };
        Box::new(Malformed {
            reason,
            known: env.and_then(identify),
            newer,
            text: text.clone(),
        })
    };
    let env: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            return Err(malformed(
                format!("body is neither base64 of JSON nor JSON: {e}").into(),
                None,
            ));
        }
    };
    check(&env, intake, base64, max_message_bytes).map_err(|bad| malformed(bad, Some(&env)))
}

/// kombu's `_optional_b64_decode`: the body is base64 only if, stripped,
/// it is canonical padded base64 that re-encodes to itself and decodes to
/// UTF-8; anything else is the envelope itself.
fn decode_body(sqs_body: &str) -> (String, bool) {
    let candidate = sqs_body.trim_matches(|c: char| c.is_ascii_whitespace());
    if candidate.len() % 4 == 0
        && candidate
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
        && !candidate.trim_end_matches('=').contains('=')
        && candidate.len() - candidate.trim_end_matches('=').len() <= 2
        && let Ok(raw) = B64.decode(candidate)
        && B64.encode(&raw) == candidate
        && let Ok(text) = String::from_utf8(raw)
    {
        return (text, true);
    }
    (sqs_body.to_string(), false)
}

fn object(v: Option<&Value>) -> Option<&Map<String, Value>> {
    v.and_then(Value::as_object)
}

/// Every check of the contract's section 5, in the reference reader's
/// order, then the release envelope.
fn check(
    env: &Value,
    intake: &QueueName,
    base64: bool,
    max_message_bytes: usize,
) -> Result<Diverted, Bad> {
    let (top, headers, props) = shape(env)?;
    let task = task_name(headers.get("task"))?;
    let id = task_id(headers.get("id"))?;
    let retries = retries(headers.get("retries"))?;
    let Some(target) = object(headers.get(HEADER)) else {
        return Err(format!("headers.{HEADER} is missing: not an intake message").into());
    };
    if target.get("v").and_then(Value::as_i64) != Some(VERSION) {
        return Err(Bad::Newer(format!(
            "headers.{HEADER}.v is {}; this sqsbeat knows {VERSION} (upgrade sqsbeat, then redrive the message from the dead-letter queue)",
            kind(target.get("v"))
        )));
    }
    let due_at = instant(target.get("eta"), &format!("headers.{HEADER}.eta"))?;
    if headers.get("eta").is_none_or(Value::is_null) {
        return Err("headers.eta is null: nothing to wait for"
            .to_string()
            .into());
    }
    let t = destination(target, intake)?;
    let attributes = attributes(t.message_attributes.as_ref())?;
    let (group_id, dedup_id) = fifo_ids(props, t.queue.fifo, headers.get("id"), retries)?;
    let envelope = release_envelope(env, &t.exchange, &t.routing_key);
    let size = release_body(&envelope, base64).len()
        + attributes.iter().map(|(n, a)| a.size(n)).sum::<usize>();
    limits::check_message_size(size, max_message_bytes).map_err(|e| e.to_string())?;
    let origin = match headers.get("origin") {
        Some(Value::String(o)) if o.contains('\0') => return Err(nul("headers.origin").into()),
        Some(Value::String(o)) => Some(o.clone()),
        _ => None,
    };
    let (args, kwargs) = display_args(top, props);
    Ok(Diverted {
        id,
        task,
        retries,
        due_at,
        queue: t.queue,
        queue_url: t.queue_url,
        message_attributes: t.message_attributes,
        group_id,
        dedup_id,
        expires_at: headers
            .get("expires")
            .and_then(|v| instant(Some(v), "").ok()),
        priority: props
            .get("priority")
            .and_then(Value::as_i64)
            .filter(|p| (0..=255).contains(p))
            .unwrap_or(0),
        args,
        kwargs,
        origin,
        envelope,
        base64,
    })
}

type Parts<'a> = (
    &'a Map<String, Value>,
    &'a Map<String, Value>,
    &'a Map<String, Value>,
);

/// The envelope's own shape: (envelope, headers, properties).
fn shape(env: &Value) -> Result<Parts<'_>, Bad> {
    let Some(top) = env.as_object() else {
        return Err("envelope is not a JSON object".to_string().into());
    };
    for (key, kind) in [
        ("body", "str"),
        ("content-type", "str"),
        ("headers", "dict"),
        ("properties", "dict"),
    ] {
        let ok = match top.get(key) {
            Some(Value::String(_)) => kind == "str",
            Some(Value::Object(_)) => kind == "dict",
            _ => false,
        };
        if !ok {
            return Err(format!("envelope {key:?} is missing or not a {kind}").into());
        }
    }
    let (Some(headers), Some(props)) = (object(top.get("headers")), object(top.get("properties")))
    else {
        return Err("envelope headers or properties are not objects"
            .to_string()
            .into());
    };
    if object(props.get("delivery_info")).is_none() {
        return Err("properties.delivery_info is missing or not an object"
            .to_string()
            .into());
    }
    match props.get("body_encoding") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "base64" => {}
        other => {
            return Err(format!(
                "properties.body_encoding is {}, not \"base64\"",
                kind(other)
            )
            .into());
        }
    }
    Ok((top, headers, props))
}

/// Where the message was going, from its intake header.
struct Destination {
    queue: QueueName,
    exchange: String,
    routing_key: String,
    queue_url: Option<String>,
    message_attributes: Option<Map<String, Value>>,
}

fn destination(target: &Map<String, Value>, intake: &QueueName) -> Result<Destination, Bad> {
    let text = |key: &str, empty_ok: bool| -> Result<String, Bad> {
        match target.get(key) {
            Some(Value::String(s)) if empty_ok || !s.is_empty() => Ok(s.clone()),
            _ if empty_ok => {
                Err(format!("headers.{HEADER}.{key} is missing or not a string").into())
            }
            _ => Err(format!("headers.{HEADER}.{key} is missing or empty").into()),
        }
    };
    let queue = text("queue", false)?;
    if queue.contains('\0') {
        return Err(nul(&format!("headers.{HEADER}.queue")).into());
    }
    let sqs_queue = text("sqs_queue", false)?;
    let exchange = text("exchange", true)?;
    let routing_key = text("routing_key", true)?;
    check_sqs_name(&sqs_queue)?;
    let fifo = match target.get("fifo") {
        Some(Value::Bool(b)) => *b,
        _ => return Err(format!("headers.{HEADER}.fifo is missing or not a boolean").into()),
    };
    if fifo != sqs_queue.ends_with(".fifo") {
        return Err(format!(
            "headers.{HEADER}.fifo is {fifo} but sqs_queue {} in .fifo",
            ends(fifo)
        )
        .into());
    }
    // sqsbeat decides when a job is released by its queue's name (a FIFO
    // one only once due): the name and the flag must agree.
    if fifo != crate::wire::queue::is_fifo(&queue) {
        return Err(format!(
            "headers.{HEADER}.fifo is {fifo} but queue {} in .fifo",
            ends(fifo)
        )
        .into());
    }
    let queue_url = match target.get("queue_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) if u.contains('\0') => {
            return Err(nul(&format!("headers.{HEADER}.queue_url")).into());
        }
        // Empty: no predefined URL, as the reference reader takes it.
        Some(Value::String(u)) => Some(u.clone()).filter(|u| !u.is_empty()),
        Some(_) => return Err(format!("headers.{HEADER}.queue_url is not a string").into()),
    };
    let message_attributes = match target.get("message_attributes") {
        None | Some(Value::Null) => None,
        // Kept in a jsonb column, which cannot hold NUL; SQS refuses it too.
        Some(v @ Value::Object(_)) if has_nul(v) => {
            return Err(nul(&format!("headers.{HEADER}.message_attributes")).into());
        }
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => {
            return Err(format!("headers.{HEADER}.message_attributes is not an object").into());
        }
    };
    if queue == intake.logical || sqs_queue == intake.sqs {
        return Err(format!(
            "the destination is the intake queue {:?} itself",
            intake.logical
        )
        .into());
    }
    Ok(Destination {
        queue: QueueName {
            logical: queue,
            sqs: sqs_queue,
            fifo,
        },
        exchange,
        routing_key,
        queue_url,
        message_attributes,
    })
}

fn task_name(v: Option<&Value>) -> Result<String, Bad> {
    match v {
        // Refused here, not by the database: a NUL in a text column fails
        // the whole batch's transaction on PostgreSQL.
        Some(Value::String(t)) if t.contains('\0') => Err(nul("headers.task").into()),
        Some(Value::String(t)) if !t.is_empty() && !t.chars().any(char::is_whitespace) => {
            Ok(t.clone())
        }
        Some(Value::String(t)) if !t.is_empty() => Err(format!(
            "headers.task ({}) holds whitespace: not a task name",
            kind(v)
        )
        .into()),
        other => Err(format!("headers.task is {}, not a task name", kind(other)).into()),
    }
}

fn task_id(v: Option<&Value>) -> Result<Uuid, Bad> {
    v.and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| format!("headers.id is {}, not a UUID", kind(v)).into())
}

/// `headers.retries`: a count; absent is 0, as Celery reads it.
fn retries(v: Option<&Value>) -> Result<i64, Bad> {
    match v {
        None => Ok(0),
        Some(n) => n
            .as_i64()
            .filter(|r| *r >= 0)
            .ok_or_else(|| format!("headers.retries is {}, not a count", kind(v)).into()),
    }
}

/// What a value is, for a reason: reasons reach the log and the status
/// page (`jobs.last_error`), and a message's strings are the
/// application's data, so a string is told by its length, never its text.
fn kind(v: Option<&Value>) -> String {
    match v {
        None => "missing".into(),
        Some(Value::Null) => "null".into(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => {
            let n = n.to_string();
            if n.len() <= 20 {
                n
            } else {
                format!("a number of {} digits", n.len())
            }
        }
        Some(Value::String(s)) => format!("a string of {} characters", s.chars().count()),
        Some(Value::Array(a)) => format!("an array of {} items", a.len()),
        Some(Value::Object(o)) => format!("an object of {} keys", o.len()),
    }
}

fn nul(field: &str) -> String {
    format!("{field} contains a NUL character, which the jobs table cannot hold")
}

fn ends(fifo: bool) -> &'static str {
    if fifo { "does not end" } else { "ends" }
}

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// `v` with every NUL character in its strings and keys replaced by
/// U+FFFD: PostgreSQL's jsonb cannot hold `\u0000`. For the display
/// columns only; the envelope keeps the exact bytes.
fn without_nul(v: &Value) -> Value {
    let clean = |s: &str| s.replace('\0', "\u{FFFD}");
    match v {
        Value::String(s) => Value::String(clean(s)),
        Value::Array(a) => Value::Array(a.iter().map(without_nul).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (clean(k), without_nul(v))).collect())
        }
        other => other.clone(),
    }
}

/// An ISO 8601 instant with a UTC offset.
fn instant(v: Option<&Value>, what: &str) -> Result<DateTime<Utc>, Bad> {
    let Some(Value::String(s)) = v else {
        return Err(format!("{what} must be an ISO 8601 string, got {}", kind(v)).into());
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.to_utc());
    }
    if NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").is_ok() {
        return Err(format!("{what} has no UTC offset").into());
    }
    Err(format!("{what} ({}) is not an ISO 8601 instant", kind(v)).into())
}

/// An SQS queue name: 1..80 of `[A-Za-z0-9_-]`, a FIFO one ending in `.fifo`.
fn check_sqs_name(name: &str) -> Result<(), Bad> {
    let stem = name.strip_suffix(".fifo").unwrap_or(name);
    let ok = !stem.is_empty()
        && name.len() <= 80
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "headers.{HEADER}.sqs_queue ({} characters) is not an SQS queue name: 1 to 80 of A-Z, a-z, 0-9, - and _, a FIFO one ending in .fifo",
            name.chars().count()
        )
        .into())
    }
}

/// The task's message attributes as SendMessage takes them. kombu's JSON
/// writes bytes as `{"__type__": "base64", "__value__": ...}`.
pub fn attributes(
    raw: Option<&Map<String, Value>>,
) -> Result<Vec<(String, MessageAttribute)>, String> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    if raw.len() > MAX_ATTRIBUTES {
        return Err(format!(
            "headers.{HEADER}.message_attributes has {} attributes; SQS takes at most {MAX_ATTRIBUTES}",
            raw.len()
        ));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, (name, v)) in raw.iter().enumerate() {
        // The kind of value, never the value: the reason is stored as the
        // job's last error, which the status page shows.
        let bad = || {
            format!(
                "message attribute {} must be {{\"DataType\": ..., \"StringValue\": ...}} or have a BinaryValue, got {}",
                attribute_name(i, name),
                json_kind(v)
            )
        };
        let data_type = v
            .get("DataType")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(bad)?;
        let value = match (v.get("StringValue"), v.get("BinaryValue")) {
            (Some(Value::String(s)), _) => AttributeValue::String(s.clone()),
            (_, Some(Value::String(s))) => AttributeValue::Binary(s.as_bytes().to_vec()),
            (_, Some(Value::Object(b)))
                if b.get("__type__").and_then(Value::as_str) == Some("base64") =>
            {
                let text = b.get("__value__").and_then(Value::as_str).ok_or_else(bad)?;
                AttributeValue::Binary(B64.decode(text).map_err(|_| bad())?)
            }
            _ => return Err(bad()),
        };
        out.push((
            name.clone(),
            MessageAttribute {
                data_type: data_type.to_string(),
                value,
            },
        ));
    }
    Ok(out)
}

/// An attribute's name for a reason: SQS names are at most 256 characters
/// of a few kinds, but this one is not checked yet.
fn attribute_name(i: usize, name: &str) -> String {
    if name.chars().count() <= 64 {
        format!("{name:?}")
    } else {
        format!("#{} (a name of {} characters)", i + 1, name.chars().count())
    }
}

/// `MessageGroupId` and `MessageDeduplicationId` as kombu would send them,
/// deduplication made stable (`"<task id>:<retries>"`) where kombu draws a
/// random one, so a re-send within SQS's window is dropped.
fn fifo_ids(
    props: &Map<String, Value>,
    fifo: bool,
    id: Option<&Value>,
    retries: i64,
) -> Result<(Option<String>, Option<String>), Bad> {
    let prop = |key: &str| -> Result<Option<String>, Bad> {
        match props.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => match limits::check_fifo_id(s) {
                Ok(()) => Ok(Some(s.clone())),
                Err(e) => Err(format!("properties.{key} {e}").into()),
            },
            other => Err(format!("properties.{key} is {}, not a string", kind(other)).into()),
        }
    };
    let group = prop("MessageGroupId")?;
    if !fifo {
        return Ok((group, None));
    }
    let dedup = match prop("MessageDeduplicationId")? {
        Some(d) => d,
        None => {
            // The header's own text, as the reference reader writes it.
            let id = id.and_then(Value::as_str).unwrap_or_default();
            let d = format!("{id}:{retries}");
            limits::check_fifo_id(&d).map_err(|e| format!("MessageDeduplicationId {e}"))?;
            d
        }
    };
    Ok((Some(group.unwrap_or_else(|| "default".into())), Some(dedup)))
}

/// The envelope Celery would have put on the original queue: the intake
/// header removed (keeping every other key's place), `delivery_info` the
/// original routing (in its place), nothing else touched; as `json.dumps`
/// writes it.
fn release_envelope(env: &Value, exchange: &str, routing_key: &str) -> String {
    let mut env = env.clone();
    if let Some(headers) = env.get_mut("headers").and_then(Value::as_object_mut) {
        // shift, not swap: a swap would move the last header into its place.
        headers.shift_remove(HEADER);
    }
    if let Some(props) = env.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert(
            "delivery_info".into(),
            json!({"exchange": exchange, "routing_key": routing_key}),
        );
    }
    python_json(&env)
}

/// `[args, kwargs]` of a JSON task body, for `pending` and `show` only;
/// `[]` and `{}` when the body is in another serializer or unreadable.
fn display_args(top: &Map<String, Value>, props: &Map<String, Value>) -> (Value, Value) {
    let fallback = (json!([]), json!({}));
    if top.get("content-type").and_then(Value::as_str) != Some("application/json") {
        return fallback;
    }
    let Some(body) = top.get("body").and_then(Value::as_str) else {
        return fallback;
    };
    let text = if props.get("body_encoding").and_then(Value::as_str) == Some("base64") {
        match B64
            .decode(body)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        {
            Some(t) => t,
            None => return fallback,
        }
    } else {
        body.to_string()
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(parts)) => match (parts.first(), parts.get(1)) {
            (Some(a @ Value::Array(_)), Some(k @ Value::Object(_))) => {
                (without_nul(a), without_nul(k))
            }
            _ => fallback,
        },
        _ => fallback,
    }
}

/// What can be read of a malformed envelope: the id, the task and an ETA
/// (`sqsbeat_intake.eta`, else `headers.eta`) make a `failed` job.
fn identify(env: &Value) -> Option<Known> {
    let headers = object(env.get("headers"))?;
    let target = object(headers.get(HEADER));
    let id = task_id(headers.get("id")).ok()?;
    // A NUL makes the message malformed, not unreadable: the failed job
    // shows the name with U+FFFD in its place.
    let task = task_name(headers.get("task").map(without_nul).as_ref()).ok()?;
    let due_at = target
        .and_then(|t| instant(t.get("eta"), "").ok())
        .or_else(|| instant(headers.get("eta"), "").ok())?;
    Some(Known {
        id,
        task,
        due_at,
        retries: retries(headers.get("retries")).unwrap_or(0),
        queue: target
            .and_then(|t| t.get("queue"))
            .and_then(Value::as_str)
            .filter(|q| !q.is_empty())
            .map(|q| q.replace('\0', "\u{FFFD}")),
        origin: headers
            .get("origin")
            .and_then(Value::as_str)
            .map(|o| o.replace('\0', "\u{FFFD}")),
    })
}

/// What a JSON value is, and an object's keys, never what it holds.
pub fn json_kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(_) => "a number".into(),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(m) => format!("an object with keys {:?}", m.keys().collect::<Vec<_>>()),
    }
}

/// The SQS body of a stored release envelope.
pub fn release_body(envelope: &str, base64: bool) -> String {
    if base64 {
        B64.encode(envelope)
    } else {
        envelope.to_string()
    }
}

/// A stored release envelope with `headers.eta` set to `eta`, as Celery
/// writes it (`isoformat()`), every other byte as `json.dumps` wrote it:
/// what a job rescheduled from the intake is released as. `None` when the
/// envelope has no `headers.eta` to move (not JSON, or none there): it is
/// then released as stored, and checked like any other when it is.
pub fn with_eta(envelope: &str, eta: DateTime<Utc>) -> Option<String> {
    let mut env: Value = serde_json::from_str(envelope).ok()?;
    let slot = env
        .get_mut("headers")
        .and_then(Value::as_object_mut)?
        .get_mut("eta")
        .filter(|v| !v.is_null())?;
    *slot = Value::String(crate::wire::celery::python_isoformat(eta));
    Some(python_json(&env))
}

/// `DelaySeconds` for a standard queue: the seconds left until `due_at`,
/// rounded up and at most 900, so the worker receives the message at its
/// ETA, never before (it would hold it), and runs it at once.
pub fn release_delay(due_at: DateTime<Utc>, now: DateTime<Utc>) -> i32 {
    const US: i64 = 1_000_000;
    let us = (due_at - now)
        .num_microseconds()
        .unwrap_or(i64::MAX)
        .clamp(0, MAX_DELAY_SECONDS * US);
    ((us + US - 1) / US) as i32
}

/// Checks a stored envelope before it is sent: rows can be edited by hand,
/// and a malformed message is kept as received (with its intake header)
/// beside a `failed` status someone may reset.
pub fn check_stored(envelope: &str, id: Uuid) -> Result<(), String> {
    let env: Value = serde_json::from_str(envelope)
        .map_err(|e| format!("the stored envelope is not JSON: {e}"))?;
    let headers = object(env.get("headers"))
        .ok_or("the stored envelope has no headers object".to_string())?;
    if headers.contains_key(HEADER) {
        return Err(format!(
            "the stored envelope still carries headers.{HEADER}: it is an intake message set aside as malformed, not a message to release"
        ));
    }
    match headers
        .get("id")
        .and_then(Value::as_str)
        .map(Uuid::parse_str)
    {
        Some(Ok(got)) if got == id => Ok(()),
        Some(Ok(_)) => Err(format!(
            "the stored envelope's headers.id is another task's id, not the job's id {id}"
        )),
        _ => Err(format!(
            "the stored envelope's headers.id is {}, not a UUID (the job's id is {id})",
            kind(headers.get("id"))
        )),
    }
}

#[cfg(test)]
mod tests;
