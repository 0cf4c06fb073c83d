"""`credit-jobs api` with CREDITJOBS_API_WORKERS=2, as a real process tree on a real PostgreSQL.

Two worker processes serve one port; the metrics port serves their summed counts (prometheus-client's multiprocess
mode); the pod-wide limits (global, failed authentications) are shared out so the pod never admits more than the
setting; SIGTERM stops every worker and exits 0. Cluster mode, as the chart runs the API: the routes called here
never reach the Kubernetes API, so the kubeconfig names an address nobody listens on (no cluster runs here).
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.support import cli_process
from tests.support.api import LEDGER_TOKEN, READ_TOKEN, api_env, bearer, free_port, served_api_process
from tests.support.cli_process import cli_env
from tests.support.ledger import add_users, fill_balance_to, scalar

USERS = 10
CONSUME, BALANCE = "/api/v1/users/{user}/consume", "/api/v1/users/{user}/balance"
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "http://127.0.0.1:9"}}]
users: [{name: none, user: {token: unused}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


def _two_workers_env(tmp_path: Path, metrics_port: int) -> dict[str, str]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    return {
        "CREDITJOBS_API_WORKERS": "2",
        "CREDITJOBS_API_MODE": "cluster",
        "KUBECONFIG": str(kubeconfig),
        "TMPDIR": str(tmp_path),  # where the workers' metric files go: inspected below
        "CREDITJOBS_API_METRICS_PORT": str(metrics_port),
    }


@contextmanager
def two_workers(database_url: str, tmp_path: Path, **env: str) -> Iterator[tuple[str, str]]:
    """(API base URL, metrics base URL) of `credit-jobs api` with two workers; SIGTERM on the way out, which must
    stop the whole tree cleanly (exit 0) and remove the metrics directory."""
    metrics_port = free_port()
    log = tmp_path / "api.log"
    with served_api_process(database_url, log, **_two_workers_env(tmp_path, metrics_port), **env) as (base, process):
        yield base, f"http://127.0.0.1:{metrics_port}"
        workers = _workers_of(process.pid)
        assert len(workers) == 2, workers
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()[-3000:]
    assert not any(_alive(pid) for pid in workers), "a worker outlived the API"
    assert not list(tmp_path.glob("credit-jobs-api-metrics-*")), "the metrics directory was left behind"


def _workers_of(parent: int) -> set[int]:
    """uvicorn's worker processes: children of `parent` started by multiprocessing's spawn."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if ppid == parent and b"spawn_main" in cmdline:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _counts(samples: Iterable[Sample]) -> dict[tuple[str, str], float]:
    return {
        (sample.labels["route"], sample.labels["result"]): sample.value
        for sample in samples
        if sample.name == "creditjobs_api_requests_total"
    }


def _metric(metrics_base: str, route: str, result: str) -> float:
    """What the metrics port serves (the API's process, summing its workers' counts)."""
    text = httpx.get(f"{metrics_base}/metrics", timeout=10).text
    return _counts(s for family in text_string_to_metric_families(text) for s in family.samples).get(
        (route, result), 0.0
    )


def _per_worker(tmp_path: Path) -> dict[str, dict[tuple[str, str], float]]:
    """Each worker's own counts, read with prometheus-client's collector from a copy of that worker's file alone
    (it writes one file per process and metric type)."""
    found = {}
    for path in tmp_path.glob("credit-jobs-api-metrics-*/counter_*.db"):
        alone = tmp_path / f"worker-{path.stem}"
        alone.mkdir()
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
        found[path.stem] = _counts(s for family in registry.collect() for s in family.samples)
    return found


def _each_on_its_own_connection(calls: list[tuple[str, str, dict[str, object]]]) -> list[int]:
    """The status of every call, 8 at a time, each on a fresh connection (the kernel hands connections to
    whichever worker accepts first)."""

    def call(one: tuple[str, str, dict[str, object]]) -> int:
        method, url, options = one
        return httpx.request(method, url, timeout=30, **options).status_code  # type: ignore[arg-type]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(call, calls))


