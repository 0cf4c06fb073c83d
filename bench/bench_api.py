"""Benchmark: the HTTP API (`credit-jobs api`) under each attack, and `consume` with 50 concurrent clients.

Not a test. A real `credit-jobs api` process on loopback and the embedded PostgreSQL; every figure is a ratio to a
baseline measured in the same run against the same server (these machines are shared and noisy: absolute times lie).

(a) The attacks below, each against a fresh API process at the production rate limits, while one good client
    (a valid bearer token, 127.0.0.1) keeps reading a balance. Reported per attack: the good requests' p99 during
    it relative to the same good requests without it (measured before, and again after), the good requests refused,
    the attack's answers (429 once the failed-authentication budget — 20/minute per address and claimed principal —
    is spent, so its credentials are no longer even checked), and the process's peak RSS:
    (a1) 2,000 requests with a well-formed bearer token nobody holds, 8 connections, from another address (127.0.0.2);
    (a2) 2,000 guessed Basic passwords for the real user, from the good client's own address: the good bearer client
         and the right password must still go through;
    (a3) 2,000 wrong tokens, each with a new X-Forwarded-For (the peer is not a trusted proxy: the header is ignored,
         the budget stays the peer's);
    (a4) 6 unauthenticated POSTs of 100 MB each, 3 at a time: answered 401 before the body is read (peak RSS stays
         what it was).
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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
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
BASIC_USER, BASIC_PASSWORD = "scheduler", secrets.token_urlsafe(24)
BIG_BODY = 100 * 1024 * 1024  # per unauthenticated request of case (a4)
BIG_BODIES, BIG_BODY_CONNECTIONS = 6, 3
STARTING_CREDITS = 10_000_000
GOOD_RATE = 25  # good reads a second: half the per-principal limit (50/second), so a refusal is the attack's doing


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
def api_process(url: str, tokens: str, log: Path, **limits: str) -> Iterator[tuple[str, int]]:
    """A real `credit-jobs api` on a free loopback port (JSON logs to `log`): (base URL, pid); stopped on the way
    out. The seed's Basic pair is configured too (user `scheduler`), for the password-guessing case."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CREDITJOB", "CRON_JOBS"))},
        "DATABASE_URL": url.replace("postgresql+psycopg://", "postgresql://", 1),
        "LOG_FORMAT": "json",
        "CREDITJOBS_API_TOKENS": tokens,
        "CRON_JOBS_USERNAME": BASIC_USER,
        "CRON_JOBS_PASSWORD": BASIC_PASSWORD,
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
        yield base, process.pid
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
    """Sequential balance reads, at most GOOD_RATE a second (a well-behaved app, inside its own 50/second limit):
    `count` of them, or until `until` is set. (latencies in ms, statuses)"""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    while (count is not None and len(latencies) < count) or (until is not None and not until.is_set()):
        started = time.perf_counter()
        response = await client.get("/api/v1/users/u0/balance")
        elapsed = time.perf_counter() - started
        latencies.append(elapsed * 1000)
        statuses[response.status_code] += 1
        await asyncio.sleep(max(0.0, 1 / GOOD_RATE - elapsed))
    return latencies, statuses


Attack = Callable[[str], Awaitable[Counter[int]]]


async def _requests(count: int, connections: int, client: httpx.AsyncClient, send: Callable[..., Any]) -> Counter[int]:
    """`count` requests over `connections` concurrent workers on `client`: their statuses."""
    statuses: Counter[int] = Counter()
    remaining = iter(range(count))

    async def worker() -> None:
        for number in remaining:
            statuses[(await send(client, number)).status_code] += 1

    await asyncio.gather(*(worker() for _ in range(connections)))
    return statuses


