//! `sqsbeat run` on bad input: it refuses to start on an invalid schedule or
//! missing credentials, and keeps firing what it can when a queue or the
//! endpoint is unavailable.

use std::time::Duration;

use crate::stack::{self, json_lines};

fn log_text(d: &std::path::Path) -> String {
    std::fs::read_to_string(d.join("sqsbeat.log")).unwrap_or_default()
}

#[test]
fn missing_queue_is_reported_and_retried_while_other_entries_fire() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_moto, endpoint) = stack::moto(d);
    stack::create_queue(&endpoint, "present");
    let schedule = d.join("s.toml");
    std::fs::write(
        &schedule,
        "[entries.ok]\ntask = \"a.ok\"\nevery = \"1s\"\nqueue = \"present\"\n\n[entries.lost]\ntask = \"a.lost\"\nevery = \"1s\"\nqueue = \"absent.q\"\n",
    )
    .unwrap();
    let mut beat = stack::sqsbeat_run(d, &endpoint, &schedule);
    std::thread::sleep(Duration::from_millis(4500));
    assert!(
        beat.child.try_wait().unwrap().is_none(),
        "run must keep running: {}",
        log_text(d)
    );
    beat.terminate(Duration::from_secs(10))
        .expect("stops on SIGTERM");

    let log = json_lines(&d.join("sqsbeat.log"));
    let sent_ok = log
        .iter()
        .filter(|l| l["message"] == "sent" && l["span"]["entry"] == "ok")
        .count();
    assert!(
        sent_ok >= 3,
        "the healthy entry keeps firing: {}",
        log_text(d)
    );
    assert!(
        log.iter().any(|l| l["message"].as_str().is_some_and(
            |m| m.contains(r#"queue "absent.q" (SQS name "absent-q") does not exist"#)
        )),
        "start-up names the missing queue: {}",
        log_text(d)
    );
    let failed: Vec<_> = log
        .iter()
        .filter(|l| l["message"] == "send failed; will retry" && l["span"]["entry"] == "lost")
        .collect();
    assert!(!failed.is_empty(), "{}", log_text(d));
    assert!(
        log.iter()
            .all(|l| !(l["message"] == "sent" && l["span"]["entry"] == "lost")),
        "never marked sent"
    );
}

#[test]
fn unreachable_endpoint_keeps_run_alive_and_retrying() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let schedule = d.join("s.toml");
    std::fs::write(&schedule, "[entries.a]\ntask = \"a.b\"\nevery = \"1s\"\n").unwrap();
    let closed = format!("http://127.0.0.1:{}", stack::free_port());
    let mut beat = stack::sqsbeat_run(d, &closed, &schedule);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !log_text(d).contains("send failed; will retry") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        beat.child.try_wait().unwrap().is_none(),
        "run must keep running: {}",
        log_text(d)
    );
    let status = beat
        .terminate(Duration::from_secs(40))
        .expect("stops on SIGTERM");
    assert!(status.success());
    let log = log_text(d);
    assert!(log.contains("send failed; will retry"), "{log}");
    assert!(!log.contains("\"message\":\"sent\""), "{log}");
}

#[test]
fn no_credentials_fails_fast_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let schedule = d.join("s.toml");
    std::fs::write(&schedule, "[entries.a]\ntask = \"a.b\"\nevery = \"1s\"\n").unwrap();
    let out = stack::output_within(
        stack::sqsbeat_command(d, "http://127.0.0.1:9", &schedule)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
            .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
            .env("HOME", d)
            .env("AWS_CONFIG_FILE", d.join("none"))
            .env("AWS_SHARED_CREDENTIALS_FILE", d.join("none")),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no AWS credentials found"), "{err}");
}

