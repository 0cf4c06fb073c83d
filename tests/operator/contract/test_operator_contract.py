"""Contract test (docs/contract.md, container contract): the container the operator renders really runs the jobs core.

Takes command, args and env from a rendered CronJob (and from a run-now Job built from it), resolves the
DATABASE_URL secretKeyRef the way the kubelet would (from a Secret manifest), runs it as a real subprocess
against the embedded PostgreSQL, and reads the recorded run back through the CLI: the expected job name,
period key, trigger and shard.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from credit_jobs.domain.schedule import Schedule
from credit_operator.creditjob import parse_creditjob
from credit_operator.cronjob_manifest import (
    ManifestDefaults,
    build_cronjob,
    build_job_from_cronjob,
    manual_job_name,
)
from tests.support import creditjobs

BIN = Path(sys.executable).parent


def _has_run_command() -> bool:
    try:
        from credit_jobs.entrypoints.cli.app import app
    except ImportError:
        return False
    return any(c.name == "run" for c in app.registered_commands)


pytestmark = pytest.mark.skipif(not _has_run_command(), reason="no `credit-jobs run` in the jobs core yet")


def secret(name: str, key: str, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "data": {key: base64.b64encode(value.encode()).decode()},
    }


def container_process(
    pod_spec: dict[str, Any], secrets: list[dict[str, Any]], **downward: str
) -> tuple[list[str], dict[str, str]]:
    """argv and environment of the pod's container, as the kubelet would start it."""
    (container,) = pod_spec["containers"]
    by_name = {s["metadata"]["name"]: s for s in secrets}
    env = {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": os.environ.get("HOME", "/tmp"),
        "XDG_RUNTIME_DIR": os.environ.get("XDG_RUNTIME_DIR", "/tmp"),
    }
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = base64.b64decode(by_name[ref["name"]]["data"][ref["key"]]).decode()
    env.update(downward)
    env.pop("PUSHGATEWAY_URL", None)  # no Pushgateway in this test
    return [*container["command"], *container["args"]], env


def runs(database_url: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(BIN / "credit-jobs"), "runs", "list", "--json", "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return list(json.loads(out.stdout))


creditjob = functools.partial(
    creditjobs.creditjob,
    name="monthly-grant",
    namespace="billing",
    uid="u",
    timeZone="Asia/Shanghai",
    params={"batchSize": 100, "dryRun": False},
)


def test_the_rendered_cronjob_container_records_a_scheduled_run(database_url: str) -> None:
    libpq = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    cron = build_cronjob(creditjob(), ManifestDefaults(image="unused", pushgateway_url="http://unused:9091"))
    argv, env = container_process(
        cron["spec"]["jobTemplate"]["spec"]["template"]["spec"], [secret("credit-jobs-db", "url", libpq)]
    )
    assert argv == ["credit-jobs", "run", "distribute-credits", "--batch-size", "100"]
    schedule = Schedule.parse("0 0 1 * *", "Asia/Shanghai", "monthly")
    before = schedule.period_key_of(schedule.latest_fire(datetime.now(UTC)) or datetime.now(UTC))
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    after = schedule.period_key_of(schedule.latest_fire(datetime.now(UTC)) or datetime.now(UTC))
    assert done.returncode == 0, done.stderr
    (run,) = runs(database_url)
    assert run["job"] == "monthly-grant"
    assert run["trigger"] == "schedule"
    assert run["status"] == "succeeded"
    assert run["periodKey"] in {before, after}  # from the scheduled fire time, in Shanghai


def test_a_run_now_job_of_an_indexed_cronjob_records_its_pinned_period_and_shard(database_url: str) -> None:
    libpq = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    cron = build_cronjob(
        creditjob(parallelism=2, databaseSecretRef={"name": "billing-db", "key": "dsn"}), ManifestDefaults(image="i")
    )
    job = build_job_from_cronjob(
        cron, name=manual_job_name("monthly-grant", "tok"), trigger="manual", period_key="2026-10", token="tok"
    )
    # Kubernetes sets JOB_COMPLETION_INDEX in each pod of an Indexed Job.
    argv, env = container_process(
        job["spec"]["template"]["spec"], [secret("billing-db", "dsn", libpq)], JOB_COMPLETION_INDEX="1"
    )
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    (run,) = runs(database_url)
    assert (run["job"], run["trigger"], run["periodKey"], run["status"]) == (
        "monthly-grant",
        "manual",
        "2026-10",
        "succeeded",
    )
    assert (run["shard"], run["shards"]) == (1, 2)


EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_runs_as_rendered(example: Path, database_url: str) -> None:
    """Each example's container (its usecase and params as flags) is accepted by the jobs CLI and recorded."""
    manifest = yaml.safe_load(example.read_text())
    job = parse_creditjob({**manifest, "metadata": {**manifest["metadata"], "uid": "u"}})
    libpq = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    cron = build_cronjob(job, ManifestDefaults(image="unused"))
    secret_name = job.spec.db_secret_name or "credit-jobs-db"
    secret_key = job.spec.db_secret_key or "url"
    argv, env = container_process(
        cron["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        [secret(secret_name, secret_key, libpq)],
        JOB_COMPLETION_INDEX="0",
    )
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = runs(database_url)
    assert (run["job"], run["trigger"], run["status"]) == (job.name, "schedule", "succeeded")
    assert run["shards"] == job.spec.parallelism
