"""Celery beat and sqsbeat side by side on the same schedule and endpoint.

Run with the project's venv (scripts/setup-python), from the repository:

  .venv/bin/python benches/bench.py compare --n 10 1000 --runs 3 --window 60
  .venv/bin/python benches/bench.py compare --n 1000000 --only sqsbeat
  .venv/bin/python benches/bench.py compare --n 100000 --only sqsbeat --source table --store postgres
  .venv/bin/python benches/bench.py burst --n 10000 --endpoint sink moto
  .venv/bin/python benches/bench.py smoke

Each run starts the endpoint (examples/sqs_sink.rs, or moto through
benches/moto_fast.py), then one scheduler on the generated schedule, and
samples the scheduler's /proc/<pid>/stat (CPU) and status (RSS) once a
second. Both endpoints write one line per accepted message: accepted instant,
nominal instant (from the message headers) and entry, so lateness is
"nominal fire instant -> the endpoint accepted the message" for both.

sqsbeat reads the generated schedule from a TOML file (`--source toml`, the
default) or from its entries table (`--source table`), filled before the
process starts, in the store `--store` names: a SQLite file, or a fresh
PostgreSQL database on $DATABASE_URL's server (dropped after the run). Beat
always reads its own copy (benches/beat_app.py).

Results: a JSON file per run and a Markdown table under --out
(default bench-results/), printed at the end.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("VENV", ROOT / ".venv"))
SQSBEAT = Path(os.environ.get("SQSBEAT_BIN", ROOT / "target/release/sqsbeat"))
# CI's smoke run points both at the debug build it already has, so that it
# does not compile the whole dependency tree a second time in release.
SINK = Path(os.environ.get("SQSBEAT_SINK", ROOT / "target/release/examples/sqs_sink"))
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------- schedule


def generate(n, kind):
    """The schedule as a list of entries.

    mix: one 1 s probe; of the rest, 10 % `* * * * *` (all fire at second 0)
    and 90 % 60 s intervals with phases spread evenly over the minute.
    burst: the probe and n - 1 `* * * * *` entries.
    """
    entries = [{"name": "probe", "every_s": 1, "phase_s": 0.0}]
    rest = n - 1
    n_cron = rest if kind == "burst" else rest // 10
    n_int = rest - n_cron
    width = len(str(max(n, 1)))
    for i in range(n_cron):
        entries.append({"name": f"cron-{i:0{width}}", "cron": "* * * * *"})
    for i in range(n_int):
        phase = round(i * 60.0 / n_int, 3)
        entries.append({"name": f"int-{i:0{width}}", "every_s": 60, "phase_s": phase})
    for e in entries:
        e["task"] = "bench.tick"
        e["queue"] = "bench"
    return entries


def write_toml(entries, path):
    with open(path, "w") as f:
        for e in entries:
            f.write(f'[entries.{e["name"]}]\ntask = "{e["task"]}"\nqueue = "{e["queue"]}"\n')
            f.write(f'kwargs = {{ entry = "{e["name"]}" }}\n')
            if "cron" in e:
                f.write(f'cron = "{e["cron"]}"\n')
            else:
                anchor = interval_anchor(e)
                f.write(f'every = "{e["every_s"]}s"\n')
                f.write(f'anchor = "{anchor.isoformat(timespec="milliseconds").replace("+00:00", "Z")}"\n')


def interval_anchor(e):
    return datetime.fromtimestamp(e["phase_s"], timezone.utc)


def table_rows(entries):
    """The entries as entries-table rows: (name, task, queue, kwargs JSON,
    cron, every, anchor)."""
    for e in entries:
        kwargs = json.dumps({"entry": e["name"]})
        if "cron" in e:
            yield e["name"], e["task"], e["queue"], kwargs, e["cron"], None, None
        else:
            yield e["name"], e["task"], e["queue"], kwargs, None, f'{e["every_s"]}s', interval_anchor(e)


def migrate(env, work):
    """Creates the store's schema with `sqsbeat migrate`."""
    r = subprocess.run([str(SQSBEAT), "migrate"], env=env, cwd=work, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"sqsbeat migrate failed: {r.stderr[-2000:]}")


def fill_sqlite(entries, db):
    import sqlite3

    con = sqlite3.connect(db)
    rows = (
        (n, t, q, k, c, ev, a.isoformat(timespec="microseconds").replace("+00:00", "Z") if a else None)
        for n, t, q, k, c, ev, a in table_rows(entries)
    )
    with con:
        con.executemany(
            "INSERT INTO entries (name, task, queue, kwargs, cron, every, anchor) VALUES (?, ?, ?, ?, ?, ?, ?)", rows
        )
    con.close()


def fill_postgres(entries, url, schema):
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        with con.cursor().copy(
            f"COPY {schema}.entries (name, task, queue, kwargs, cron, every, anchor) FROM STDIN"
        ) as copy:
            for row in table_rows(entries):
                copy.write_row(row)


