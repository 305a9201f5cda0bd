//! The real `sqsbeat` binary on schedule files in a temp dir.

use std::path::Path;
use std::process::{Command, Output};

fn sqsbeat(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sqsbeat"))
        .args(args)
        .current_dir(dir)
        // No stray config from the developer's environment.
        .env_remove("SQSBEAT_SCHEDULES_PATHS")
        .env_remove("SQSBEAT_SCHEDULES_TIMEZONE")
        .env_remove("DATABASE_URL")
        .env_remove("SQSBEAT_DATABASE_URL")
        .output()
        .expect("run sqsbeat")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(dir: &Path, name: &str, body: &str) {
    std::fs::write(dir.join(name), body).unwrap();
}

#[test]
fn check_accepts_the_example_schedules() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = sqsbeat(repo, &["check", "schedules"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("ok: "),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn check_reports_every_error_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.toml",
        "[entries.bad-cron]\ntask = \"a.b\"\ncron = \"* * 32 * *\"\n\n[entries.tz]\ntask = \"a.b\"\nevery = \"1m\"\ntimezone = \"Nowhere/Land\"\n\n[entries.x]\ntask = \"a.b\"\nevery = \"1m\"\n",
    );
    write(
        dir.path(),
        "b.toml",
        "[entries.x]\ntask = \"a.b\"\ncron = \"@daily\"\nevery = \"1h\"\nfoo = 1\n",
    );
    let out = sqsbeat(dir.path(), &["check", "."]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for want in [
        "./a.toml:3: entry 'bad-cron': invalid cron",
        "./a.toml:8: entry 'tz': unknown timezone \"Nowhere/Land\"",
        "./b.toml:3: entry 'x': set exactly one of `cron`, `crontab` or `every`",
        "./b.toml:5: entry 'x': unknown key `foo`",
        "./b.toml:1: entry 'x': duplicate entry name; first defined at ./a.toml:10",
        "5 error(s)",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn check_warns_but_passes_on_feb_30_and_day_rule_differences() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "s.toml",
        "[entries.f]\ntask = \"a.b\"\ncron = \"0 0 30 2 *\"\n\n[entries.g]\ntask = \"a.b\"\ncron = \"0 0 13 * 5\"\n",
    );
    let out = sqsbeat(dir.path(), &["check", "s.toml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("s.toml:3: warning: entry 'f': 0 0 30 2 * never fires"),
        "{err}"
    );
    assert!(
        err.contains("s.toml:7: warning: entry 'g'") && err.contains("OR"),
        "{err}"
    );
}

#[test]
fn check_missing_path_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = sqsbeat(dir.path(), &["check", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("nope: no such file or directory"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn next_json_lines_across_dst() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "s.toml",
        "[entries.ny]\ntask = \"a.b\"\ncron = \"30 2 * * *\"\ntimezone = \"America/New_York\"\n",
    );
    let out = sqsbeat(
        dir.path(),
        &[
            "next",
            "s.toml",
            "--count",
            "3",
            "--after",
            "2026-03-07T00:00:00Z",
            "--output",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(&str, &str)> = lines
        .iter()
        .map(|v| (v["fire_at"].as_str().unwrap(), v["local"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("2026-03-07T07:30:00Z", "2026-03-07T02:30:00-05:00"),
            ("2026-03-08T07:00:00Z", "2026-03-08T03:00:00-04:00"),
            ("2026-03-09T06:30:00Z", "2026-03-09T02:30:00-04:00"),
        ]
    );
    assert!(lines.iter().all(|v| v["entry"] == "ny"));
}

#[test]
fn next_table_says_when_dst_moves_or_merges_a_fire() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "s.toml",
        "[entries.ny]\ntask = \"a.b\"\ncron = \"30 1 * * *\"\ntimezone = \"America/New_York\"\n",
    );
    let out = sqsbeat(
        dir.path(),
        &[
            "next",
            "s.toml",
            "--count",
            "2",
            "--after",
            "2026-10-31T12:00:00Z",
        ],
    );
    let stdout = text(&out.stdout);
    let expected = "\
ENTRY  FIRE AT (UTC)         LOCAL                      NOTE
ny     2026-11-01T05:30:00Z  2026-11-01T01:30:00-04:00  merged: 01:30 repeats (DST), fires on the first pass only
ny     2026-11-02T06:30:00Z  2026-11-02T01:30:00-05:00
";
    assert_eq!(stdout, expected);
}

#[test]
fn next_filters_by_entry_and_rejects_unknown_names() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = sqsbeat(
        repo,
        &[
            "next",
            "schedules",
            "--entry",
            "heartbeat",
            "--count",
            "2",
            "--after",
            "2026-11-21T00:00:00Z",
            "--output",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "{\"entry\":\"heartbeat\",\"fire_at\":\"2026-11-21T00:00:10Z\",\"local\":\"2026-11-21T00:00:10+00:00\"}\n\
         {\"entry\":\"heartbeat\",\"fire_at\":\"2026-11-21T00:00:20Z\",\"local\":\"2026-11-21T00:00:20+00:00\"}\n"
    );
    let out = sqsbeat(repo, &["next", "schedules", "--entry", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no entry named \"nope\""));
}

#[test]
fn next_refuses_an_invalid_schedule_and_a_bad_instant() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "s.toml", "[entries.a]\ntask = \"a.b\"\n");
    let out = sqsbeat(dir.path(), &["next", "s.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("s.toml:1: entry 'a': no schedule"));
    let out = sqsbeat(dir.path(), &["next", "s.toml", "--after", "tomorrow"]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
    assert!(text(&out.stderr).contains("RFC 3339"));
}

#[test]
fn config_file_and_environment_choose_the_schedule_paths() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("a")).unwrap();
    std::fs::create_dir(dir.path().join("b")).unwrap();
    write(
        &dir.path().join("a"),
        "s.toml",
        "[entries.from-a]\ntask = \"a.b\"\nevery = \"1m\"\n",
    );
    write(
        &dir.path().join("b"),
        "s.toml",
        "[entries.from-b]\ntask = \"a.b\"\nevery = \"1m\"\n",
    );
    write(dir.path(), "sqsbeat.toml", "[schedules]\npaths = [\"a\"]\n");
    let out = sqsbeat(dir.path(), &["next", "--count", "1", "--output", "json"]);
    assert!(
        text(&out.stdout).contains("from-a"),
        "{}",
        text(&out.stdout)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sqsbeat"))
        .args(["next", "--count", "1", "--output", "json"])
        .current_dir(dir.path())
        .env("SQSBEAT_SCHEDULES_PATHS", "b")
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).contains("from-b"),
        "env beats file: {}",
        text(&out.stdout)
    );
}

#[test]
fn a_command_without_an_aws_region_says_so_in_one_line_without_the_sdk_probes() {
    // A laptop: no region anywhere, instance metadata not disabled.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sqsbeat"))
        .args(["schedule", "app.tasks.report", "--in", "1m"])
        .current_dir(dir.path())
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .env_remove("SQSBEAT_SQS_REGION")
        .env_remove("SQSBEAT_LOG")
        .env_remove("DATABASE_URL")
        .env_remove("SQSBEAT_DATABASE_URL")
        .env("HOME", dir.path())
        .output()
        .expect("run sqsbeat");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("warning: stored, but SQS is not reachable"),
        "{stderr}"
    );
    assert!(
        lines[0].contains("AWS_REGION"),
        "says how to fix it: {stderr}"
    );
    assert!(text(&out.stdout).contains("(pending)"));
}

#[test]
fn the_sidecar_example_never_gates_the_web_pod_on_the_scheduler() {
    // A readiness probe on the sidecar makes the whole pod unready whenever
    // the scheduler's database is slow or away.
    let yaml = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/sidecar.yaml"),
    )
    .unwrap();
    let probes: Vec<&str> = yaml
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("readinessProbe:") || l.starts_with("startupProbe:"))
        .collect();
    assert!(probes.is_empty(), "{probes:?}");
    assert!(yaml.contains("path: /healthz"), "liveness stays");
}

