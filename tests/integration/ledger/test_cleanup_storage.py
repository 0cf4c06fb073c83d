"""cleanup-storage against a real PostgreSQL, a real filesystem and a real S3 API server (moto's server mode)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import pytest
import sqlalchemy as sa

from credit_jobs.adapters import database
from credit_jobs.adapters.db_clock import database_now
from credit_jobs.adapters.object_storage import LocalFileStorage, S3Storage, StorageRouter
from credit_jobs.domain.run_model import UsecaseSpec
from credit_jobs.lifecycle.run_lifecycle import RunOutcome, RunRequest, execute_run
from credit_jobs.usecases.cleanup_storage import cleanup_storage
from credit_jobs.usecases.registry import get_usecase
from tests.support import cli_process
from tests.support.ledger import NOW, rows, scalar

AWS_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


def _add_file(engine: sa.Engine, uri: str, size: int, expires_in_days: int | None, now: datetime = NOW) -> None:
    """A stored file expiring `expires_in_days` after `now`: the pinned `NOW` of the in-process runs here, or the
    database's clock for a `credit-jobs` process (which reads that clock)."""
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO stored_files (uri, size_bytes, expires_at) VALUES (:u, :s, :e)"),
            {"u": uri, "s": size, "e": now + timedelta(days=expires_in_days) if expires_in_days is not None else None},
        )


def _run(database_url: str, storage: StorageRouter, **request: Any) -> RunOutcome:
    """The real lifecycle, with the usecase given this storage instead of the one configured by the environment."""
    registered = get_usecase("cleanup-storage")
    spec = UsecaseSpec(
        registered.name, registered.default_period, partial(cleanup_storage, storage=storage), registered.description
    )
    return execute_run(
        RunRequest(usecase=spec, job="cleanup", batch_size=2, **request),
        lambda: database.create_engine(database_url),
        clock=lambda: NOW,
        ledger_clock=lambda: NOW,
    )


def test_expired_files_are_deleted_and_recorded_others_kept(
    engine: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    files = {name: tmp_path / name for name in ("old-a", "old-b", "fresh", "forever")}
    for path in files.values():
        path.write_bytes(b"x" * 10)
    _add_file(engine, files["old-a"].as_uri(), 10, -1)
    _add_file(engine, files["old-b"].as_uri(), 10, -30)
    _add_file(engine, (tmp_path / "already-gone").as_uri(), 7, -2)  # deleted by someone else: counts as deleted
    _add_file(engine, files["fresh"].as_uri(), 10, 5)
    _add_file(engine, files["forever"].as_uri(), 10, None)
    storage = StorageRouter({"file": LocalFileStorage()})

    outcome = _run(database_url, storage)
    assert outcome.status == "succeeded", outcome.error
    assert outcome.stats is not None
    assert outcome.stats.details == {"files_deleted": 3, "bytes_freed": 27, "chunks": 2}
    assert not files["old-a"].exists()
    assert not files["old-b"].exists()
    assert files["fresh"].exists()
    assert files["forever"].exists()
    assert scalar(engine, "SELECT count(*) FROM stored_files WHERE delete_run_id = :r", r=outcome.run_id) == 3

    again = _run(database_url, storage)
    assert again.stats is not None
    assert again.stats.details["files_deleted"] == 0


def test_files_that_cannot_be_deleted_fail_the_run_and_stay_due_with_the_reason(
    engine: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    inside = tmp_path / "store"
    inside.mkdir()
    (inside / "ok").write_bytes(b"1")
    outside = tmp_path / "elsewhere"
    outside.write_bytes(b"1")
    _add_file(engine, (inside / "ok").as_uri(), 1, -1)
    _add_file(engine, outside.as_uri(), 1, -1)
    _add_file(engine, "gs://bucket/obj", 1, -1)
    storage = StorageRouter({"file": LocalFileStorage(root=str(inside))})

    outcome = _run(database_url, storage)
    assert (outcome.status, outcome.exit_code) == ("failed", 1)
    assert outcome.stats is not None
    assert (outcome.stats.processed, outcome.stats.failed) == (1, 2)
    assert outside.exists()
    errors = dict(rows(engine, "SELECT uri, last_error FROM stored_files WHERE deleted_at IS NULL"))
    assert "outside CREDITJOBS_STORAGE_FILE_ROOT" in errors[outside.as_uri()]
    assert "unsupported storage scheme 'gs'" in errors["gs://bucket/obj"]


def test_a_dry_run_counts_and_deletes_nothing(engine: sa.Engine, database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "old"
    path.write_bytes(b"abc")
    _add_file(engine, path.as_uri(), 3, -1)
    outcome = _run(database_url, StorageRouter({"file": LocalFileStorage()}), dry_run=True)
    assert outcome.stats is not None
    assert outcome.stats.details == {"would_delete_files": 1, "would_free_bytes": 3}
    assert path.exists()
    assert scalar(engine, "SELECT count(*) FROM stored_files WHERE deleted_at IS NOT NULL") == 0


@pytest.fixture
def s3_endpoint(tmp_path: Path) -> Iterator[str]:
    """A real S3 API server (moto in server mode) on a free loopback port, stopped by PID afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=1)
                break
            except OSError:
                assert server.poll() is None, "moto_server exited"
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.1)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_expired_s3_objects_are_deleted_by_the_real_cli(
    engine: sa.Engine, database_url: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in AWS_ENV.items():
        monkeypatch.setenv(key, value)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="uploads")
    now = database_now(engine)  # the clock the `credit-jobs` process below judges expiry by
    for n in range(5):
        s3.put_object(Bucket="uploads", Key=f"u/{n}.pdf", Body=b"%PDF" * (n + 1))
        _add_file(engine, f"s3://uploads/u/{n}.pdf", 4 * (n + 1), -1 if n < 3 else 10, now)
    _add_file(engine, "s3://uploads/u/never-existed.pdf", 1, -1, now)  # deleting a missing key succeeds

    env = cli_process.cli_env(database_url, S3_ENDPOINT_URL=s3_endpoint, CREDITJOB_NAME="cleanup", **AWS_ENV)
    done = cli_process.run(["run", "cleanup-storage", "--batch-size", "2"], env)
    assert done.returncode == 0, done.stderr
    left = sorted(obj["Key"] for obj in s3.list_objects_v2(Bucket="uploads").get("Contents", []))
    assert left == ["u/3.pdf", "u/4.pdf"]
    assert scalar(engine, "SELECT count(*) FROM stored_files WHERE deleted_at IS NOT NULL") == 4
    end = cli_process.log_lines(done.stderr)[-1]
    assert (end["status"], end["files_deleted"], end["bytes_freed"]) == ("succeeded", 4, 25)


def test_an_unreachable_s3_endpoint_fails_the_files_not_the_ledger(engine: sa.Engine, database_url: str) -> None:
    _add_file(engine, "s3://uploads/a", 1, -1)
    client = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=boto3.session.Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    outcome = _run(database_url, StorageRouter({"s3": S3Storage(client=client)}))
    assert (outcome.status, outcome.exit_code) == ("failed", 1)
    assert "Could not connect" in scalar(engine, "SELECT last_error FROM stored_files")
    assert scalar(engine, "SELECT count(*) FROM stored_files WHERE deleted_at IS NULL") == 1