def test_two_workers_serve_one_port_and_report_one_sum_of_metrics(database_url: str, tmp_path: Path) -> None:
    engine = sa.create_engine(database_url)
    try:
        add_users(engine, [(f"w{n}", "pro", "active", False, False) for n in range(USERS)])
        for n in range(USERS):
            fill_balance_to(engine, f"w{n}", 100)
        with two_workers(database_url, tmp_path) as (base, metrics):
            consumes = [
                (
                    "POST",
                    f"{base}/api/v1/users/w{n % USERS}/consume",
                    {"json": {"amount": 1}, "headers": {**bearer(LEDGER_TOKEN), "Idempotency-Key": f"order-{n}"}},
                )
                for n in range(40)
            ]
            statuses = _each_on_its_own_connection(consumes)
            assert statuses == [200] * 40
            # The metrics port serves the sum of the workers' counts (each worker counts only what it answered).
            assert _metric(metrics, CONSUME, "ok") == 40
            assert sum(counts.get((CONSUME, "ok"), 0) for counts in _per_worker(tmp_path).values()) == 40
            # A replay lands on either worker and still answers the first result: the claim is in the database.
            again = _each_on_its_own_connection(consumes[:8])
            assert again == [200] * 8
        assert scalar(engine, "SELECT count(*) FROM credit_requests") == 40
        assert scalar(engine, "SELECT sum(balance) FROM credit_accounts") == USERS * 100 - 40
    finally:
        engine.dispose()


def test_the_pods_global_limit_is_shared_out_between_the_workers(database_url: str, tmp_path: Path) -> None:
    engine = sa.create_engine(database_url)
    try:
        add_users(engine, [("w0", "pro", "active", False, False)])
        with two_workers(database_url, tmp_path, CREDITJOBS_API_RATE_LIMIT_GLOBAL="6/minute") as (base, _):
            reads = [("GET", f"{base}/api/v1/users/w0/balance", {"headers": bearer(READ_TOKEN)})] * 40
            statuses = _each_on_its_own_connection(reads)
            workers = _per_worker(tmp_path)
        # Each worker admits its share, 3 a minute, of whatever reached it (the kernel decides which worker accepts
        # a connection, often unevenly): the pod never admits more than the setting's 6, never 6 per worker.
        assert workers
        for counts in workers.values():
            answered = sum(n for (route, _), n in counts.items() if route == BALANCE)
            assert counts.get((BALANCE, "ok"), 0) == min(3, answered), workers
        assert statuses.count(200) == sum(c.get((BALANCE, "ok"), 0) for c in workers.values()) <= 6
        assert statuses.count(200) + statuses.count(429) == 40
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"CREDITJOBS_API_WORKERS": "2"}, "local mode runs jobs inside the API process"),
        ({"CREDITJOBS_API_WORKERS": "0", "CREDITJOBS_API_MODE": "cluster"}, "CREDITJOBS_API_WORKERS: '0' is not"),
        ({"CREDITJOBS_API_WORKERS": "two"}, "CREDITJOBS_API_WORKERS: 'two' is not a number of processes from 1"),
    ],
)
def test_a_worker_count_it_cannot_serve_is_refused_at_start(database_url: str, env: dict[str, str], says: str) -> None:
    done = cli_process.run(["api", "--port", str(free_port())], cli_env(database_url, **api_env(**env)), timeout=60)
    assert done.returncode == 2, done.stderr
    lines = cli_process.error_lines(done.stderr)
    assert len(lines) == 1, done.stderr
    assert says in lines[0]


def test_workers_end_with_the_api_process_however_it_ends(database_url: str, tmp_path: Path) -> None:
    with served_api_process(database_url, tmp_path / "api.log", **_two_workers_env(tmp_path, free_port())) as (
        base,
        process,
    ):
        workers = _workers_of(process.pid)
        assert len(workers) == 2, workers
        process.kill()  # SIGKILL: no chance to stop its workers itself
        process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers), "a worker outlived its killed API process"
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{base}/healthz", timeout=5)  # nobody serves the port any more