/// Kubernetes waits 30 s by default after SIGTERM, then kills; sqsbeat
/// takes up to `DRAIN` (40 s) to finish and record the sends in flight.
#[test]
fn the_sidecar_example_gives_sqsbeat_longer_than_its_drain_to_stop() {
    let yaml = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/sidecar.yaml"),
    )
    .unwrap();
    let grace: Vec<u64> = yaml
        .lines()
        .filter_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds:"))
        .map(|v| v.trim().parse().unwrap())
        .collect();
    assert_eq!(grace.len(), 1, "set once, on the pod: {grace:?}");
    assert!(
        grace[0] > sqsbeat::runtime::DRAIN.as_secs(),
        "terminationGracePeriodSeconds {} is not above the drain of {:?}",
        grace[0],
        sqsbeat::runtime::DRAIN
    );
}

/// `run` and `check` refused to work without a schedule file, although a
/// deployment whose entries all live in the database (or that only
/// releases one-off jobs) has none. No files is a valid, empty schedule:
/// `check` says so on stderr and succeeds. A path the user named that does
/// not exist stays an error, wherever it was named.
#[test]
fn check_with_no_schedule_files_succeeds_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = sqsbeat(d, &["check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ok: 0 entries in 0 file(s)\n");
    assert_eq!(
        text(&out.stderr),
        "note: no schedule files (*.toml) in schedules; only entries from the database fire\n"
    );
    std::fs::create_dir(d.join("empty")).unwrap();
    let out = sqsbeat(d, &["check", "empty"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    write(d, "sqsbeat.toml", "[schedules]\npaths = [\"missing\"]\n");
    let out = sqsbeat(d, &["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("missing: no such file or directory"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_file(d.join("sqsbeat.toml")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sqsbeat"))
        .arg("check")
        .current_dir(d)
        .env_remove("DATABASE_URL")
        .env("SQSBEAT_SCHEDULES_PATHS", "also-missing")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

/// The daemon's start-up, in process: with no schedule file it prepares to
/// serve an empty schedule (the entries table and one-off jobs still work).
#[tokio::test]
async fn run_prepares_to_serve_with_no_schedule_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let env = |k: &str| (k == "SQSBEAT_DATABASE_PATH").then(|| db.display().to_string());
    let config = sqsbeat::config::parse("none", None, &env).unwrap();
    let paths = sqsbeat::entry::file::SchedulePaths {
        paths: vec![dir.path().join("schedules")],
        named: false,
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let prepared = sqsbeat::runtime::prepare(&config, &paths, None, &shutdown)
        .await
        .unwrap()
        .expect("an empty schedule is valid");
    assert!(prepared.entries.is_empty());
}
