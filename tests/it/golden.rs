//! Message bytes against messages captured from Celery 5.7 / kombu 5.7
//! (tests/fixtures/celery-wire). Compared in the fixtures' normalized form:
//! per-message values (ids, origin, reply_to, delivery_tag, eta, expires)
//! become placeholders, everything else must match byte for byte.

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};
use sqsbeat::wire::celery::{ArgsShape, BodyEncoding, TaskMessage, python_json};

fn fixture(case: &str, file: &str) -> String {
    let p: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests/fixtures/celery-wire",
        case,
        file,
    ]
    .iter()
    .collect();
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-21T10:20:09.252841Z")
        .unwrap()
        .to_utc()
}

/// The harness's `check_message.py --normalize`, in Rust.
fn normalize(mut env: Value) -> String {
    for (sect, keys) in [
        (
            "headers",
            &["id", "root_id", "origin", "eta", "expires"][..],
        ),
        (
            "properties",
            &["correlation_id", "reply_to", "delivery_tag"][..],
        ),
    ] {
        for k in keys {
            if let Some(v) = env[sect].get_mut(*k)
                && !v.is_null()
            {
                *v = Value::String(format!("<{k}>"));
            }
        }
    }
    let body = B64.decode(env["body"].as_str().unwrap()).unwrap();
    env["body"] = Value::String(format!("<base64:{}>", String::from_utf8(body).unwrap()));
    python_json(&env)
}

struct Case<'a> {
    name: &'a str,
    task: &'a str,
    args: Value,
    kwargs: Value,
    queue: &'a str,
    priority: u8,
    headers: Value,
    expires_in: Option<Duration>,
    beat: bool,
    /// What the captured call passed as args (`apply_async((2, 3))`: a
    /// tuple; `args=[...]` and celery beat: a list), which argsrepr shows.
    args_shape: ArgsShape,
}

fn ours(c: &Case<'_>) -> Value {
    let args = c.args.as_array().unwrap().clone();
    let kwargs: Map<String, Value> = c.kwargs.as_object().unwrap().clone();
    let headers: Map<String, Value> = c.headers.as_object().unwrap().clone();
    let msg = TaskMessage {
        task: c.task,
        id: "7f0c5d1e-0000-4000-8000-000000000001",
        args: &args,
        kwargs: &kwargs,
        queue: c.queue,
        priority: c.priority,
        headers: &headers,
        eta: None,
        expires: c.expires_in.map(|d| now() + d),
        scheduled_at: now(),
        periodic_entry: c.beat.then_some("golden-entry"),
        trigger: None,
        origin: "sqsbeat@test",
        args_shape: c.args_shape,
        sentry: None,
    };
    let mut env = msg.envelope(now());
    // What sqsbeat adds on purpose; checked separately below.
    let h = env["headers"].as_object_mut().unwrap();
    assert_eq!(
        h.remove("sqsbeat_scheduled_at"),
        Some(json!("2026-11-21T10:20:09.252841Z"))
    );
    if c.beat {
        assert_eq!(h.remove("periodic_task_name"), Some(json!("golden-entry")));
    }
    env
}

/// The whole envelope, argsrepr and kwargsrepr included, byte for byte.
fn check(c: Case<'_>) {
    let env = ours(&c);
    let want = fixture(c.name, "envelope.normalized.json");
    assert_eq!(normalize(env), want.trim_end(), "case {}", c.name);
}

fn case(name: &str) -> Case<'_> {
    Case {
        name,
        task: "wire.add",
        args: json!([]),
        kwargs: json!({}),
        queue: "celery",
        priority: 0,
        headers: json!({}),
        expires_in: None,
        beat: false,
        args_shape: ArgsShape::Tuple,
    }
}

#[test]
fn plain_args() {
    check(Case {
        args: json!([2, 3]),
        ..case("01_plain_args")
    });
}

#[test]
fn kwargs_with_non_ascii() {
    check(Case {
        task: "wire.echo",
        args: json!([1, "two"]),
        kwargs: json!({"k": "v", "n": [1, 2], "u": "é☃"}),
        queue: "q-kwargs",
        args_shape: ArgsShape::List,
        ..case("02_kwargs")
    });
}

