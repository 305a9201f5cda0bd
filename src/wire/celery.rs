//! Celery task messages, byte-compatible with Celery 5.7 / kombu 5.7 on SQS.
//!
//! Three layers, as kombu writes them: the SQS `MessageBody` is
//! `base64(envelope JSON)`; the envelope's `body` is `base64(task JSON)`;
//! the task JSON is `[args, kwargs, embed]` (message protocol 2). All JSON is
//! Python's `json.dumps` with default settings (`", "` and `": "`
//! separators, `ensure_ascii`), and keys keep Celery's order, so a message
//! from here differs from Celery's only in per-message values (ids,
//! timestamps, origin).
//!
//! Everything here is pure: the caller passes the send instant, the origin
//! and the ids, so the same inputs always give the same bytes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::wire::limits::RESERVED_HEADERS;
use crate::wire::saferepr::{kwargs_repr, saferepr_items, saferepr_tuple};
use crate::wire::sentry::Monitor;

/// Namespace of the deterministic ids of periodic fires.
pub const FIRE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5c1e_7b3a_9d2f_4e61_8a0b_c4d5_e6f7_0812);

/// The task id of a periodic fire: UUIDv5 of the entry name and the nominal
/// instant, so every replica, every restart and every retry of the same
/// fire carries the same id.
pub fn fire_task_id(entry: &str, nominal: DateTime<Utc>) -> Uuid {
    let key = format!(
        "{entry}\n{}",
        nominal.to_rfc3339_opts(SecondsFormat::Millis, true)
    );
    Uuid::new_v5(&FIRE_ID_NAMESPACE, key.as_bytes())
}

/// Everything that varies between task messages.
#[derive(Debug, Clone)]
pub struct TaskMessage<'a> {
    pub task: &'a str,
    pub id: &'a str,
    pub args: &'a [Value],
    pub kwargs: &'a Map<String, Value>,
    /// Logical Celery queue name: becomes `delivery_info.routing_key`.
    pub queue: &'a str,
    pub priority: u8,
    /// Extra headers, appended after Celery's own, in order.
    pub headers: &'a Map<String, Value>,
    pub eta: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    /// The slot this message serves, whatever time it is sent.
    pub scheduled_at: DateTime<Utc>,
    /// Set for periodic fires: the entry name (`periodic_task_name`).
    pub periodic_entry: Option<&'a str>,
    /// What sent it out of turn, as the `sqsbeat_trigger` header
    /// (`"manual"` for `sqsbeat entries run`); `None` on scheduled fires.
    pub trigger: Option<&'a str>,
    pub origin: &'a str,
    /// What the caller passed as args, which Celery's `argsrepr` shows.
    pub args_shape: ArgsShape,
    /// Sentry Crons' headers, for a fire of a monitored entry.
    pub sentry: Option<&'a Monitor>,
}

/// Whether a Celery sender passed args as a list or a tuple: the message
/// body is a JSON array either way, but `argsrepr` shows `[1, 2]` or
/// `(1, 2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgsShape {
    /// What celery beat passes (a list built from the entry's args).
    List,
    /// What `task.delay(...)` and `apply_async((...))` pass.
    Tuple,
}

/// How the SQS body wraps the envelope (kombu's `sqs_base64_encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyEncoding {
    #[default]
    Base64,
    RawJson,
}

