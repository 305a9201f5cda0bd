"""The real stack for the tests: moto's SQS server, Celery apps on it, PostgreSQL."""

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from sqsutil import Sqs, free_port, make_app, wait_until

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    """moto's SQS server on a free loopback port; yields its endpoint URL."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)

    def up():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_until("moto", 30, up)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)
    log.close()


@pytest.fixture
def sqs(moto):
    return Sqs(moto)


@pytest.fixture
def names():
    """Queue names of this test only: the server is shared by the session."""
    tag = uuid.uuid4().hex[:8]
    return lambda base: f"{base}-{tag}"


@pytest.fixture
def app_factory(moto, names):
    apps = []

    def build(install=True, **conf):
        conf.setdefault("sqsbeat_intake_queue", names("intake"))
        app = make_app(moto, install=install, **conf)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.close()


@pytest.fixture(scope="module")
def pg_dsn():
    """A throwaway database with sqsbeat's tables in schema sqsbeat, made by
    sqsbeat's own migrations (migrations/postgres, in order)."""
    psycopg = pytest.importorskip("psycopg")
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    db = f"sqsbeat_py_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(base, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        pytest.fail(f"PostgreSQL at DATABASE_URL={base} is not reachable ({e}); "
                    "start one or run scripts/test-python, which makes a throwaway one")
    admin.execute(f'CREATE DATABASE "{db}"')
    dsn = base.rsplit("/", 1)[0] + "/" + db
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA sqsbeat")
            conn.execute("SET search_path TO sqsbeat")
            for migration in sorted((REPO / "migrations/postgres").glob("*.sql")):
                conn.execute(migration.read_text())
        yield dsn
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def sqsbeat_bin():
    """The sqsbeat binary: SQSBEAT_BIN, else target/debug/sqsbeat of this checkout."""
    path = os.environ.get("SQSBEAT_BIN") or str(REPO / "target/debug/sqsbeat")
    if not os.access(path, os.X_OK):
        pytest.skip(f"no sqsbeat binary at {path}: build it (cargo build) or set SQSBEAT_BIN "
                    "to compare exported schedules with sqsbeat's own reading")
    return path
