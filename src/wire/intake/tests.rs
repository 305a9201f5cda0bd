//! The intake reader against hand-made messages; the golden fixtures from
//! real Celery are in `tests/it/intake_golden.rs`.

use super::*;

const ID: &str = "eb49ac8d-6c37-51ab-8073-df04a93291db";

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn intake_queue() -> QueueName {
    QueueName::new("", "sqsbeat-intake")
}

/// An intake envelope as sqsbeat_celery writes it (fixture
/// `apply_async_countdown`, shortened).
fn envelope() -> Value {
    json!({
        "body": B64.encode(r#"[[1, 1], {"n": 2}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": "intake.add", "id": ID, "shadow": null,
            "eta": "2030-01-15T13:00:00+00:00", "expires": null, "retries": 0,
            "origin": "gen1000@capture", "x-custom": "é",
            "sqsbeat_intake": {
                "v": 1, "eta": "2030-01-15T13:00:00+00:00", "queue": "celery", "exchange": "",
                "routing_key": "celery", "sqs_queue": "celery", "queue_url": null, "fifo": false,
                "message_attributes": null
            }
        },
        "properties": {
            "correlation_id": ID, "reply_to": "9b3a4f3e-0000-4c1d-8a55-00000000cafe",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": "sqsbeat-intake"},
            "priority": 3, "body_encoding": "base64", "delivery_tag": "d9130794-adb5-5634-96fa-b401a98093ad"
        }
    })
}

fn body(env: &Value) -> String {
    B64.encode(python_json(env))
}

fn read_env(env: &Value) -> Result<Diverted, Box<Malformed>> {
    read(&body(env), &intake_queue(), 1_048_576)
}

fn target(env: &mut Value) -> &mut Map<String, Value> {
    env["headers"][HEADER].as_object_mut().unwrap()
}