impl TaskMessage<'_> {
    /// The task body: `[args, kwargs, embed]`.
    pub fn task_body_json(&self) -> String {
        let body = json!([
            self.args,
            self.kwargs,
            {"callbacks": null, "errbacks": null, "chain": null, "chord": null}
        ]);
        python_json(&body)
    }

    /// Celery's `argsrepr`: `saferepr(args or ())`, so no args show as
    /// `()` whatever the caller passed, and others as the list or tuple it
    /// passed.
    pub fn argsrepr(&self) -> String {
        match self.args_shape {
            _ if self.args.is_empty() => saferepr_tuple(&[]),
            ArgsShape::List => saferepr_items(self.args),
            ArgsShape::Tuple => saferepr_tuple(self.args),
        }
    }

    /// The kombu envelope as a JSON value, keys in Celery's order.
    /// `now` is the send instant, used only for the AMQP `expiration` and
    /// Sentry's start timestamp.
    pub fn envelope(&self, now: DateTime<Utc>) -> Value {
        let mut headers = Map::new();
        headers.insert("lang".into(), "py".into());
        headers.insert("task".into(), self.task.into());
        headers.insert("id".into(), self.id.into());
        headers.insert("shadow".into(), Value::Null);
        headers.insert("eta".into(), self.eta.map(python_isoformat).into());
        headers.insert("expires".into(), self.expires.map(python_isoformat).into());
        headers.insert("group".into(), Value::Null);
        headers.insert("group_index".into(), Value::Null);
        headers.insert("retries".into(), 0.into());
        headers.insert("timelimit".into(), json!([null, null]));
        headers.insert("root_id".into(), self.id.into());
        headers.insert("parent_id".into(), Value::Null);
        headers.insert("argsrepr".into(), self.argsrepr().into());
        headers.insert("kwargsrepr".into(), kwargs_repr(self.kwargs).into());
        headers.insert("origin".into(), self.origin.into());
        headers.insert("ignore_result".into(), false.into());
        headers.insert("replaced_task_nesting".into(), 0.into());
        headers.insert("stamped_headers".into(), Value::Null);
        headers.insert("stamps".into(), json!({}));
        for (k, v) in self.headers {
            // Validation refuses reserved names; never let one slip through
            // and corrupt the protocol headers.
            if !RESERVED_HEADERS.contains(&k.as_str()) {
                headers.insert(k.clone(), v.clone());
            }
        }
        if let Some(monitor) = self.sentry {
            headers.extend(monitor.headers(self.id, now));
        }
        if let Some(entry) = self.periodic_entry {
            // What celery beat and django-celery-beat add.
            headers.insert("celery_beat_task".into(), true.into());
            headers.insert("periodic_task_name".into(), entry.into());
        }
        headers.insert(
            "sqsbeat_scheduled_at".into(),
            self.scheduled_at
                .to_rfc3339_opts(SecondsFormat::AutoSi, true)
                .into(),
        );
        if let Some(trigger) = self.trigger {
            headers.insert("sqsbeat_trigger".into(), trigger.into());
        }

        let mut props = Map::new();
        props.insert("correlation_id".into(), self.id.into());
        props.insert("reply_to".into(), "".into());
        props.insert("delivery_mode".into(), 2.into());
        if let Some(expires) = self.expires {
            // Celery clamps a past expiry to 0 rather than sending a negative TTL.
            let ms = (expires - now).num_milliseconds().max(0);
            props.insert("expiration".into(), ms.to_string().into());
        }
        props.insert(
            "delivery_info".into(),
            json!({"exchange": "", "routing_key": self.queue}),
        );
        props.insert("priority".into(), self.priority.into());
        props.insert("body_encoding".into(), "base64".into());
        let tag = Uuid::new_v5(
            &FIRE_ID_NAMESPACE,
            format!("delivery\n{}", self.id).as_bytes(),
        );
        props.insert("delivery_tag".into(), tag.to_string().into());

        let mut env = Map::new();
        env.insert("body".into(), B64.encode(self.task_body_json()).into());
        env.insert("content-encoding".into(), "utf-8".into());
        env.insert("content-type".into(), "application/json".into());
        env.insert("headers".into(), Value::Object(headers));
        env.insert("properties".into(), Value::Object(props));
        Value::Object(env)
    }

    /// The SQS `MessageBody`, exactly as kombu would send it.
    pub fn sqs_body(&self, now: DateTime<Utc>, encoding: BodyEncoding) -> String {
        let env = python_json(&self.envelope(now));
        match encoding {
            BodyEncoding::Base64 => B64.encode(env),
            BodyEncoding::RawJson => env,
        }
    }
}

/// `datetime.isoformat()` of an aware UTC datetime: microseconds only when
/// non-zero, offset `+00:00`.
pub fn python_isoformat(t: DateTime<Utc>) -> String {
    let micros = t.timestamp_subsec_micros();
    if micros == 0 {
        t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
    } else {
        format!("{}.{micros:06}+00:00", t.format("%Y-%m-%dT%H:%M:%S"))
    }
}

