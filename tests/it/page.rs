//! The status page in a real headless browser: Debian's Chromium loads `/`
//! from a running `sqsbeat run` (SQLite, moto), runs the page's script,
//! which fetches `/api/status`, and the rendered DOM is checked: replicas
//! and roles, entries with their marks (a pause and its reason, the last
//! manual run), pending jobs by bucket, and no payload anywhere.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::http::get;
use crate::stack::{self, cli};

/// Debian's Chromium (package `chromium`).
fn chromium() -> PathBuf {
    let p = std::env::var_os("SQSBEAT_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        p.exists(),
        "the status page test needs a headless Chromium: `apt-get install chromium` (scripts/test installs it when run as root), or set SQSBEAT_CHROMIUM; looked for {}",
        p.display()
    );
    p
}

/// The DOM of `url` once the page's script has run (virtual time lets it
/// fetch and render before the dump).
fn rendered(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=5000",
        "--dump-dom",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(url);
    let out = stack::output_within(&mut cmd, Duration::from_secs(90));
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A raw request with `method`: (status code, the Allow header).
fn request(port: u16, method: &str, path: &str) -> (u16, Option<String>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let code = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
    let allow = raw
        .lines()
        .find_map(|l| l.strip_prefix("allow: ").map(str::to_string));
    (code, allow)
}

const SECRETS: [&str; 3] = ["sk-live-PAGE-SECRET", "4111-PAGE-SECRET", "hdr-PAGE-SECRET"];

#[test]
fn the_status_page_renders_in_chromium_without_payloads_or_actions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_moto, endpoint) = stack::moto(d);
    stack::create_queue(&endpoint, "reports");
    let port = stack::free_port();
    std::fs::write(
        d.join("sqsbeat.toml"),
        format!("[http]\naddr = \"127.0.0.1:{port}\"\n\n[schedules]\npaths = [\"s.toml\"]\n"),
    )
    .unwrap();
    let schedule = d.join("s.toml");
    std::fs::write(
        &schedule,
        r#"
[defaults]
queue = "reports"

[entries.nightly-report]
task = "app.tasks.nightly_report"
cron = "0 3 * * *"
timezone = "Europe/London"
kwargs = { api_key = "sk-live-PAGE-SECRET" }
headers = { x-token = "hdr-PAGE-SECRET" }

[entries.heartbeat]
task = "app.tasks.heartbeat"
every = "1s"
args = ["sk-live-PAGE-SECRET"]

[entries.broken-queue]
task = "app.tasks.lost"
every = "1s"
grace = "1s"
catch_up = "all"
queue = "missing-queue"

[entries.retired]
task = "app.tasks.retired"
every = "1h"
enabled = false
"#,
    )
    .unwrap();
    for (when, task) in [("2h", "app.tasks.invoice"), ("3d", "app.tasks.renew")] {
        let (code, _, err) = cli(
            d,
            None,
            Some(&endpoint),
            &[
                "schedule",
                task,
                "--in",
                when,
                "--queue",
                "reports",
                "--kwargs",
                r#"{"card": "4111-PAGE-SECRET"}"#,
            ],
        );
        assert_eq!(code, 0, "{err}");
    }
    let pause = [
        "entries",
        "pause",
        "nightly-report",
        "--until",
        "2h",
        "--reason",
        "deploy freeze",
    ];
    let run_now = ["entries", "run", "retired", "--by", "alice"];
    for args in [&pause[..], &run_now[..]] {
        let (code, _, err) = cli(d, None, Some(&endpoint), args);
        assert_eq!(code, 0, "{args:?}: {err}");
    }
    let mut cmd = stack::sqsbeat_command(d, &endpoint, &schedule);
    cmd.env_remove("SQSBEAT_HTTP_ADDR");
    let mut run = stack::Proc {
        child: cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(d.join("run.log")).unwrap())
            .spawn()
            .unwrap(),
    };
    // Until the leader has fired and published its overdue entry.
    stack::wait_for("a full status", Duration::from_secs(30), || {
        let (code, body) = std::net::TcpStream::connect(("127.0.0.1", port))
            .map(|_| get(port, "/api/status"))
            .unwrap_or((0, String::new()));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        code == 200
            && v["overdue"]["count"] == 1
            && v["entries"]["items"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|e| e["name"] == "heartbeat" && e["last_fire"].is_string())
            })
    });
    let (_, json) = get(port, "/api/status");
    let dom = rendered(&format!("http://127.0.0.1:{port}/"));
    let searched = rendered(&format!("http://127.0.0.1:{port}/?q=night"));
    let methods: Vec<(u16, Option<String>)> = ["POST", "PUT", "DELETE"]
        .iter()
        .map(|m| request(port, m, "/api/status"))
        .collect();
    assert!(
        run.terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );

    // What the page's script rendered, not the static HTML.
    assert!(dom.contains("served by "), "{dom}");
    for text in [
        "nightly-report",
        "0 3 * * * (Europe/London)",
        "heartbeat",
        "every 1s",
        "broken-queue",
        "retired",
        "<span class=\"tag leader\">leader</span>",
        "<span class=\"tag overdue\">overdue</span>",
        "<span class=\"tag disabled\">disabled</span>",
        "<span class=\"tag paused\">paused</span>",
        ": deploy freeze</div>",
        "manual run ",
        " by alice (sent)",
        "1 entry is overdue",
        "1–4 of 4",
        "within 1d",
        "app.tasks.invoice",
        "app.tasks.renew",
        "2 pending",
        "does not exist",
    ] {
        assert!(dom.contains(text), "{text:?} not rendered:\n{dom}");
    }
    assert!(
        dom.contains("<tr class=\"overdue\"><td class=\"mono\">broken-queue</td>"),
        "{dom}"
    );
    assert!(searched.contains("1–1 of 1 matching"), "{searched}");
    assert!(
        !searched.contains("<td class=\"mono\">heartbeat</td>"),
        "{searched}"
    );
    for secret in SECRETS {
        assert!(!dom.contains(secret), "{secret} on the page");
        assert!(!json.contains(secret), "{secret} in /api/status");
    }
    assert!(json.contains("nightly-report"), "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let item = |name: &str| {
        v["entries"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap()
            .clone()
    };
    let nightly = item("nightly-report");
    assert_eq!(
        (&nightly["paused"]["reason"], &nightly["overdue"]),
        (
            &serde_json::json!("deploy freeze"),
            &serde_json::json!(false)
        )
    );
    assert!(nightly["paused"]["until"].is_string(), "{nightly}");
    assert_eq!(item("retired")["last_manual_run"]["by"], "alice");
    for (code, allow) in methods {
        assert_eq!((code, allow.as_deref()), (405, Some("GET")), "no actions");
    }
}
