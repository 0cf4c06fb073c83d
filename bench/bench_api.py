"""Benchmark: the HTTP API (`credit-jobs api`) under a bad-auth flood, and `consume` with 50 concurrent clients.

Not a test. A real `credit-jobs api` process on loopback and the embedded PostgreSQL; every figure is a ratio to a
baseline measured in the same run against the same server (these machines are shared and noisy: absolute times lie).

(a) Bad-auth flood, at the production rate limits: 2,000 requests with a wrong bearer token, from 8 concurrent
    connections on another client address (127.0.0.2), while one good client keeps reading a balance. Reported: the
    good requests' p99 during the flood relative to the same good requests without it (measured before and again
    after), the good requests refused, and the share of bad requests answered 429 (after the address's
    failed-authentication budget, 20/minute by default, every further attempt is refused before its credentials are
    checked) rather than 401.
(b) `consume` throughput and p99 with 50 concurrent clients (httpx async, one user each, 1 credit per consume, a
    fresh Idempotency-Key each), relative to (1) the same consumes through the Python library
    (`credit_jobs.usecases.consume`) in one thread and (2) one HTTP client. A second API process serves (b) with the
    per-client and global limits raised, so the server is measured, not the limiter (at the default 50/second per
    principal, 50 clients sharing a token would simply be held to 50 consumes a second). The ledger is checked
    afterwards (`check_invariants`) and the consumed credits must equal the successful answers.

Usage: python bench/bench_api.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from credit_jobs.adapters.embedded_database import start_embedded
from credit_jobs.adapters.schema_migrations import upgrade_schema
from credit_jobs.usecases.check_invariants import check_invariants
from credit_jobs.usecases.consume import consume
from credit_jobs.usecases.grant import grant

CLI = str(Path(sys.executable).with_name("credit-jobs"))
CLIENTS = 50
FLOOD = 2_000
FLOOD_CONNECTIONS = 8
BAD_ADDRESS = "127.0.0.2"  # the flood's client address: the good client (127.0.0.1) keeps its own auth budget
STARTING_CREDITS = 10_000_000


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def seed(url: str, users: int) -> None:
    """`users` eligible users `u0`… with one large gift each (through the library, as an app would)."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO plan_credit_policies (plan_code, grant_type, credits_per_period) "
                "VALUES ('pro', 'free_tier', 100)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO credit_eligibility (user_id, plan_code, status, is_lifetime, is_banned) "
                "SELECT 'u' || n, 'pro', 'active', false, false FROM generate_series(0, :last) n"
            ),
            {"last": users - 1},
        )
    for n in range(users):
        grant(
            engine,
            f"u{n}",
            STARTING_CREDITS,
            grant_type="gift",
            allow_unknown_user=True,
            idempotency_key=f"bench-seed-{n}",
        )
    engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def api_process(url: str, tokens: str, log: Path, **limits: str) -> Iterator[str]:
    """A real `credit-jobs api` on a free loopback port (JSON logs to `log`); killed on the way out."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CREDITJOB", "CRON_JOBS"))},
        "DATABASE_URL": url.replace("postgresql+psycopg://", "postgresql://", 1),
        "LOG_FORMAT": "json",
        "CREDITJOBS_API_TOKENS": tokens,
        "CREDITJOBS_API_METRICS_PORT": str(free_port()),
        **limits,
    }
    with log.open("w") as stderr:
        process = subprocess.Popen([CLI, "api", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise SystemExit(f"credit-jobs api exited {process.returncode}:\n{log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("credit-jobs api did not become ready within 60 s")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- (a) the bad-auth flood ------------------------------------------------------------------------------------------


async def good_reads(
    client: httpx.AsyncClient, count: int | None, until: asyncio.Event | None
) -> tuple[list[float], Counter[int]]:
    """Sequential balance reads: `count` of them, or until `until` is set. (latencies in ms, statuses)"""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    while (count is not None and len(latencies) < count) or (until is not None and not until.is_set()):
        started = time.perf_counter()
        response = await client.get("/api/v1/users/u0/balance")
        latencies.append((time.perf_counter() - started) * 1000)
        statuses[response.status_code] += 1
    return latencies, statuses


async def flood(base: str, done: asyncio.Event) -> Counter[int]:
    statuses: Counter[int] = Counter()
    remaining = iter(range(FLOOD))
    transport = httpx.AsyncHTTPTransport(local_address=BAD_ADDRESS)
    headers = {"Authorization": f"Bearer {secrets.token_hex(32)}"}  # a well-formed token nobody holds

    async def worker(client: httpx.AsyncClient) -> None:
        for _ in remaining:
            statuses[(await client.get("/api/v1/users/u0/balance")).status_code] += 1

    async with httpx.AsyncClient(base_url=base, transport=transport, headers=headers, timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(FLOOD_CONNECTIONS)))
    done.set()
    return statuses


async def bench_flood(base: str, read_token: str, baseline_count: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {read_token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as good:
        await good_reads(good, 50, None)  # warm-up: connections, statement caches
        before, _ = await good_reads(good, baseline_count, None)
        done = asyncio.Event()
        started = time.perf_counter()
        (during, during_statuses), bad = await asyncio.gather(good_reads(good, None, done), flood(base, done))
        flood_s = time.perf_counter() - started
        after, _ = await good_reads(good, baseline_count, None)
    p99_before, p99_during, p99_after = (percentile(x, 0.99) for x in (before, during, after))
    return {
        "good_p99_before_ms": p99_before,
        "good_p99_during_ms": p99_during,
        "good_p99_after_ms": p99_after,
        "good_p50_before_ms": percentile(before, 0.5),
        "good_p50_during_ms": percentile(during, 0.5),
        "p99_ratio": p99_during / p99_before,
        "p99_ratio_after": p99_after / p99_before,
        "good_during": len(during),
        "good_refused": sum(n for status, n in during_statuses.items() if status != 200),
        "bad_statuses": dict(bad),
        "bad_429_share": bad[429] / FLOOD,
        "flood_s": flood_s,
        "flood_per_s": FLOOD / flood_s,
    }


# --- (b) consume with 50 concurrent clients --------------------------------------------------------------------------


async def http_consumes(base: str, token: str, clients: int, per_client: int, tag: str) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {token}"}

    async def client_loop(client: httpx.AsyncClient, number: int) -> None:
        for n in range(per_client):
            started = time.perf_counter()
            response = await client.post(
                f"/api/v1/users/u{number}/consume",
                json={"amount": 1},
                headers={"Idempotency-Key": f"{tag}-{number}-{n}"},
            )
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[response.status_code] += 1

    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=120) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client, number) for number in range(clients)))
        elapsed = time.perf_counter() - started
    return {
        "clients": clients,
        "consumes": len(latencies),
        "ok": statuses[200],
        "statuses": dict(statuses),
        "per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
    }


def library_consumes(url: str, count: int) -> dict[str, Any]:
    """The same consume, one thread, through `credit_jobs.usecases.consume` (the engine the API builds)."""
    from credit_jobs.adapters import database

    engine = database.create_engine(url)
    latencies: list[float] = []
    consume(engine, "u0", 1, request_id="lib-warm-up")
    started = time.perf_counter()
    for n in range(count):
        one = time.perf_counter()
        consume(engine, f"u{n % CLIENTS}", 1, request_id=f"lib-{n}")
        latencies.append((time.perf_counter() - one) * 1000)
    elapsed = time.perf_counter() - started
    engine.dispose()
    return {
        "consumes": count,
        "per_s": count / elapsed,
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
    }


def consumed_credits(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        balance = conn.execute(sa.text("SELECT sum(balance) FROM credit_accounts")).scalar_one()
    report = check_invariants(engine)
    engine.dispose()
    if not report.ok:
        raise SystemExit(f"the ledger is not sound after the bench: {report.violations}")
    return CLIENTS * STARTING_CREDITS - int(balance)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run, ~1.5 minutes)")
    args = parser.parse_args()
    baseline_reads, per_client, library_count = (100, 10, 300) if args.quick else (500, 60, 1000)

    read_token, ledger_token = secrets.token_hex(32), secrets.token_hex(32)
    tokens = f"reader:read:{read_token}\napp:read,ledger:{ledger_token}"
    workdir = Path(tempfile.mkdtemp(prefix="bench-api-"))
    server = start_embedded()
    try:
        admin = sa.create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text('DROP DATABASE IF EXISTS "bench_api"'))
            conn.execute(sa.text('CREATE DATABASE "bench_api"'))
        admin.dispose()
        url = server.url("bench_api")
        upgrade_schema(url)
        seed(url, CLIENTS)

        with api_process(url, tokens, workdir / "api-defaults.log") as base:
            a = asyncio.run(bench_flood(base, read_token, baseline_reads))
        print(
            f"(a) bad-auth flood: {FLOOD} bad requests in {a['flood_s']:.1f} s ({a['flood_per_s']:.0f}/s) from "
            f"{FLOOD_CONNECTIONS} connections; {a['bad_429_share']:.1%} answered 429 ({a['bad_statuses']}); "
            f"good p99 {a['good_p99_during_ms']:.1f} ms during vs {a['good_p99_before_ms']:.1f} ms before "
            f"(ratio {a['p99_ratio']:.2f}x; after: {a['p99_ratio_after']:.2f}x), p50 {a['good_p50_during_ms']:.1f} vs "
            f"{a['good_p50_before_ms']:.1f} ms; {a['good_during']} good requests during, {a['good_refused']} refused",
            flush=True,
        )

        library = library_consumes(url, library_count)
        raised = {
            "CREDITJOBS_API_RATE_LIMIT_GLOBAL": "100000/second",
            "CREDITJOBS_API_RATE_LIMIT_CLIENT": "100000/second",
        }
        with api_process(url, tokens, workdir / "api-raised.log", **raised) as base:
            asyncio.run(http_consumes(base, ledger_token, CLIENTS, 2, "warm"))  # warm-up
            one = asyncio.run(http_consumes(base, ledger_token, 1, library_count, "one"))
            many = asyncio.run(http_consumes(base, ledger_token, CLIENTS, per_client, "many"))
        consumed = consumed_credits(url)
        expected = 1 + library_count + 2 * CLIENTS + one["ok"] + many["ok"]
        if consumed != expected:
            raise SystemExit(f"consumed {consumed} credits, but {expected} consumes succeeded")
        print(
            f"(b) consume: library 1 thread {library['per_s']:.0f}/s (p99 {library['p99_ms']:.1f} ms); HTTP 1 client "
            f"{one['per_s']:.0f}/s (p99 {one['p99_ms']:.1f} ms); HTTP {CLIENTS} clients {many['per_s']:.0f}/s "
            f"(p50 {many['p50_ms']:.1f} ms, p99 {many['p99_ms']:.1f} ms, statuses {many['statuses']}). Ratios: "
            f"{CLIENTS} clients / library throughput {many['per_s'] / library['per_s']:.2f}x, / 1 client "
            f"{many['per_s'] / one['per_s']:.2f}x; 1 client / library {one['per_s'] / library['per_s']:.2f}x; "
            f"p99 {CLIENTS} clients / 1 client {many['p99_ms'] / one['p99_ms']:.1f}x. Ledger sound, {consumed} "
            "credits consumed = successful answers.",
            flush=True,
        )
        results = Path("bench/results")
        results.mkdir(parents=True, exist_ok=True)
        (results / "api.json").write_text(
            json.dumps({"quick": args.quick, "flood": a, "library": library, "one": one, "many": many}, indent=2)
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