#[test]
fn a_diverted_task_becomes_the_message_celery_would_have_sent() {
    let d = read_env(&envelope()).unwrap();
    assert_eq!(d.id, Uuid::parse_str(ID).unwrap());
    assert_eq!((d.task.as_str(), d.retries), ("intake.add", 0));
    assert_eq!(d.due_at, at("2030-01-15T13:00:00Z"));
    assert_eq!(d.queue, QueueName::new("", "celery"));
    assert_eq!((d.group_id.as_deref(), d.dedup_id.as_deref()), (None, None));
    assert_eq!(
        (d.args.clone(), d.kwargs.clone()),
        (json!([1, 1]), json!({"n": 2}))
    );
    assert_eq!(d.priority, 3);
    assert!(d.base64);
    let mut want = envelope();
    want["headers"]
        .as_object_mut()
        .unwrap()
        .shift_remove(HEADER);
    want["properties"]["delivery_info"] = json!({"exchange": "", "routing_key": "celery"});
    assert_eq!(d.envelope, python_json(&want));
    assert!(
        d.envelope
            .contains(r#""x-custom": "\u00e9"}, "properties": {"correlation_id""#),
        "json.dumps bytes, keys in place: {}",
        d.envelope
    );
}

/// `Map::remove` with preserve_order swaps the last key into the removed
/// one's place: a header after the intake header (a `before_task_publish`
/// receiver's) would have moved, and the bytes differ from Celery's.
#[test]
fn the_intake_header_is_removed_without_moving_the_headers_after_it() {
    let mut env = envelope();
    let headers = env["headers"].as_object_mut().unwrap();
    headers.insert("late-a".into(), json!(1));
    headers.insert("late-b".into(), json!(2));
    let d = read_env(&env).unwrap();
    assert!(
        d.envelope
            .contains(r#""x-custom": "\u00e9", "late-a": 1, "late-b": 2}"#),
        "{}",
        d.envelope
    );
}

#[test]
fn delivery_info_is_the_original_routing_in_its_place() {
    let mut env = envelope();
    let t = target(&mut env);
    t.insert("exchange".into(), json!("tasks"));
    t.insert("routing_key".into(), json!("tasks.high"));
    let d = read_env(&env).unwrap();
    assert!(
        d.envelope.contains(
            r#""delivery_mode": 2, "delivery_info": {"exchange": "tasks", "routing_key": "tasks.high"}, "priority": 3"#
        ),
        "{}",
        d.envelope
    );
}

#[test]
fn bodies_are_read_as_kombu_reads_them() {
    let env = envelope();
    let raw = python_json(&env);
    let d = read(&raw, &intake_queue(), 1_048_576).unwrap();
    assert!(!d.base64, "raw JSON (sqs_base64_encoding=False)");
    let padded = format!("  {}\n", body(&env));
    assert!(read(&padded, &intake_queue(), 1_048_576).unwrap().base64);
    assert_eq!(decode_body("YWJj"), ("abc".to_string(), true));
    // Not canonical (trailing bits set), unpadded, or not UTF-8: kombu
    // takes these as the body itself.
    assert_eq!(decode_body("YWJk="), ("YWJk=".to_string(), false));
    assert_eq!(decode_body("YWI"), ("YWI".to_string(), false));
    assert_eq!(decode_body("/w=="), ("/w==".to_string(), false));
}

#[test]
fn release_delay_rounds_up_so_the_worker_never_gets_it_early() {
    let due = at("2030-01-15T13:00:00Z");
    assert_eq!(release_delay(due, at("2030-01-15T12:55:00Z")), 300);
    assert_eq!(release_delay(due, at("2030-01-15T12:55:00.001Z")), 300);
    assert_eq!(release_delay(due, at("2030-01-15T12:59:59.999999Z")), 1);
    assert_eq!(release_delay(due, due), 0);
    assert_eq!(release_delay(due, at("2030-01-15T13:05:00Z")), 0, "late");
    assert_eq!(
        release_delay(due, at("2030-01-15T10:00:00Z")),
        900,
        "capped"
    );
}

#[test]
fn fifo_destinations_get_kombus_group_and_a_stable_deduplication_id() {
    let mut env = envelope();
    let t = target(&mut env);
    for (k, v) in [
        ("queue", json!("jobs.fifo")),
        ("routing_key", json!("jobs.fifo")),
        ("sqs_queue", json!("pfx-jobs.fifo")),
        ("fifo", json!(true)),
    ] {
        t.insert(k.into(), v);
    }
    env["headers"]["retries"] = json!(2);
    let d = read_env(&env).unwrap();
    assert!(d.queue.fifo);
    assert_eq!(d.group_id.as_deref(), Some("default"));
    assert_eq!(d.dedup_id, Some(format!("{ID}:2")));
    env["properties"]["MessageGroupId"] = json!("grp-A");
    env["properties"]["MessageDeduplicationId"] = json!("dedup-1");
    let d = read_env(&env).unwrap();
    assert_eq!(
        (d.group_id.as_deref(), d.dedup_id.as_deref()),
        (Some("grp-A"), Some("dedup-1"))
    );
    env["properties"]["MessageGroupId"] = json!("a group");
    let e = read_env(&env).unwrap_err();
    assert!(
        e.reason.contains("properties.MessageGroupId"),
        "{}",
        e.reason
    );
    assert!(e.failed_job().is_some(), "kept as a failed job");
}

#[test]
fn message_attributes_travel_as_kombu_wrote_them() {
    let mut env = envelope();
    target(&mut env).insert(
        "message_attributes".into(),
        json!({"tenant": {"DataType": "String", "StringValue": "t1"},
               "blob": {"DataType": "Binary", "BinaryValue": {"__type__": "base64", "__value__": "AP8="}}}),
    );
    let d = read_env(&env).unwrap();
    let a = attributes(d.message_attributes.as_ref()).unwrap();
    assert_eq!(
        a,
        [
            (
                "tenant".to_string(),
                MessageAttribute {
                    data_type: "String".into(),
                    value: AttributeValue::String("t1".into())
                }
            ),
            (
                "blob".to_string(),
                MessageAttribute {
                    data_type: "Binary".into(),
                    value: AttributeValue::Binary(vec![0, 255])
                }
            ),
        ]
    );
    target(&mut env).insert(
        "message_attributes".into(),
        json!({"tenant": {"StringValue": "t1"}}),
    );
    let e = read_env(&env).unwrap_err();
    assert!(e.reason.contains("\"tenant\""), "{}", e.reason);
}

type Edit = fn(&mut Value);

/// Reads `envelope()` edited by each case: the reason, and whether what is
/// left can be kept as a failed job.
fn assert_malformed(cases: &[(Edit, &str, bool)]) {
    for &(edit, reason, kept) in cases {
        let mut env = envelope();
        edit(&mut env);
        let e = read_env(&env).unwrap_err();
        assert_eq!(e.reason, reason);
        assert_eq!(e.failed_job().is_some(), kept, "{reason}");
        if let Some(k) = e.failed_job() {
            assert_eq!(k.id, Uuid::parse_str(ID).unwrap());
            assert_eq!(k.due_at, at("2030-01-15T13:00:00Z"), "{reason}");
            assert_eq!(k.task, "intake.add");
        }
        assert_eq!(e.text, python_json(&env), "kept as received");
    }
}

/// INTAKE.md section 5, the envelope and its Celery headers.
#[test]
fn malformed_envelopes_say_why_and_whether_they_can_be_kept() {
    assert_malformed(&[
        (|e| *e = json!([1]), "envelope is not a JSON object", false),
        (
            |e| {
                e.as_object_mut().unwrap().remove("body");
            },
            "envelope \"body\" is missing or not a str",
            true,
        ),
        (
            |e| e["properties"]["delivery_info"] = json!("x"),
            "properties.delivery_info is missing or not an object",
            true,
        ),
        (
            |e| e["properties"]["body_encoding"] = json!("gzip"),
            "properties.body_encoding is a string of 4 characters, not \"base64\"",
            true,
        ),
        (
            |e| e["headers"]["task"] = json!("bad name"),
            "headers.task (a string of 8 characters) holds whitespace: not a task name",
            false,
        ),
        (
            |e| e["headers"]["id"] = json!("order-42"),
            "headers.id is a string of 8 characters, not a UUID",
            false,
        ),
        (
            |e| e["headers"]["retries"] = json!(-1),
            "headers.retries is -1, not a count",
            true,
        ),
        (
            |e| {
                e["headers"].as_object_mut().unwrap().shift_remove(HEADER);
            },
            "headers.sqsbeat_intake is missing: not an intake message",
            true,
        ),
    ]);
    let e = read("not json", &intake_queue(), 1_048_576).unwrap_err();
    assert!(
        e.reason
            .starts_with("body is neither base64 of JSON nor JSON"),
        "{}",
        e.reason
    );
    assert_eq!(e.failed_job(), None);
}

/// INTAKE.md section 5, the intake header.
#[test]
fn malformed_intake_headers_say_why_and_whether_they_can_be_kept() {
    assert_malformed(&[
        (
            |e| target(e).extend([("eta".to_string(), json!("2030-01-15T13:00:00"))]),
            "headers.sqsbeat_intake.eta has no UTC offset",
            true,
        ),
        (
            |e| e["headers"]["eta"] = Value::Null,
            "headers.eta is null: nothing to wait for",
            true,
        ),
        (
            |e| {
                target(e).remove("routing_key");
            },
            "headers.sqsbeat_intake.routing_key is missing or not a string",
            true,
        ),
        (
            |e| target(e).extend([("sqs_queue".to_string(), json!("my.queue"))]),
            "headers.sqsbeat_intake.sqs_queue (8 characters) is not an SQS queue name: 1 to 80 of A-Z, a-z, 0-9, - and _, a FIFO one ending in .fifo",
            true,
        ),
        (
            |e| target(e).extend([("fifo".to_string(), json!(true))]),
            "headers.sqsbeat_intake.fifo is true but sqs_queue does not end in .fifo",
            true,
        ),
        (
            |e| target(e).extend([("queue_url".to_string(), json!(7))]),
            "headers.sqsbeat_intake.queue_url is not a string",
            true,
        ),
        (
            |e| {
                let t = target(e);
                t.insert("queue".into(), json!("sqsbeat-intake"));
                t.insert("sqs_queue".into(), json!("sqsbeat-intake"));
            },
            "the destination is the intake queue \"sqsbeat-intake\" itself",
            true,
        ),
        (
            |e| e["headers"]["retries"] = json!(true),
            "headers.retries is true, not a count",
            true,
        ),
    ]);
}

#[test]
fn a_newer_layout_is_left_for_the_redrive_policy_even_when_readable() {
    let mut env = envelope();
    target(&mut env).insert("v".into(), json!(2));
    let e = read_env(&env).unwrap_err();
    assert!(e.newer);
    assert!(e.known.is_some());
    assert_eq!(e.failed_job(), None, "left on the queue, not a failed job");
    assert!(
        e.reason
            .starts_with("headers.sqsbeat_intake.v is 2; this sqsbeat knows 1")
    );
}

#[test]
fn a_message_sqsbeat_could_not_release_is_refused_when_it_arrives() {
    let env = envelope();
    let size = body(&env).len();
    let e = read(&body(&env), &intake_queue(), size / 2).unwrap_err();
    assert!(e.reason.contains("byte limit"), "{}", e.reason);
    assert!(e.failed_job().is_some());
}

#[test]
fn stored_envelopes_are_checked_before_release() {
    let d = read_env(&envelope()).unwrap();
    assert_eq!(check_stored(&d.envelope, d.id), Ok(()));
    let other = Uuid::from_u128(7);
    assert!(
        check_stored(&d.envelope, other)
            .unwrap_err()
            .contains("not the job's id")
    );
    let secret = "s3cret-token-in-a-header";
    let mut env: Value = serde_json::from_str(&d.envelope).unwrap();
    env["headers"]["id"] = json!(secret);
    let e = check_stored(&python_json(&env), d.id).unwrap_err();
    assert!(
        e.contains("headers.id is a string of 24 characters, not a UUID"),
        "{e}"
    );
    assert!(!e.contains(secret), "{e}");
    let e = read_env(&{
        let mut e = envelope();
        e["headers"]["eta"] = Value::Null;
        e
    })
    .unwrap_err();
    assert!(
        check_stored(&e.text, d.id)
            .unwrap_err()
            .contains("set aside as malformed")
    );
    assert!(check_stored("[", d.id).unwrap_err().contains("not JSON"));
}

/// Reasons reach the log and the status page (`jobs.last_error`): they
/// name the field and what is wrong, never the message's own text.
#[test]
fn malformed_reasons_never_repeat_the_messages_values() {
    const SECRET: &str = "tok-9f2c secret";
    let cases: &[Edit] = &[
        |e| e["headers"]["task"] = json!(SECRET),
        |e| e["headers"]["id"] = json!(SECRET),
        |e| e["headers"]["retries"] = json!(SECRET),
        |e| e["properties"]["body_encoding"] = json!(SECRET),
        |e| target(e).extend([("v".to_string(), json!(SECRET))]),
        |e| target(e).extend([("eta".to_string(), json!(SECRET))]),
        |e| target(e).extend([("eta".to_string(), json!([SECRET]))]),
        |e| target(e).extend([("sqs_queue".to_string(), json!(SECRET))]),
        |e| {
            let t = target(e);
            t.insert("sqs_queue".into(), json!("q.fifo"));
            t.insert("fifo".into(), json!(true));
            t.insert("queue".into(), json!(SECRET));
        },
        |e| {
            target(e).insert(
                "message_attributes".into(),
                json!({"tenant": {"DataType": "String", "StringValue": [SECRET]}}),
            );
        },
        |e| e["properties"]["MessageGroupId"] = json!(SECRET),
        |e| e["properties"]["MessageGroupId"] = json!([SECRET]),
        |e| {
            let t = target(e);
            t.insert("sqs_queue".into(), json!("q.fifo"));
            t.insert("queue".into(), json!("q.fifo"));
            t.insert("fifo".into(), json!(true));
            e["properties"]["MessageDeduplicationId"] = json!(SECRET);
        },
    ];
    for (i, edit) in cases.iter().enumerate() {
        let mut env = envelope();
        edit(&mut env);
        let e = read_env(&env).unwrap_err();
        assert!(!e.reason.contains("secret"), "case {i}: {}", e.reason);
    }
}

#[test]
fn a_moved_eta_changes_only_the_eta_and_needs_one_to_move() {
    let stored = read(
        &B64.encode(python_json(&envelope())),
        &intake_queue(),
        1 << 20,
    )
    .unwrap()
    .envelope;
    let moved = with_eta(&stored, at("2030-01-15T12:10:00.5Z")).unwrap();
    assert_eq!(
        moved,
        stored.replace(
            r#""eta": "2030-01-15T13:00:00+00:00""#,
            r#""eta": "2030-01-15T12:10:00.500000+00:00""#
        )
    );
    assert!(
        moved.contains(r#""x-custom": "\u00e9""#),
        "json.dumps escapes kept"
    );
    assert_eq!(with_eta("not json", at("2030-01-15T12:10:00Z")), None);
    let no_eta = stored.replace(r#""eta": "2030-01-15T13:00:00+00:00""#, r#""eta": null"#);
    assert_eq!(with_eta(&no_eta, at("2030-01-15T12:10:00Z")), None);
}

/// kombu writes a NUL in args as `\u0000`, which PostgreSQL's jsonb
/// refuses: the display columns show U+FFFD, the envelope keeps it.
#[test]
fn a_nul_in_args_is_kept_in_the_envelope_and_replaced_for_display() {
    let mut env = envelope();
    env["body"] = json!(B64.encode(
        r#"[["a\u0000b"], {"k\u0000": "v\u0000"}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#
    ));
    let d = read_env(&env).unwrap();
    assert_eq!(d.args, json!(["a\u{FFFD}b"]));
    assert_eq!(d.kwargs, json!({"k\u{FFFD}": "v\u{FFFD}"}));
    let released: Value = serde_json::from_str(&d.envelope).unwrap();
    assert_eq!(released["body"], env["body"], "the task body unchanged");
}

/// A NUL in a field kept in a text column makes the message malformed:
/// a `failed` job (the name shown with U+FFFD), never a refused batch.
#[test]
fn a_nul_in_a_text_field_is_a_failed_job() {
    let cases: &[(Edit, &str)] = &[
        (
            |e| e["headers"]["task"] = json!("intake.a\u{0}dd"),
            "headers.task",
        ),
        (
            |e| e["headers"]["origin"] = json!("gen\u{0}1@host"),
            "headers.origin",
        ),
        (
            |e| target(e).extend([("queue".to_string(), json!("cel\u{0}ery"))]),
            "headers.sqsbeat_intake.queue",
        ),
        (
            |e| target(e).extend([("queue_url".to_string(), json!("http://q\u{0}"))]),
            "headers.sqsbeat_intake.queue_url",
        ),
        (
            |e| {
                target(e).insert(
                    "message_attributes".into(),
                    json!({"tenant": {"DataType": "String", "StringValue": "t\u{0}1"}}),
                );
            },
            "headers.sqsbeat_intake.message_attributes",
        ),
    ];
    for &(edit, field) in cases {
        let mut env = envelope();
        edit(&mut env);
        let e = read_env(&env).unwrap_err();
        assert_eq!(
            e.reason,
            format!("{field} contains a NUL character, which the jobs table cannot hold")
        );
        let k = e.failed_job().expect("kept as a failed job");
        for text in [Some(&k.task), k.queue.as_ref(), k.origin.as_ref()]
            .into_iter()
            .flatten()
        {
            assert!(!text.contains('\0'), "{field}: {text:?}");
        }
    }
    let mut env = envelope();
    env["headers"]["task"] = json!("intake.a\u{0}dd");
    let e = read_env(&env).unwrap_err();
    assert_eq!(e.failed_job().unwrap().task, "intake.a\u{FFFD}dd");
}
