//! PostgreSQL outages under a running pair of replicas: the server stopped
//! in one test, the port blocked (a partition) in another, each for
//! `SQSBEAT_OUTAGE_SECS` (30 in the test suite; `scripts/faults long` adds
//! 300). The leader must
//! stop firing at once and resume after, with catch-up per each entry's
//! policy; one-off jobs due during the outage are released after it; a
//! real Celery worker judges that nothing was lost.
//!
//! The database is a private cluster (scripts/pg-tmp) so it can be stopped,
//! behind tests/fixtures/tcp_partition_proxy.py so its port can be cut.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqsbeat::wire::celery::fire_task_id;

use crate::stack::{self, Proc, json_lines};

/// A private PostgreSQL cluster, removed on drop.
struct Cluster {
    dir: PathBuf,
    url: String,
}

impl Cluster {
    fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sqsbeat-outage-")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        let out = Command::new(stack::repo().join("scripts/pg-tmp"))
            .arg("start")
            .arg(&dir)
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/pg-tmp");
        assert!(out.status.success(), "scripts/pg-tmp start failed");
        let printed = String::from_utf8(out.stdout).unwrap();
        let url = printed
            .trim()
            .strip_prefix("export DATABASE_URL=")
            .expect("pg-tmp prints the URL")
            .to_string();
        Cluster { dir, url }
    }

    fn port(&self) -> u16 {
        std::fs::read_to_string(self.dir.join("port"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn pg_tmp(&self, cmd: &str) {
        let st = Command::new(stack::repo().join("scripts/pg-tmp"))
            .arg(cmd)
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "scripts/pg-tmp {cmd}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(stack::repo().join("scripts/pg-tmp"))
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

/// Starts the partition proxy in front of `upstream_port`.
fn partition_proxy(d: &Path, upstream_port: u16) -> (Proc, u16, PathBuf) {
    let port = stack::free_port();
    let mode = d.join("pg-mode");
    std::fs::write(&mode, "pass").unwrap();
    let child = Command::new(stack::python())
        .arg(stack::repo().join("tests/fixtures/tcp_partition_proxy.py"))
        .arg(port.to_string())
        .arg(upstream_port.to_string())
        .arg(&mode)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("pg-proxy.log")).unwrap())
        .spawn()
        .expect("start the partition proxy");
    let p = Proc { child };
    stack::wait_for("partition proxy", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (p, port, mode)
}

fn log_time(l: &serde_json::Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(l["timestamp"].as_str()?)
        .ok()
        .map(|t| t.to_utc())
}

/// One outage: when it began and ended, and how.
struct Outage {
    how: &'static str,
    secs: u64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

#[test]
fn postgres_stopped_stops_firing_and_loses_nothing() {
    outages_lose_nothing("stopped");
}

#[test]
fn postgres_cut_off_stops_firing_and_loses_nothing() {
    outages_lose_nothing("cut off");
}

/// The outages of one kind, each `SQSBEAT_OUTAGE_SECS` long, under a pair
/// of replicas with a private cluster. One kind per test: the two run side
/// by side, and each waits out its own leases and jobs.
fn outages_lose_nothing(how: &'static str) {
    let outages: Vec<u64> = std::env::var("SQSBEAT_OUTAGE_SECS")
        .unwrap_or_else(|_| "30".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("SQSBEAT_OUTAGE_SECS: seconds, comma separated")
        })
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_moto, endpoint) = stack::moto(d);
    let (_proxy, proxy_port, mode) = partition_proxy(d, cluster.port());
    let via_proxy = cluster
        .url
        .replace(&format!(":{}/", cluster.port()), &format!(":{proxy_port}/"));
    let schedule = d.join("s.toml");
    std::fs::write(
        &schedule,
        "[defaults]\nqueue = \"pgo\"\ngrace = \"2s\"\n\n[entries.all]\ntask = \"e2e.all\"\nevery = \"1s\"\ncatch_up = \"all\"\n\n[entries.latest]\ntask = \"e2e.latest\"\nevery = \"1s\"\ncatch_up = \"latest\"\n",
    )
    .unwrap();
    std::fs::write(
        d.join("sqsbeat.toml"),
        "[sqs]\ncreate_missing_queues = true\n\n[releaser]\nwindow = \"1s\"\n",
    )
    .unwrap();
    let _worker = stack::worker(d, &endpoint, "pgo", "e2e.all,e2e.latest,e2e.job");
    let logs = ["a.log", "b.log"];
    let mut replicas: Vec<Proc> = logs
        .iter()
        .map(|l| stack::sqsbeat_replica(d, &endpoint, &schedule, l, Some(&via_proxy)))
        .collect();
    let sent_lines = |from: DateTime<Utc>, to: DateTime<Utc>| -> usize {
        logs.iter()
            .flat_map(|l| json_lines(&d.join(l)))
            .filter(|l| l["message"] == "sent")
            .filter(|l| log_time(l).is_some_and(|t| t > from && t < to))
            .count()
    };
    stack::wait_for("first fires", Duration::from_secs(30), || {
        sent_lines(DateTime::<Utc>::MIN_UTC, Utc::now()) > 2
    });

    // Jobs due every 2 s across every outage and recovery.
    let span: u64 = outages.iter().map(|s| s + 15).sum::<u64>() + 10;
    let first_due = Utc::now() + chrono::Duration::seconds(2);
    let jobs = rt.block_on(stack::insert_jobs(
        &cluster.url,
        "e2e.job",
        "pgo",
        first_due,
        chrono::Duration::seconds(2),
        (span / 2) as usize,
    ));

    let mut done: Vec<Outage> = Vec::new();
    for &secs in &outages {
        std::thread::sleep(Duration::from_secs(5));
        let from = Utc::now();
        match how {
            "stopped" => cluster.pg_tmp("down"),
            _ => std::fs::write(&mode, "block").unwrap(),
        }
        std::thread::sleep(Duration::from_secs(secs));
        match how {
            "stopped" => cluster.pg_tmp("up"),
            _ => std::fs::write(&mode, "pass").unwrap(),
        }
        let to = Utc::now();
        // Firing resumes: a send after the outage.
        stack::wait_for("fires after the outage", Duration::from_secs(60), || {
            sent_lines(to, Utc::now()) > 0
        });
        done.push(Outage {
            how,
            secs,
            from,
            to,
        });
    }
    // Past the last job's due instant, and a few on-time fires.
    let last_due = first_due + chrono::Duration::seconds(2 * jobs.len() as i64);
    while Utc::now() < last_due + chrono::Duration::seconds(3) {
        std::thread::sleep(Duration::from_millis(200));
    }
    // A pass cut off between its send and its settlement leaves its jobs
    // leased (`releasing`) until the lease ends (30 s); then a replica
    // releases them again.
    stack::wait_for("every job released", Duration::from_secs(60), || {
        rt.block_on(stack::unreleased_jobs(&cluster.url)).is_empty()
    });
    for (i, p) in replicas.iter_mut().enumerate() {
        assert!(
            p.terminate(Duration::from_secs(30))
                .is_some_and(|s| s.success()),
            "replica {i} did not stop cleanly"
        );
    }

    // While the database was gone no fire was decided: a fire is sent only
    // after its claim is written. A fire claimed just before it went may
    // still be logged during it (its confirm waits on the database), so
    // the check is on the slot, not on when the line was written.
    for o in &done {
        let decided_during: Vec<serde_json::Value> = logs
            .iter()
            .flat_map(|l| json_lines(&d.join(l)))
            .filter(|l| l["message"] == "sent")
            .filter(|l| log_time(l).is_some_and(|t| t > o.from && t < o.to))
            .filter(|l| {
                l["slot"]
                    .as_str()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .is_some_and(|s| s.to_utc() > o.from + chrono::Duration::seconds(1))
            })
            .collect();
        assert!(
            decided_during.is_empty(),
            "fires decided while PostgreSQL was {} ({} s): {decided_during:#?}",
            o.how,
            o.secs
        );
        let stopped = logs
            .iter()
            .flat_map(|l| json_lines(&d.join(l)))
            .filter(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("stopped firing"))
            })
            .filter_map(|l| log_time(&l))
            .any(|t| t >= o.from && t <= o.from + chrono::Duration::seconds(5));
        assert!(
            stopped,
            "no replica said it stopped firing within 5 s of PostgreSQL being {}",
            o.how
        );
    }

    let ledger = rt.block_on(async {
        let s = sqsbeat::store::PgStore::connect(&cluster.url, "sqsbeat")
            .await
            .unwrap();
        sqlx::query("SELECT entry, slot, outcome, reason FROM ledger ORDER BY entry, slot")
            .fetch_all(s.pool())
            .await
            .unwrap()
    });
    let ledger: Vec<(String, DateTime<Utc>, String, Option<String>)> = ledger
        .iter()
        .map(|r| {
            (
                r.get("entry"),
                r.get("slot"),
                r.get("outcome"),
                r.get("reason"),
            )
        })
        .collect();
    // Every slot of each entry is in the ledger, sent or missed by policy:
    // `all` sends every late slot (up to its bound of 100), `latest` only
    // the most recent.
    let longest = outages.iter().max().copied().unwrap_or(0);
    for entry in ["all", "latest"] {
        let rows: Vec<_> = ledger.iter().filter(|r| r.0 == entry).collect();
        for w in rows.windows(2) {
            assert_eq!(
                (w[1].1 - w[0].1).num_milliseconds(),
                1000,
                "{entry}: a slot is missing between {} and {}",
                w[0].1,
                w[1].1
            );
        }
        for r in &rows {
            match (entry, r.2.as_str(), r.3.as_deref().unwrap_or("")) {
                (_, "sent", _) => {}
                ("latest", "missed", why) if why.contains("catch_up = latest") => {}
                ("all", "missed", why) if longest > 95 && why.contains("bound") => {}
                other => panic!("{entry} slot {}: {other:?}", r.1),
            }
        }
    }
    let unreleased = rt.block_on(stack::unreleased_jobs(&cluster.url));
    assert!(unreleased.is_empty(), "jobs not released: {unreleased:?}");

    let fires: BTreeSet<String> = ledger
        .iter()
        .filter(|r| r.2 == "sent")
        .map(|r| fire_task_id(&r.0, r.1).to_string())
        .collect();
    let job_ids: BTreeSet<String> = jobs.iter().map(|j| j.to_string()).collect();
    let claimed: BTreeSet<String> = ledger
        .iter()
        .map(|r| fire_task_id(&r.0, r.1).to_string())
        .chain(job_ids.iter().cloned())
        .collect();
    let (fired, released) = stack::judge(d, Duration::from_secs(120), &fires, &job_ids, &claimed);
    let missed = ledger.iter().filter(|r| r.2 == "missed").count();
    for o in &done {
        eprintln!(
            "outage: PostgreSQL {} for {} s ({} .. {})",
            o.how,
            o.secs,
            o.from.format("%T"),
            o.to.format("%T")
        );
    }
    eprintln!(
        "outage: slots {} ({} sent, {} missed by catch_up policy); fires {fired}; jobs {released}",
        ledger.len(),
        fires.len(),
        missed,
    );
    assert_eq!(fired.lost, 0, "fires lost");
    assert_eq!(released.lost, 0, "jobs lost");
}