async def wrong_tokens(base: str) -> Counter[int]:
    """(a1) A well-formed bearer token nobody holds, from another address."""
    transport = httpx.AsyncHTTPTransport(local_address=BAD_ADDRESS)
    headers = {"Authorization": f"Bearer {secrets.token_hex(32)}"}
    async with httpx.AsyncClient(base_url=base, transport=transport, headers=headers, timeout=60) as client:
        return await _requests(FLOOD, FLOOD_CONNECTIONS, client, lambda c, _: c.get("/api/v1/users/u0/balance"))


async def guessed_passwords(base: str) -> Counter[int]:
    """(a2) Basic passwords guessed for the real user name, from the good client's own address (127.0.0.1)."""
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        return await _requests(
            FLOOD,
            FLOOD_CONNECTIONS,
            client,
            lambda c, n: c.get("/api/v1/runs", auth=(BASIC_USER, f"guess-{n}")),
        )


async def spoofed_addresses(base: str) -> Counter[int]:
    """(a3) Wrong tokens with a new X-Forwarded-For each time, hoping for a fresh failed-auth budget per address."""
    transport = httpx.AsyncHTTPTransport(local_address=BAD_ADDRESS)
    headers = {"Authorization": f"Bearer {secrets.token_hex(32)}"}
    async with httpx.AsyncClient(base_url=base, transport=transport, headers=headers, timeout=60) as client:
        return await _requests(
            FLOOD,
            FLOOD_CONNECTIONS,
            client,
            lambda c, n: c.get(
                "/api/v1/users/u0/balance",
                headers={"X-Forwarded-For": f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"},
            ),
        )


async def big_unauthenticated_bodies(base: str) -> Counter[int]:
    """(a4) Unauthenticated POSTs of 100 MB each, streamed, 3 at a time: answered before the body is read."""
    transport = httpx.AsyncHTTPTransport(local_address=BAD_ADDRESS)

    async def body() -> AsyncIterator[bytes]:
        chunk = b"{" * (1024 * 1024)
        for _ in range(BIG_BODY // len(chunk)):
            yield chunk

    async def send(client: httpx.AsyncClient, _: int) -> httpx.Response:
        try:
            return await client.post(
                "/api/v1/users/u0/consume", content=body(), headers={"Content-Type": "application/json"}
            )
        except httpx.TransportError:  # the server answered and closed while the body was still being sent
            return httpx.Response(401)

    async with httpx.AsyncClient(base_url=base, transport=transport, timeout=120) as client:
        return await _requests(BIG_BODIES, BIG_BODY_CONNECTIONS, client, send)


ATTACKS: dict[str, tuple[Attack, int]] = {  # name -> (attack, requests it sends)
    "wrong bearer tokens (another address)": (wrong_tokens, FLOOD),
    "guessed Basic passwords (the good client's own address)": (guessed_passwords, FLOOD),
    "rotating X-Forwarded-For (untrusted peer)": (spoofed_addresses, FLOOD),
    f"unauthenticated {BIG_BODY // 2**20} MB bodies": (big_unauthenticated_bodies, BIG_BODIES),
}


def _process_tree(pid: int) -> dict[int, list[str]]:
    """The fields of /proc/<pid>/stat (after the command name) of `pid` and its living descendants (the API's
    workers), by pid."""
    stats = {}
    for path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stats[int(path.parent.name)] = path.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
    tree = {pid}
    for _ in range(4):  # a few generations deep
        tree |= {child for child, fields in stats.items() if int(fields[1]) in tree}
    return {p: stats[p] for p in tree if p in stats}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process and its descendants have used so far (robust to load, unlike wall-clock
    time)."""
    ticks = sum(int(fields[11]) + int(fields[12]) for fields in _process_tree(pid).values())
    return ticks / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    """The resident-set high-water marks (VmHWM) of the process and its descendants, summed, MiB."""
    total = 0
    for member in _process_tree(pid):
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total / 1024 if total else float("nan")


async def bench_attack(base: str, read_token: str, baseline_count: int, attack: Attack, sent: int) -> dict[str, Any]:
    """Good balance reads (a valid token, 127.0.0.1) before, during and after the attack: their p99 and refusals."""
    headers = {"Authorization": f"Bearer {read_token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as good:
        await good_reads(good, 50, None)  # warm-up: connections, statement caches
        before, _ = await good_reads(good, baseline_count, None)
        done = asyncio.Event()

        async def attacking() -> Counter[int]:
            try:
                return await attack(base)
            finally:
                done.set()

        started = time.perf_counter()
        (during, during_statuses), bad = await asyncio.gather(good_reads(good, None, done), attacking())
        attack_s = time.perf_counter() - started
        after, _ = await good_reads(good, baseline_count, None)
    p99_before, p99_during, p99_after = (percentile(x, 0.99) for x in (before, during, after))
    return {
        "good_p99_before_ms": p99_before,
        "good_p99_during_ms": p99_during,
        "good_p99_after_ms": p99_after,
        "p99_ratio": p99_during / p99_before,
        "p99_ratio_after": p99_after / p99_before,
        "good_during": len(during),
        "good_refused": sum(n for status, n in during_statuses.items() if status != 200),
        "good_statuses": dict(during_statuses),
        "bad_statuses": dict(bad),
        "bad_429_share": bad[429] / sent,
        "attack_s": attack_s,
        "attack_per_s": sent / attack_s,
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

        attacks: dict[str, Any] = {}
        for number, (name, (attack, sent)) in enumerate(ATTACKS.items(), start=1):
            # each attack on a fresh process at the production limits: one attack's spent budgets never help the next
            with api_process(url, tokens, workdir / f"api-attack-{number}.log") as (base, pid):
                rss_before = peak_rss_mib(pid)
                a = asyncio.run(bench_attack(base, read_token, baseline_reads, attack, sent))
                a["peak_rss_mib_before"], a["peak_rss_mib"] = rss_before, peak_rss_mib(pid)
            attacks[name] = a
            print(
                f"(a{number}) {name}: {sent} bad requests in {a['attack_s']:.1f} s; {a['bad_429_share']:.1%} answered "
                f"429 ({a['bad_statuses']}); good p99 {a['good_p99_during_ms']:.1f} ms during vs "
                f"{a['good_p99_before_ms']:.1f} ms before (ratio {a['p99_ratio']:.2f}x; after: "
                f"{a['p99_ratio_after']:.2f}x); {a['good_during']} good requests during, {a['good_refused']} refused "
                f"({a['good_statuses']}); "
                f"peak RSS {a['peak_rss_mib']:.0f} MiB (before the attack {a['peak_rss_mib_before']:.0f} MiB)",
                flush=True,
            )

        library = library_consumes(url, library_count)
        raised = {
            "CREDITJOBS_API_RATE_LIMIT_GLOBAL": "100000/second",
            "CREDITJOBS_API_RATE_LIMIT_CLIENT": "100000/second",
        }
        with api_process(url, tokens, workdir / "api-raised.log", **raised) as (base, pid):
            asyncio.run(http_consumes(base, ledger_token, CLIENTS, 2, "warm"))  # warm-up
            one = asyncio.run(http_consumes(base, ledger_token, 1, library_count, "one"))
            cpu_before = cpu_seconds(pid)
            many = asyncio.run(http_consumes(base, ledger_token, CLIENTS, per_client, "many"))
            many["cpu_ms_per_request"] = (cpu_seconds(pid) - cpu_before) * 1000 / (CLIENTS * per_client)
            many["peak_rss_mib"] = peak_rss_mib(pid)
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
            f"credits consumed = successful answers. Server CPU {many['cpu_ms_per_request']:.1f} ms per consume; "
            f"peak RSS {many['peak_rss_mib']:.0f} MiB.",
            flush=True,
        )
        results = Path("bench/results")
        results.mkdir(parents=True, exist_ok=True)
        (results / "api.json").write_text(
            json.dumps(
                {"quick": args.quick, "attacks": attacks, "library": library, "one": one, "many": many}, indent=2
            )
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