#[test]
fn expires_sets_header_and_expiration() {
    check(Case {
        args: json!([1, 3]),
        queue: "q-expires-s",
        expires_in: Some(Duration::seconds(60)),
        ..case("05_expires_seconds")
    });
}

#[test]
fn routing_key_is_the_logical_name() {
    check(Case {
        args: json!([1, 5]),
        queue: "my.dotted.queue:name",
        ..case("07_dotted_queue")
    });
}

#[test]
fn priority() {
    check(Case {
        args: json!([1, 7]),
        queue: "q-priority",
        priority: 5,
        ..case("09_priority")
    });
}

#[test]
fn custom_headers_follow_celery_headers() {
    check(Case {
        args: json!([1, 8]),
        queue: "q-headers",
        headers: json!({"x-trace": "abc", "tenant": 42}),
        ..case("10_custom_headers")
    });
}

#[test]
fn beat_interval_entry() {
    check(Case {
        args: json!([1, 2]),
        queue: "beat-interval",
        beat: true,
        args_shape: ArgsShape::List,
        ..case("20_beat_interval_2s")
    });
}

#[test]
fn beat_crontab_entry() {
    check(Case {
        task: "wire.echo",
        kwargs: json!({"from": "cron"}),
        queue: "beat-cron",
        beat: true,
        args_shape: ArgsShape::List,
        ..case("21_beat_crontab")
    });
}

/// argsrepr and kwargsrepr are Celery's saferepr, not Python's repr:
/// single quotes with `\'`, a raw newline, `[...]` three levels down.
#[test]
fn reprs_of_nested_quoted_and_non_ascii_arguments() {
    check(Case {
        task: "wire.echo",
        args: json!([[[[1]]], "it's", "a\nb", "é☃😀"]),
        kwargs: json!({"q": "it's", "n": "a\nb", "d": {"a": {"b": {"c": 1}}}}),
        queue: "q-repr-kwargs",
        args_shape: ArgsShape::List,
        ..case("22_repr_nested_kwargs")
    });
}

/// Cut at 1024 characters while streaming, the way Celery cuts.
#[test]
fn reprs_of_long_arguments_are_cut_like_celery() {
    let ints: Vec<i64> = (0..400).collect();
    check(Case {
        args: json!(ints),
        kwargs: json!({"text": "word ".repeat(300)}),
        queue: "q-repr-long",
        ..case("23_repr_long_args")
    });
}

#[test]
fn sqs_body_is_base64_of_the_envelope_json_or_raw_json() {
    let args = vec![json!(1), json!(2)];
    let (kwargs, headers) = (Map::new(), Map::new());
    let msg = TaskMessage {
        task: "wire.add",
        id: "x",
        args: &args,
        kwargs: &kwargs,
        queue: "celery",
        priority: 0,
        headers: &headers,
        eta: None,
        expires: None,
        scheduled_at: now(),
        periodic_entry: None,
        trigger: None,
        origin: "o",
        args_shape: ArgsShape::Tuple,
        sentry: None,
    };
    let b64 = msg.sqs_body(now(), BodyEncoding::Base64);
    let decoded = String::from_utf8(B64.decode(&b64).unwrap()).unwrap();
    assert_eq!(decoded, python_json(&msg.envelope(now())));
    assert_eq!(msg.sqs_body(now(), BodyEncoding::RawJson), decoded);
    // Key order of the captured kombu envelope.
    let raw = fixture("18_no_base64", "sqs_body.raw");
    let keys = |s: &str| -> Vec<String> {
        serde_json::from_str::<Map<String, Value>>(s)
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(keys(&decoded), keys(&raw));
}

#[test]
fn header_order_matches_celery_exactly() {
    let env = ours(&Case {
        args: json!([1, 2]),
        queue: "beat-interval",
        beat: true,
        ..case("20_beat_interval_2s")
    });
    let want: Value =
        serde_json::from_str(&fixture("20_beat_interval_2s", "envelope.raw.json")).unwrap();
    let keys = |v: &Value, s: &str| {
        v[s].as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&env, "headers"), keys(&want, "headers"));
    assert_eq!(keys(&env, "properties"), keys(&want, "properties"));
}