class PgDatabase:
    """A throwaway database on $DATABASE_URL's server, for one run."""

    def __init__(self):
        import psycopg

        base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
        self.name = f"sqsbeat_bench_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
        self.admin = base
        with psycopg.connect(base, autocommit=True) as con:
            con.execute(f"CREATE DATABASE {self.name}")
        self.url = base.rsplit("/", 1)[0] + "/" + self.name

    def drop(self):
        import psycopg

        with psycopg.connect(self.admin, autocommit=True) as con:
            con.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


def expected_fires(entries, lo, hi):
    """Nominal fires with lo <= t < hi (unix seconds)."""
    total = 0
    minutes = len(range(int(-(-lo // 60)), int(-(-hi // 60))))
    for e in entries:
        if "cron" in e:
            total += minutes
        else:
            every, phase = e["every_s"], e["phase_s"]
            first = -(-(lo - phase) // every)
            last = -(-(hi - phase) // every)
            total += int(last - first)
    return total


# ---------------------------------------------------------------- processes


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"endpoint exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


class ThreadCpu:
    """CPU time of a process's threads in nanoseconds, from
    /proc/PID/task/TID/schedstat: /proc/PID/stat counts in clock ticks
    (10 ms), coarser than a whole window's CPU at low N. `sample()` once a
    second keeps each thread's last value, so a thread that ends during the
    window still counts up to its last sample; one born after `start()`
    counts from zero."""

    def __init__(self, pid):
        self.pid, self.first, self.last = pid, {}, {}

    def _read(self):
        out = {}
        try:
            tids = os.listdir(f"/proc/{self.pid}/task")
        except OSError:
            return out
        for tid in tids:
            try:
                with open(f"/proc/{self.pid}/task/{tid}/schedstat") as f:
                    v = f.read().split()
                    # Nanoseconds on the CPU, and times put on a CPU: each
                    # wake-up of a sleeping thread is one.
                    out[tid] = (int(v[0]), int(v[2]))
            except (OSError, ValueError, IndexError):
                pass
        return out

    def start(self):
        self.first = self._read()
        self.last = dict(self.first)

    def sample(self):
        self.last.update(self._read())

    def seconds(self):
        return sum(v[0] - self.first.get(tid, (0, 0))[0] for tid, v in self.last.items()) / 1e9

    def runs(self):
        """Times the threads were put on a CPU: wake-ups, near enough."""
        return sum(v[1] - self.first.get(tid, (0, 0))[1] for tid, v in self.last.items())


class Host:
    """The machine's CPU accounting from /proc/stat between two instants:
    steal (the hypervisor ran someone else while this guest wanted the
    CPU), busy and idle, in % of all CPUs; and the load average."""

    @staticmethod
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal (guest time is in user)
        return {"idle": v[3] + v[4], "steal": v[7], "total": sum(v[:8])}

    def __init__(self):
        self.t0 = Host.read()

    def since(self):
        t1 = Host.read()
        total = max(1, t1["total"] - self.t0["total"])
        pct = lambda k: round(100 * (t1[k] - self.t0[k]) / total, 1)
        with open("/proc/loadavg") as f:
            load = float(f.read().split()[0])
        return {"steal_pct": pct("steal"), "idle_pct": pct("idle"), "load1": load}


def rss_mib(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


class Endpoint:
    def __init__(self, kind, work):
        self.kind, self.port = kind, free_port()
        self.record = work / f"accepted-{kind}.csv"
        if kind == "sink":
            cmd = [str(SINK), str(self.port), str(work / "sink-stats.json"), str(self.record)]
        else:
            cmd = [str(VENV / "bin/python"), str(ROOT / "benches/moto_fast.py"), str(self.port), str(self.record)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=aws_env())
        wait_port(self.port, self.proc)
        if kind == "moto":
            import boto3

            boto3.client(
                "sqs", endpoint_url=self.url(), region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench"
            ).create_queue(QueueName="bench")

    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def cpu(self):
        return cpu_seconds(self.proc.pid)

    def stop(self):
        time.sleep(1.2)  # both endpoints flush their record every 0.5 s
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def accepted(self):
        out = []
        with open(self.record) as f:
            for line in f:
                parts = line.rstrip("\n").split(",", 2)
                if len(parts) == 3:
                    out.append((float(parts[0]) / 1000, float(parts[1]) / 1000, parts[2]))
        return out


def aws_env(**extra):
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    env.pop("DATABASE_URL", None)
    env.update(extra)
    return env


class Scheduler:
    """One scheduler process; `ready` is the instant it finished starting."""

    def __init__(self, which, entries, endpoint, work, source="toml", store="sqlite", wrap=()):
        self.which, self.work = which, work
        self.ready = None
        self.pg = None
        sched_json = work / "schedule.json"
        sched_json.write_text(json.dumps(entries))
        marks = work / "marks.jsonl"
        marks.write_text("")
        self.log = open(work / f"{which}.log", "w")
        if which == "beat":
            state = work / "beat-state"
            shutil.rmtree(state, ignore_errors=True)
            state.mkdir()
            env = aws_env(
                BENCH_SCHEDULE=str(sched_json), BENCH_MARKS=str(marks), BENCH_SQS_PORT=str(endpoint.port),
                PYTHONPATH=str(ROOT / "benches"),
            )
            cmd = [str(VENV / "bin/celery"), "-A", "beat_app", "beat", "-s", str(state / "schedule"), "--loglevel", "WARNING"]
        else:
            db = work / "sqsbeat.db"
            for p in work.glob("sqsbeat.db*"):
                p.unlink()
            env = aws_env(
                SQSBEAT_SQS_ENDPOINT_URL=endpoint.url(), SQSBEAT_SQS_REGION="us-east-1",
                SQSBEAT_SQS_CREATE_MISSING_QUEUES="true", SQSBEAT_DATABASE_PATH=str(db),
                SQSBEAT_HTTP_ADDR="127.0.0.1:0", SQSBEAT_LOG_FORMAT="json",
            )
            if store == "postgres":
                self.pg = PgDatabase()
                env.update(SQSBEAT_DATABASE_URL=self.pg.url, SQSBEAT_DATABASE_SCHEMA="sqsbeat")
            if source == "toml":
                toml = work / "schedule.toml"
                if not toml.exists():
                    write_toml(entries, toml)
                cmd = [*wrap, str(SQSBEAT), "run", str(toml)]
            else:
                # Filled before the process starts: start-up is reading the
                # table, as a replica restarting on a customer schedule does.
                migrate(env, work)
                if store == "postgres":
                    fill_postgres(entries, self.pg.url, "sqsbeat")
                else:
                    fill_sqlite(entries, db)
                empty = work / "no-schedules"
                empty.mkdir(exist_ok=True)
                cmd = [*wrap, str(SQSBEAT), "run", str(empty)]
        self.t0 = time.time()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.PIPE, env=env, cwd=work, text=True)
        self.marks = marks
        self.tail = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            if self.ready is None and self.which == "sqsbeat" and "leading: firing" in line:
                self.ready = time.time()
            self.log.write(line)
            if len(self.tail) < 50:
                self.tail.append(line)

    def wait_ready(self, timeout):
        end = time.time() + timeout
        while time.time() < end:
            if self.which == "beat" and self.ready is None:
                for line in self.marks.read_text().splitlines():
                    m = json.loads(line)
                    if m["mark"] == "first_tick":
                        self.ready = m["t"]
            if self.ready is not None:
                return self.ready - self.t0
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.which} exited with {self.proc.returncode}: {''.join(self.tail)[-2000:]}")
            time.sleep(0.01)
        raise RuntimeError(f"{self.which} not ready after {timeout} s")

    def stop(self, timeout=30):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        if self.pg:
            self.pg.drop()


# ---------------------------------------------------------------- measures


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def run_steady(which, n, entries, endpoint_kind, window, warmup, work, source="toml", store="sqlite"):
    ep = Endpoint(endpoint_kind, work)
    s = Scheduler(which, entries, ep, work, source, store)
    try:
        startup = s.wait_ready(timeout=120)
        time.sleep(5)
        rss_start = rss_mib(s.proc.pid)
        time.sleep(max(0.0, warmup - 5))
        lo = time.time()
        host = Host()
        threads = ThreadCpu(s.proc.pid)
        threads.start()
        cpu0, ep_cpu0 = cpu_seconds(s.proc.pid), ep.cpu()
        rss_max = rss_start
        while time.time() < lo + window:
            time.sleep(1)
            if s.proc.poll() is not None:
                raise RuntimeError(f"{which} exited during the window: {''.join(s.tail)[-2000:]}")
            threads.sample()
            rss_max = max(rss_max, rss_mib(s.proc.pid))
        hi = time.time()
        threads.sample()
        cpu1, ep_cpu1 = cpu_seconds(s.proc.pid), ep.cpu()
        machine = host.since()
        rss_end = rss_mib(s.proc.pid)
        # Fires due just before the end are still being sent.
        time.sleep(2)
    finally:
        s.stop()
        ep.stop()
    acc = ep.accepted()
    first_fire = min((a for a, t, e in acc), default=None)
    in_window = [(a, t, e) for a, t, e in acc if lo <= t < hi]
    late = [a - t for a, t, e in in_window]
    probe = [a - t for a, t, e in in_window if e == "probe"]
    # Fires that share their instant with no crowd: the probe and the
    # interval entries (the `* * * * *` tenth all fall due at :00).
    lone = [a - t for a, t, e in in_window if not e.startswith("cron-")]
    sent_in_window = sum(1 for a, t, e in acc if lo <= a < hi)
    due = expected_fires(entries, lo, hi)
    cpu = threads.seconds()
    return {
        "scheduler": which, "n": n, "endpoint": endpoint_kind, "window_s": round(hi - lo, 1),
        "source": "beat_app" if which == "beat" else f"{source}/{store}",
        "startup_s": round(startup, 3),
        # Spawn to the first message accepted: start-up plus the wait for
        # the first due slot (the probe's is at most 1 s away).
        "first_fire_s": round(first_fire - s.t0, 3) if first_fire else None,
        "rss_after_startup_mib": round(rss_start, 1),
        "rss_end_mib": round(rss_end, 1), "rss_max_mib": round(rss_max, 1),
        "cpu_s_per_min": round(cpu / (hi - lo) * 60, 3),
        "cpu_ms_per_msg": round(cpu * 1000 / sent_in_window, 4) if sent_in_window else None,
        "wakeups_per_msg": round(threads.runs() / sent_in_window, 1) if sent_in_window else None,
        "endpoint_cpu_ms_per_msg": round((ep_cpu1 - ep_cpu0) * 1000 / sent_in_window, 4) if sent_in_window else None,
        # What bounds a run that falls behind: the scheduler, the endpoint
        # or the machine (`idle_pct` of the host below).
        "endpoint_cpu_s_per_min": round((ep_cpu1 - ep_cpu0) / (hi - lo) * 60, 3),
        "sent_in_window": sent_in_window,
        "due": due, "sent_of_due": len({(t, e) for a, t, e in in_window}),
        "lateness_p50_ms": ms(pct(late, 50)), "lateness_p99_ms": ms(pct(late, 99)),
        "lateness_max_ms": ms(max(late) if late else None),
        "probe_p99_ms": ms(pct(probe, 99)),
        "lone_p99_ms": ms(pct(lone, 99)),
        # The same CPU in /proc/PID/stat's clock ticks, as a cross-check.
        "cpu_ms_per_msg_ticks": round((cpu1 - cpu0) * 1000 / sent_in_window, 4) if sent_in_window else None,
        **machine,
    }


def run_burst(which, n, endpoint_kind, work, observe=40, source="toml", store="sqlite"):
    entries = generate(n, "burst")
    ep = Endpoint(endpoint_kind, work)
    # Start 25-35 s before a minute, so the scheduler is ready before :00.
    while not (22 <= time.time() % 60 <= 32):
        time.sleep(0.2)
    s = Scheduler(which, entries, ep, work, source, store)
    try:
        startup = s.wait_ready(timeout=25)
        minute = (time.time() // 60 + 1) * 60
        threads = ThreadCpu(s.proc.pid)
        while time.time() < minute:
            threads.start()
            time.sleep(0.05)
        host = Host()
        while time.time() < minute + observe:
            time.sleep(1)
            threads.sample()
        machine = host.since()
    finally:
        s.stop()
        ep.stop()
    acc = ep.accepted()
    burst = sorted(a for a, t, e in acc if e.startswith("cron-") and abs(t - minute) < 0.001)
    probe = [a - t for a, t, e in acc if e == "probe" and minute <= t < minute + observe]
    span = (burst[-1] - burst[0]) if len(burst) > 1 else None
    return {
        "scheduler": which, "n": n - 1, "endpoint": endpoint_kind,
        "source": "beat_app" if which == "beat" else f"{source}/{store}", "startup_s": round(startup, 3),
        "sent": len(burst), "observed_s": observe,
        "first_to_last_s": round(span, 3) if span else None,
        "msg_per_s": round(len(burst) / span) if span else None,
        "first_after_minute_ms": ms(burst[0] - minute) if burst else None,
        "cpu_ms_per_msg": round(threads.seconds() * 1000 / len(burst), 4) if burst else None,
        "probe_p99_ms": ms(pct(probe, 99)), "probe_max_ms": ms(max(probe) if probe else None),
        **machine,
    }


def run_idle(which, work, secs):
    """One hourly entry, nothing else: what a scheduler costs while it
    waits (the sink endpoint; no message is due in the window unless it
    spans the top of an hour)."""
    entries = [{"name": "hourly", "cron": "0 * * * *", "task": "bench.tick", "queue": "bench"}]
    ep = Endpoint("sink", work)
    s = Scheduler(which, entries, ep, work)
    try:
        s.wait_ready(timeout=60)
        time.sleep(5)
        host = Host()
        threads = ThreadCpu(s.proc.pid)
        threads.start()
        lo = time.time()
        while time.time() < lo + secs:
            time.sleep(1)
            threads.sample()
        hi = time.time()
        machine = host.since()
    finally:
        s.stop()
        ep.stop()
    cpu = threads.seconds()
    return {"scheduler": which, "idle_s": round(hi - lo, 1), "cpu_ms_per_min": round(cpu * 1000 / (hi - lo) * 60, 2),
            "cpu_pct_of_core": round(100 * cpu / (hi - lo), 3),
            "wakeups_per_s": round(threads.runs() / (hi - lo), 2), **machine}


def run_release(n, total, replicas):
    """benches/release_throughput.sh, parsed."""
    env = dict(os.environ, N=str(n), TOTAL=str(total), R=str(replicas), BIN=str(SQSBEAT), TIMEOUT="400")
    env.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    host = Host()
    r = subprocess.run(["bash", str(ROOT / "benches/release_throughput.sh")], env=env, capture_output=True, text=True)
    out = {"n_due": n, "pending": total, "replicas": replicas, **host.since()}
    for line in r.stdout.splitlines():
        if line.startswith("release:"):
            out["jobs_per_s"] = int(line.split(" = ")[1].split()[0])
            out["released"] = int(line.split("released=")[1].split()[0])
        elif line.startswith("cpu s:"):
            out["cpu"] = line[len("cpu s: "):]
    if r.returncode != 0 or "jobs_per_s" not in out:
        out["error"] = (r.stderr + r.stdout)[-1500:]
    return out


def ms(x):
    return None if x is None else round(x * 1000, 1)


# ---------------------------------------------------------------- reports


def median_row(runs, keys):
    row = {}
    for k in keys:
        vals = [r[k] for r in runs if r.get(k) is not None]
        if not vals:
            row[k] = "n/a"
        elif len(vals) == 1:
            row[k] = fmt(vals[0])
        else:
            row[k] = f"{fmt(statistics.median(vals))} ({fmt(min(vals))}–{fmt(max(vals))})"
    return row


def fmt(v):
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def ratio(b, s, k, invert=False):
    bv = [r[k] for r in b if r.get(k) is not None]
    sv = [r[k] for r in s if r.get(k) is not None]
    if not bv or not sv or statistics.median(sv) == 0:
        return "n/a"
    x = statistics.median(bv) / statistics.median(sv)
    return f"{1 / x if invert else x:.3g}×"


STEADY_KEYS = [
    "startup_s", "first_fire_s", "rss_after_startup_mib", "rss_end_mib", "cpu_s_per_min", "cpu_ms_per_msg",
    "sent_of_due", "due", "lateness_p50_ms", "lateness_p99_ms", "lateness_max_ms", "probe_p99_ms",
]
BURST_KEYS = ["sent", "first_to_last_s", "msg_per_s", "first_after_minute_ms", "cpu_ms_per_msg", "probe_p99_ms", "probe_max_ms"]


def table(results, keys, group):
    lines = ["| " + " | ".join(group + ["runs"] + keys) + " |", "|" + " --- |" * (len(group) + 1 + len(keys))]
    groups = {}
    for r in results:
        groups.setdefault(tuple(r[g] for g in group), []).append(r)
    for gk, runs in groups.items():
        row = median_row(runs, keys)
        lines.append("| " + " | ".join([str(x) for x in gk] + [str(len(runs))] + [row[k] for k in keys]) + " |")
    return "\n".join(lines)


def ratios(results, keys):
    lines = ["| n | endpoint | " + " | ".join(keys) + " |", "|" + " --- |" * (2 + len(keys))]
    by = {}
    for r in results:
        by.setdefault((r["n"], r["endpoint"]), {}).setdefault(r["scheduler"], []).append(r)
    for (n, ep), d in by.items():
        if "beat" in d and "sqsbeat" in d:
            lines.append(f"| {n} | {ep} | " + " | ".join(ratio(d["beat"], d["sqsbeat"], k) for k in keys) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- commands


def need_binaries():
    if not SQSBEAT.exists() or not SINK.exists():
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "sqsbeat", "--example", "sqs_sink"], cwd=ROOT, check=True)


def cmd_compare(a):
    need_binaries()
    results = []
    for n in a.n:
        entries = generate(n, "mix")
        for i in range(a.runs):
            for which in a.only or ["beat", "sqsbeat"]:
                with tempfile.TemporaryDirectory(prefix="sqsbeat-bench-") as d:
                    r = run_steady(which, n, entries, a.endpoint, a.window, a.warmup, Path(d), a.source, a.store)
                r["run"] = i + 1
                print(json.dumps(r), flush=True)
                results.append(r)
    report(a, "steady", results, STEADY_KEYS, ["n", "scheduler", "source", "endpoint"],
           ["cpu_s_per_min", "cpu_ms_per_msg", "rss_end_mib", "startup_s", "lateness_p99_ms"])


def cmd_burst(a):
    need_binaries()
    results = []
    for n in a.n:
        for ep in a.endpoint:
            for i in range(a.runs):
                for which in a.only or ["beat", "sqsbeat"]:
                    with tempfile.TemporaryDirectory(prefix="sqsbeat-bench-") as d:
                        r = run_burst(which, n + 1, ep, Path(d), a.observe, a.source, a.store)
                    r["run"] = i + 1
                    print(json.dumps(r), flush=True)
                    results.append(r)
    report(a, "burst", results, BURST_KEYS, ["n", "scheduler", "endpoint"], ["first_to_last_s", "cpu_ms_per_msg"])


def report(a, name, results, keys, group, ratio_keys):
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (out / f"{name}-{stamp}.json").write_text(json.dumps(results, indent=1))
    text = table(results, keys, group) + "\n\nbeat / sqsbeat (median over median):\n\n" + ratios(results, ratio_keys) + "\n"
    (out / f"{name}-{stamp}.md").write_text(text)
    print(text)


def cmd_goals(a):
    """Every goal of the lean core in one run, beat beside sqsbeat where
    beat can run the scenario, with the machine's steal time per scenario.
    Writes goals-<stamp>.json and .md under --out."""
    need_binaries()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    res = {"started": stamp, "steady": [], "burst": [], "idle": [], "release": []}
    whole = Host()

    def save():
        (out / f"goals-{stamp}.json").write_text(json.dumps(res, indent=1))

    def log(kind, r):
        print(json.dumps(r), flush=True)
        res[kind].append(r)
        save()

    def tmp():
        return tempfile.TemporaryDirectory(prefix="sqsbeat-bench-")

    if "idle" not in a.skip:
        for which in ["beat", "sqsbeat"]:
            with tmp() as d:
                log("idle", run_idle(which, Path(d), a.idle_secs))
    if "steady" not in a.skip:
        for n in a.n:
            entries = generate(n, "mix")
            window = a.window * 2 if n <= 10 else a.window
            runs = [("beat", "toml", "sqlite")] if n <= a.beat_max else []
            runs.append(("sqsbeat", "toml", "sqlite"))
            if n >= 100000:
                runs += [("sqsbeat", "table", "sqlite"), ("sqsbeat", "table", "postgres")]
            if n >= 1000000:
                runs = [("sqsbeat", "table", "sqlite")]
            for which, source, store in runs:
                warmup = max(a.warmup, 20) if n >= 1000000 else a.warmup
                with tmp() as d:
                    try:
                        r = run_steady(which, n, entries, "sink", window, warmup, Path(d), source, store)
                    except RuntimeError as e:
                        r = {"scheduler": which, "n": n, "source": f"{source}/{store}", "error": str(e)[-1500:]}
                log("steady", r)
    if "burst" not in a.skip:
        for which in ["beat", "sqsbeat"]:
            with tmp() as d:
                log("burst", run_burst(which, a.burst + 1, "sink", Path(d), a.observe))
    if "release" not in a.skip:
        for r in [1, 2]:
            log("release", run_release(a.release, a.release, r))
    res["machine"] = whole.since()
    save()
    text = goals_table(res)
    (out / f"goals-{stamp}.md").write_text(text)
    print(text)


def goals_table(res):
    """The goals, each with beat's figure, sqsbeat's and whether it is met."""
    rows = []

    def steady(which, n, source="toml/sqlite"):
        return next((r for r in res["steady"] if r["scheduler"] == which and r["n"] == n
                     and (which == "beat" or r.get("source") == source) and "error" not in r), None)

    def g(r, k):
        return None if r is None else r.get(k)

    def add(goal, beat, sqsbeat, met, note=""):
        rows.append(f"| {goal} | {fmt(beat) if beat is not None else '—'} | "
                    f"{fmt(sqsbeat) if sqsbeat is not None else '—'} | {met} | {note} |")

    ns = sorted({r["n"] for r in res["steady"]})
    for n in ns:
        # At 1 000 000 sqsbeat runs from the table only.
        b, q = steady("beat", n), steady("sqsbeat", n) or steady("sqsbeat", n, "table/sqlite")
        bc, qc = g(b, "cpu_ms_per_msg"), g(q, "cpu_ms_per_msg")
        ratio = f"beat / sqsbeat = {bc / qc:.0f}×" if bc and qc else ""
        add(f"CPU ms per message, N = {n:,}, {g(q, 'source')} (≤ 1/50 of beat's)", bc, qc,
            ("yes" if bc / qc >= 50 else "**no**") if bc and qc else "—",
            f"{ratio}; thread wake-ups per message: beat {g(b, 'wakeups_per_msg')}, sqsbeat {g(q, 'wakeups_per_msg')}")
    for n in ns:
        if n < 100000:
            continue
        b = steady("beat", n)
        for src in ["toml/sqlite", "table/sqlite", "table/postgres"]:
            q = steady("sqsbeat", n, src)
            if q is None:
                continue
            rss = max(q["rss_after_startup_mib"], q["rss_end_mib"], q.get("rss_max_mib") or 0)
            limit = 60 if n == 100000 else 300
            add(f"RSS MiB, N = {n:,}, {src} (≤ {limit})", g(b, "rss_end_mib"), rss,
                "yes" if rss <= limit else "**no**")
            if n >= 1000000:
                add(f"sent / due in window, N = {n:,}, {src}", None, f"{q['sent_of_due']:,} / {q['due']:,}",
                    "yes" if q["sent_of_due"] == q["due"] else "**no**",
                    f"lateness p99 {fmt(q['lateness_p99_ms'])} ms; {fmt(q.get('sent_in_window'))} sent in "
                    f"{fmt(q['window_s'])} s; cores: sqsbeat {q['cpu_s_per_min'] / 60:.2f}, sink "
                    f"{(q.get('endpoint_cpu_s_per_min') or 0) / 60:.2f}; host idle {fmt(q.get('idle_pct'))} %")
            st_limit = 1.0 if src.startswith("toml") else 0.3
            add(f"start-up s, N = {n:,}, {src} (≤ {st_limit})", g(b, "startup_s"), q["startup_s"],
                "yes" if q["startup_s"] <= st_limit else "**no**")
    for n in ns:
        b, q = steady("beat", n), steady("sqsbeat", n) or steady("sqsbeat", n, "table/sqlite")
        if q is None:
            continue
        v = q.get("lone_p99_ms")
        add(f"lateness p99 ms outside bursts, N = {n:,} (≤ 10)", g(b, "lone_p99_ms"), v,
            "yes" if v is not None and v <= 10 else "**no**",
            f"all fires p99 {fmt(q['lateness_p99_ms'])}, sent {q['sent_of_due']:,} / {q['due']:,}")
    bb = next((r for r in res["burst"] if r["scheduler"] == "beat"), None)
    qb = next((r for r in res["burst"] if r["scheduler"] == "sqsbeat"), None)
    if qb:
        add(f"probe p99 ms during a burst of {qb['n']:,} (≤ 10)", g(bb, "probe_p99_ms"), qb["probe_p99_ms"],
            "yes" if (qb["probe_p99_ms"] or 1e9) <= 10 else "**no**",
            f"burst sent {qb['sent']:,} in {fmt(qb['first_to_last_s'])} s, first at {fmt(qb['first_after_minute_ms'])} ms; "
            f"beat sent {g(bb, 'sent')}")
    for r in res["release"]:
        ok = r.get("jobs_per_s", 0) >= 10000
        add(f"release jobs/s, {r['pending']:,} pending, {r['replicas']} replica(s) (≥ 10 000)", None,
            r.get("jobs_per_s"), "yes" if ok else "**no**", r.get("cpu", r.get("error", ""))[:200])
    for r in res["idle"]:
        pass
    bi = next((r for r in res["idle"] if r["scheduler"] == "beat"), None)
    qi = next((r for r in res["idle"] if r["scheduler"] == "sqsbeat"), None)
    if qi:
        add("idle CPU, % of a core (no measurable CPU)", g(bi, "cpu_pct_of_core"), qi["cpu_pct_of_core"],
            # Measurable: more than a millisecond of CPU a minute.
            "yes" if qi["cpu_ms_per_min"] < 1 else "**no**",
            f"{qi['cpu_ms_per_min']} CPU ms per minute, {qi.get('wakeups_per_s')} thread wake-ups a second "
            f"(beat {g(bi, 'wakeups_per_s')})")
    steal = [f"{k} {r.get('n', r.get('replicas', ''))}: {r.get('steal_pct')} %" for k in ["steady", "burst", "idle", "release"]
             for r in res[k] if "steal_pct" in r]
    m = res.get("machine", {})
    head = ["| goal | beat | sqsbeat | met | note |", "| --- | --- | --- | --- | --- |"]
    return ("\n".join(head + rows) + f"\n\nWhole run: steal {m.get('steal_pct')} %, idle {m.get('idle_pct')} %, "
            f"load {m.get('load1')} at the end. Steal per scenario: " + "; ".join(steal) + "\n")


def cmd_smoke(a):
    """Seconds-long form for CI: both schedulers at tiny N, sqsbeat from TOML
    and from the SQLite entries table; fails if a scheduler sent nothing or
    sqsbeat missed a fire."""
    need_binaries()
    entries = generate(10, "mix")
    bad = []
    for which, source in [("beat", "toml"), ("sqsbeat", "toml"), ("sqsbeat", "table")]:
        with tempfile.TemporaryDirectory(prefix="sqsbeat-bench-") as d:
            r = run_steady(which, 10, entries, "sink", window=4, warmup=5 if which == "sqsbeat" else 6,
                           work=Path(d), source=source)
        print(json.dumps(r), flush=True)
        if not r["sent_of_due"]:
            bad.append(f"{which} ({r['source']}) sent nothing in the window")
        if which == "sqsbeat" and r["sent_of_due"] != r["due"]:
            bad.append(f"sqsbeat ({r['source']}) sent {r['sent_of_due']} of {r['due']} due fires")
    if bad:
        sys.exit("bench smoke failed: " + "; ".join(bad))
    print("bench smoke: ok")


def cmd_profile(a):
    """sqsbeat alone under valgrind on the generated schedule, into the sink.

    callgrind counts instructions, which a busy neighbour on a shared core
    does not change: `--phase steady` zeroes the counters once the beat
    leads and dumps them after --secs, and divides by the messages the sink
    accepted in between; `--phase startup` counts spawn -> leading. massif
    records the heap (ms_print its out file)."""
    need_binaries()
    entries = generate(a.n, a.kind)
    work = Path(tempfile.mkdtemp(prefix="sqsbeat-profile-"))
    # Absolute: valgrind runs in the scheduler's working directory.
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    stamp = f"{a.tool}-{a.phase}-{a.kind}-n{a.n}-{a.source}-{a.store}"
    tool_out = out / f"{stamp}.out"
    if a.tool == "callgrind":
        vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tool_out}"]
    else:
        vg = ["valgrind", "--tool=massif", f"--massif-out-file={tool_out}", "--pages-as-heap=no"]
    ep = Endpoint("sink", work)
    if a.kind == "burst":
        # Ready well before the minute, even under valgrind.
        while not (5 <= time.time() % 60 <= 10):
            time.sleep(0.2)
    s = Scheduler("sqsbeat", entries, ep, work, a.source, a.store, wrap=vg)
    result = {"tool": a.tool, "phase": a.phase, "n": a.n, "source": f"{a.source}/{a.store}"}
    try:
        result["startup_s_under_valgrind"] = round(s.wait_ready(timeout=3600), 1)
        if a.tool == "callgrind":
            ctl = lambda *args: subprocess.run(["callgrind_control", *args, str(s.proc.pid)],
                                               check=True, capture_output=True)
            if a.phase == "steady":
                time.sleep(a.warmup)
                if a.kind == "burst":
                    # Counted from just before the burst's minute.
                    time.sleep(max(0.0, (time.time() // 60 + 1) * 60 - 1 - time.time()))
                ctl("--zero")
                lo = time.time()
                time.sleep(a.secs)
                ctl("--dump")
                hi = time.time()
                result["window_s"] = round(hi - lo, 1)
            else:
                ctl("--dump")
        else:
            time.sleep(a.secs)
            result["rss_mib"] = round(rss_mib(s.proc.pid), 1)
    finally:
        # Under valgrind the drain is slow, and the tool writes its file
        # only once the process exits.
        s.stop(timeout=900)
        ep.stop()
    if a.tool == "callgrind":
        # The explicit dump is <out>.1; <out> itself is written at exit.
        dumps = sorted(out.glob(f"{stamp}.out.*"), key=lambda p: p.stat().st_mtime)
        dump = dumps[-2] if a.phase == "steady" and len(dumps) > 1 else dumps[0]
        ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(dump)], capture_output=True, text=True).stdout
        (out / f"{stamp}.txt").write_text(ann)
        total = next((int(l.split()[0].replace(",", "")) for l in ann.splitlines() if "PROGRAM TOTALS" in l), None)
        result["instructions"] = total
        result["annotated"] = str(out / f"{stamp}.txt")
        if a.phase == "steady":
            acc = ep.accepted()
            sent = sum(1 for acc_t, t, e in acc if lo <= acc_t < hi)
            result["sent"] = sent
            result["instructions_per_msg"] = round(total / sent) if total and sent else None
    else:
        result["massif"] = str(tool_out)
    print(json.dumps(result), flush=True)
    shutil.rmtree(work, ignore_errors=True)


def source_args(p):
    p.add_argument("--source", choices=["toml", "table"], default="toml",
                   help="where sqsbeat reads the schedule: a TOML file, or its entries table (filled before start-up)")
    p.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite",
                   help="sqsbeat's store: a SQLite file, or a fresh database on $DATABASE_URL's PostgreSQL server")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare", help="steady state: start-up, memory, CPU, lateness at N entries")
    c.add_argument("--n", type=int, nargs="+", default=[10, 1000, 10000, 100000])
    c.add_argument("--runs", type=int, default=3)
    c.add_argument("--window", type=float, default=60, help="measured seconds per run")
    c.add_argument("--warmup", type=float, default=10, help="seconds after start-up before the window")
    c.add_argument("--endpoint", choices=["sink", "moto"], default="sink")
    c.add_argument("--only", nargs="+", choices=["beat", "sqsbeat"])
    source_args(c)
    c.add_argument("--out", default=str(ROOT / "bench-results"))
    c.set_defaults(f=cmd_compare)
    b = sub.add_parser("burst", help="N `* * * * *` entries due at the same instant")
    b.add_argument("--n", type=int, nargs="+", default=[10000])
    b.add_argument("--runs", type=int, default=3)
    b.add_argument("--endpoint", nargs="+", choices=["sink", "moto"], default=["sink", "moto"])
    b.add_argument("--only", nargs="+", choices=["beat", "sqsbeat"])
    b.add_argument("--observe", type=float, default=40, help="seconds watched after the burst instant")
    source_args(b)
    b.add_argument("--out", default=str(ROOT / "bench-results"))
    b.set_defaults(f=cmd_burst)
    pr = sub.add_parser("profile", help="sqsbeat under callgrind (instructions per message) or massif (heap)")
    pr.add_argument("--n", type=int, default=1000)
    pr.add_argument("--tool", choices=["callgrind", "massif"], default="callgrind")
    pr.add_argument("--phase", choices=["steady", "startup"], default="steady")
    pr.add_argument("--kind", choices=["mix", "burst"], default="mix",
                    help="burst: the probe and N - 1 `* * * * *` entries; steady counts from 1 s before their minute")
    pr.add_argument("--secs", type=float, default=30, help="steady: seconds counted; massif: seconds run")
    pr.add_argument("--warmup", type=float, default=5, help="steady: seconds after start-up before counting")
    source_args(pr)
    pr.add_argument("--out", default=str(ROOT / "bench-results/profile"))
    pr.set_defaults(f=cmd_profile)
    go = sub.add_parser("goals", help="every lean-core goal in one run, beat beside sqsbeat, with steal time")
    go.add_argument("--n", type=int, nargs="+", default=[10, 1000, 100000, 1000000])
    go.add_argument("--window", type=float, default=60, help="measured seconds per steady run (doubled at N <= 10)")
    go.add_argument("--warmup", type=float, default=10)
    go.add_argument("--beat-max", type=int, default=100000, help="largest N beat runs at")
    go.add_argument("--burst", type=int, default=10000)
    go.add_argument("--observe", type=float, default=30)
    go.add_argument("--release", type=int, default=1000000, help="one-off jobs, all due, all pending")
    go.add_argument("--idle-secs", type=float, default=60)
    go.add_argument("--skip", nargs="*", default=[], choices=["idle", "steady", "burst", "release"])
    go.add_argument("--out", default=str(ROOT / "bench-results"))
    go.set_defaults(f=cmd_goals)
    s = sub.add_parser("smoke", help="seconds-long form for CI")
    s.set_defaults(f=cmd_smoke)
    a = p.parse_args()
    a.f(a)


if __name__ == "__main__":
    main()