/// Serializes like Python's `json.dumps(value)` with default arguments.
pub fn python_json(value: &Value) -> String {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    // Writing a Value into a Vec cannot fail: no I/O, no non-string keys.
    if value.serialize(&mut ser).is_err() {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}

struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }

    fn write_f64<W: ?Sized + std::io::Write>(&mut self, w: &mut W, v: f64) -> std::io::Result<()> {
        w.write_all(python_float_repr(v).as_bytes())
    }

    /// Numbers keep their JSON text (serde_json's `arbitrary_precision`),
    /// so an integer beyond 64 bits reaches the worker exact, as Python
    /// would send it; what Python's `json.loads` then `json.dumps` would
    /// write is written here.
    fn write_number_str<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        value: &str,
    ) -> std::io::Result<()> {
        w.write_all(python_number(value, python_float_repr).as_bytes())
    }

    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        // ensure_ascii: everything outside printable ASCII becomes \uXXXX
        // (UTF-16 surrogate pairs above the BMP), DEL included.
        if fragment.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return w.write_all(fragment.as_bytes());
        }
        let mut buf = [0u16; 2];
        for c in fragment.chars() {
            if (' '..'\x7f').contains(&c) {
                let mut b = [0u8; 4];
                w.write_all(c.encode_utf8(&mut b).as_bytes())?;
            } else {
                for unit in c.encode_utf16(&mut buf) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// A JSON number's text as Python shows it after `json.loads`: an integer
/// (no `.`, `e` or `E`) is an `int` of any size, written in canonical digits
/// (`-0` is `0`); anything else is a `float`, written by `float`.
///
/// Why exact integers rather than refusing big ones: Python's `int` has no
/// size limit, Celery sends one as its exact digits, and the message only
/// carries text; keeping serde_json's number text (`arbitrary_precision`)
/// is what makes that possible, and every path that reads JSON into a
/// `Value` (TOML, `--args`, JSONB, SQLite text) then keeps it too.
pub fn python_number(text: &str, float: fn(f64) -> String) -> String {
    if text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        // JSON's grammar is a subset of Rust's float grammar; a literal too
        // large for f64 parses to infinity, as Python's float() does.
        return float(text.parse::<f64>().unwrap_or(f64::NAN));
    }
    let (sign, digits) = match text.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", text),
    };
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        "0".to_string()
    } else {
        format!("{sign}{digits}")
    }
}

/// Python's `repr(float)`: shortest round-trip digits, scientific notation
/// below 1e-4 and from 1e16, always a `.0` or exponent.
pub fn python_float_repr(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..16).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let plain = format!("{v}");
    if plain.contains('.') {
        plain
    } else {
        format!("{plain}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_json_matches_json_dumps_defaults() {
        let v = json!({"k": "v", "n": [1, 2], "u": "é☃", "e": "😀", "c": "\u{1}\n\"\\", "f": 1.5, "g": 1e16});
        assert_eq!(
            python_json(&v),
            r#"{"k": "v", "n": [1, 2], "u": "\u00e9\u2603", "e": "\ud83d\ude00", "c": "\u0001\n\"\\", "f": 1.5, "g": 1e+16}"#
        );
    }

    /// serde_json without `arbitrary_precision` read integers beyond 64
    /// bits as floats: the worker got 1.8446744073709552e+19. Expected
    /// values are Python's `json.dumps(json.loads(text))`.
    #[test]
    fn integers_beyond_64_bits_reach_the_worker_exact() {
        let text = "[18446744073709551616, -9223372036854775809, 1e16, 1.50, 1E5, -0, -0.0, 1e400, 0.1, 1e15, 123456789012345678901234567890, 1e-7, 5e-324, 2.5e-5]";
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            python_json(&v),
            "[18446744073709551616, -9223372036854775809, 1e+16, 1.5, 100000.0, 0, -0.0, Infinity, 0.1, 1000000000000000.0, 123456789012345678901234567890, 1e-07, 5e-324, 2.5e-05]"
        );
        // Through a map too (kwargs), and a value built in Rust.
        let v: Value = serde_json::from_str(r#"{"id": 18446744073709551616}"#).unwrap();
        assert_eq!(python_json(&v), r#"{"id": 18446744073709551616}"#);
        assert_eq!(python_json(&json!([1.5, 2, -3])), "[1.5, 2, -3]");
    }

    #[test]
    fn float_repr_like_python() {
        for (v, want) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e16, "1e+16"),
            (1.5e-7, "1.5e-07"),
            (0.0001, "0.0001"),
            (123456.789, "123456.789"),
            (-2.5, "-2.5"),
        ] {
            assert_eq!(python_float_repr(v), want);
        }
    }

    #[test]
    fn isoformat_like_python() {
        let t = DateTime::parse_from_rfc3339("2026-11-21T10:21:09.252841Z")
            .unwrap()
            .to_utc();
        assert_eq!(python_isoformat(t), "2026-11-21T10:21:09.252841+00:00");
        let t = DateTime::parse_from_rfc3339("2026-11-21T10:21:09Z")
            .unwrap()
            .to_utc();
        assert_eq!(python_isoformat(t), "2026-11-21T10:21:09+00:00");
    }

    #[test]
    fn fire_ids_are_stable_and_distinct() {
        let t = DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .to_utc();
        let a = fire_task_id("nightly", t);
        assert_eq!(a, fire_task_id("nightly", t));
        assert_eq!(a.get_version_num(), 5);
        assert_ne!(a, fire_task_id("nightly", t + chrono::Duration::minutes(1)));
        assert_ne!(a, fire_task_id("nightly2", t));
    }
}
