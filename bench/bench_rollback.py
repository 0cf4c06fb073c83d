"""Benchmark: `credit-jobs rollback distribute-credits` of a whole period vs the distribution of that period.

Not a test. Both are real processes on the same database in the same run (the machines are shared and noisy, so
the ratio is what to read); each time is the run's own `duration_s` (interpreter start-up excluded). Sequence per
size: seed N users (`credit-jobs demo seed`'s generator, no gifts), distribute the period, spend part of 1% of the
grants (so the rollback meets partly consumed grants too), roll the period back, distribute it again (the redo).
Target (issue 11): rollback at most 2 times the distribution.

Usage: python bench/bench_rollback.py [--sizes 100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from credit_jobs.adapters.embedded_database import start_embedded
from credit_jobs.adapters.schema_migrations import upgrade_schema
from credit_jobs.usecases.check_invariants import check_invariants
from credit_jobs.usecases.demo_data import seed_demo_data

CLI = str(Path(sys.executable).with_name("credit-jobs"))
PERIOD = "2026-11"

# 1% of the grants half spent, with their usage entries and balances (the ledger stays sound; not timed)
SPEND_SOME = """
WITH spent AS (
    UPDATE credit_grants SET remaining = remaining - amount / 2
    WHERE grant_id % 100 = 0 AND amount >= 2
    RETURNING grant_id, user_id, amount / 2 AS taken
), entries AS (
    INSERT INTO credit_entries (user_id, grant_id, kind, amount, cause_request_id)
    SELECT user_id, grant_id, 'usage', taken, 'bench-' || grant_id FROM spent
)
UPDATE credit_accounts a SET balance = a.balance - s.taken
FROM (SELECT user_id, sum(taken) AS taken FROM spent GROUP BY user_id) s WHERE a.user_id = s.user_id
"""


def run_cli(url: str, *args: str) -> dict[str, Any]:
    """Run the real CLI; return its end-of-run log line plus wall time."""
    env = {**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json"}
    started = time.perf_counter()
    proc = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"credit-jobs {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    end: dict[str, Any] = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")][-1]
    end["wall_s"] = time.perf_counter() - started
    return end


def vacuum(engine: sa.Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))


def bench_size(server: Any, users: int) -> dict[str, Any]:
    name = f"bench_rollback_{users}"
    admin = sa.create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = server.url(name)
    upgrade_schema(url)
    engine = sa.create_engine(url)
    seed_demo_data(engine, users, seed=1, gifts=False)
    vacuum(engine)
    distribute = run_cli(url, "run", "distribute-credits", "--period-key", PERIOD)
    with engine.begin() as conn:
        conn.execute(sa.text(SPEND_SOME))
    vacuum(engine)
    rollback = run_cli(url, "rollback", "distribute-credits", "--period-key", PERIOD, "--reason", "bench")
    assert rollback["rolled_back"] == distribute["granted"], (rollback["rolled_back"], distribute["granted"])
    vacuum(engine)
    redo = run_cli(url, "run", "distribute-credits", "--period-key", PERIOD)
    report = check_invariants(engine)
    assert report.ok, report.violations
    engine.dispose()
    return {
        "users": users,
        "grants": distribute["granted"],
        "distribute_s": distribute["duration_s"],
        "rollback_s": rollback["duration_s"],
        "ratio": rollback["duration_s"] / distribute["duration_s"],
        "not_voided_users": rollback["not_voided_users"],
        "redo_s": redo["duration_s"],
        "redo_granted": redo["granted"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    args = parser.parse_args()
    server = start_embedded()
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            row = bench_size(server, size)
            print(
                f"{row['users']:>9} users, {row['grants']} grants: distribute {row['distribute_s']:.2f}s, "
                f"rollback {row['rollback_s']:.2f}s (ratio {row['ratio']:.2f}x, {row['not_voided_users']} partly "
                f"spent), redo {row['redo_s']:.2f}s ({row['redo_granted']} granted)",
                flush=True,
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