#[test]
fn invalid_schedule_refuses_to_start_and_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let schedule = d.join("s.toml");
    let big = "x".repeat(700 * 1024);
    std::fs::write(
        &schedule,
        format!("[entries.spaced]\ntask = \"app tasks bad\"\nevery = \"1s\"\n\n[entries.huge]\ntask = \"a.b\"\nevery = \"1s\"\nargs = [\"{big}\"]\n"),
    )
    .unwrap();
    let out = stack::output_within(
        &mut stack::sqsbeat_command(d, "http://127.0.0.1:9", &schedule),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("s.toml:2: entry 'spaced': task name \\\"app tasks bad\\\" contains ' '"),
        "{err}"
    );
    assert!(
        err.contains("s.toml:8: entry 'huge': the task message is "),
        "{err}"
    );
    assert!(err.contains("not starting"), "{err}");
}

#[test]
fn predefined_queue_urls_are_used_without_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_moto, endpoint) = stack::moto(d);
    // The URL names a queue other than the entry's: only the predefined
    // map can route the message there (kombu keys it by the SQS name).
    stack::create_queue(&endpoint, "real-name");
    std::fs::write(
        d.join("sqsbeat.toml"),
        format!("[sqs.queues]\n\"virtual-q\" = \"{endpoint}/123456789012/real-name\"\n"),
    )
    .unwrap();
    let schedule = d.join("s.toml");
    std::fs::write(
        &schedule,
        "[entries.a]\ntask = \"a.b\"\nevery = \"1s\"\nqueue = \"virtual.q\"\n",
    )
    .unwrap();
    let mut beat = stack::sqsbeat_run(d, &endpoint, &schedule);
    std::thread::sleep(Duration::from_millis(3500));
    beat.terminate(Duration::from_secs(10)).expect("stops");
    let sent = json_lines(&d.join("sqsbeat.log"))
        .iter()
        .filter(|l| l["message"] == "sent")
        .count();
    assert!(sent >= 2, "{}", log_text(d));
    let code = format!(
        "import boto3; q = boto3.client('sqs', endpoint_url='{endpoint}', region_name='us-east-1', aws_access_key_id='x', aws_secret_access_key='y'); \
         print(q.get_queue_attributes(QueueUrl='{endpoint}/123456789012/real-name', AttributeNames=['ApproximateNumberOfMessages'])['Attributes']['ApproximateNumberOfMessages'])"
    );
    let out = std::process::Command::new(stack::python())
        .args(["-c", &code])
        .output()
        .unwrap();
    let in_queue: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(
        in_queue, sent,
        "every sent message is in the predefined queue"
    );
}

#[test]
fn a_second_run_on_the_same_sqlite_file_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let schedule = d.join("s.toml");
    std::fs::write(&schedule, "[entries.a]\ntask = \"a.b\"\nevery = \"1h\"\n").unwrap();
    let closed = format!("http://127.0.0.1:{}", stack::free_port());
    let mut first = stack::sqsbeat_run(d, &closed, &schedule);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !log_text(d).contains("this process is the one replica") {
        assert!(
            std::time::Instant::now() < deadline,
            "first run did not start: {}",
            log_text(d)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = stack::output_within(
        &mut stack::sqsbeat_command(d, &closed, &schedule),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another sqsbeat process is running on sqsbeat.db"),
        "{err}"
    );
    assert!(
        first.child.try_wait().unwrap().is_none(),
        "the first keeps running"
    );
    first.terminate(Duration::from_secs(10)).expect("stops");
}

#[test]
fn a_task_that_dies_stops_run_with_a_non_zero_status_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let schedule = d.join("s.toml");
    std::fs::write(&schedule, "[entries.a]\ntask = \"a.a\"\nevery = \"1h\"\n").unwrap();
    // No SQS needed: the releaser dies as it starts (debug-build failpoint).
    let out = stack::output_within(
        stack::sqsbeat_command(d, "http://127.0.0.1:9", &schedule)
            .env("SQSBEAT_FAILPOINT", "releaser"),
        Duration::from_secs(60),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a supervisor must see a failure"
    );
    let log = json_lines_of(&out.stderr);
    assert!(
        log.iter().any(|l| l["task"] == "releaser"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains("panicked"))),
        "the line names the task: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        log.iter().any(|l| l["message"] == "beat stopped"),
        "the other tasks were stopped, not left running"
    );
}

fn json_lines_of(bytes: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
