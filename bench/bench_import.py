"""Benchmark: `credit-jobs import saas-template` of N template users vs distribute-credits of N users.

Not a test. Both are real processes on the same database in the same run (the machines are shared and noisy, so
the ratio is what to read); each time is the run's own `duration_s` (interpreter start-up excluded). Per size: the
SaaS template's `credit_transaction` and `user_credit` filled for N users (a sign-up gift each, last month's grant,
this month's grant for half of them, a usage row for a quarter, a duplicate `user_credit` row for 1%), then a dry
run, the import, a second import (changes nothing), and a distribution of N demo users (`credit-jobs demo seed`'s
generator) for comparison.

Usage: python bench/bench_import.py [--sizes 100000,1000000]
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
AS_OF = "2026-11-29T00:00:00Z"
PERIOD = "2026-11"

TEMPLATE = """
CREATE TABLE user_credit (
    id text PRIMARY KEY, user_id text NOT NULL, current_credits integer DEFAULT 0, last_refresh_at timestamp,
    created_at timestamp NOT NULL DEFAULT now(), updated_at timestamp NOT NULL DEFAULT now());
CREATE TABLE credit_transaction (
    id text PRIMARY KEY, user_id text NOT NULL, type text NOT NULL, description text, amount integer NOT NULL,
    remaining_amount integer, payment_id text, expiration_date timestamp, expiration_date_processed_at timestamp,
    period_key integer DEFAULT 0, created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now());
CREATE UNIQUE INDEX credit_transaction_user_type_period ON credit_transaction (user_id, type, period_key)
    WHERE period_key > 0;
INSERT INTO credit_transaction (id, user_id, type, amount, remaining_amount, expiration_date, period_key, created_at)
SELECT 'g' || i, md5(i::text), 'REGISTER_GIFT', 50, 50 - i % 50, NULL, 0, timestamp '2026-09-01'
FROM generate_series(1, :n) i;
INSERT INTO credit_transaction (id, user_id, type, amount, remaining_amount, expiration_date, period_key, created_at)
SELECT 'p' || i, md5(i::text), CASE WHEN i % 3 = 0 THEN 'SUBSCRIPTION_RENEWAL' ELSE 'MONTHLY_REFRESH' END,
       1000, 500, timestamp '2026-12-01', 202610, timestamp '2026-10-01'
FROM generate_series(1, :n) i;
INSERT INTO credit_transaction (id, user_id, type, amount, remaining_amount, expiration_date, period_key, created_at)
SELECT 'm' || i, md5(i::text), CASE WHEN i % 3 = 0 THEN 'SUBSCRIPTION_RENEWAL' ELSE 'MONTHLY_REFRESH' END,
       1000, 1000 - i % 100, timestamp '2026-12-31', 202611, timestamp '2026-11-01'
FROM generate_series(1, :n) i WHERE i % 2 = 0;
INSERT INTO credit_transaction (id, user_id, type, amount, remaining_amount, period_key, created_at)
SELECT 'u' || i, md5(i::text), 'USAGE', -10, NULL, 0, timestamp '2026-10-15'
FROM generate_series(1, :n) i WHERE i % 4 = 0;
INSERT INTO user_credit (id, user_id, current_credits)
SELECT 'c' || i, md5(i::text), 50 - i % 50 + 500 + CASE WHEN i % 2 = 0 THEN 1000 - i % 100 ELSE 0 END
FROM generate_series(1, :n) i;
INSERT INTO user_credit (id, user_id, current_credits, updated_at)
SELECT 'd' || i, md5(i::text), 0, timestamp '2026-01-01' FROM generate_series(1, :n) i WHERE i % 100 = 0;
ANALYZE credit_transaction;
ANALYZE user_credit
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


def bench(admin: sa.Engine, server: Any, size: int) -> dict[str, Any]:
    name = f"bench_import_{size}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = server.url(name)
    upgrade_schema(url)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in TEMPLATE.strip().split(";\n"):
            conn.execute(sa.text(statement), {"n": size})
    seed_demo_data(engine, size, gifts=False)
    libpq = url.replace("postgresql+psycopg://", "postgresql://", 1)
    dry = run_cli(libpq, "import", "saas-template", "--as-of", AS_OF, "--dry-run")
    first = run_cli(libpq, "import", "saas-template", "--as-of", AS_OF)
    again = run_cli(libpq, "import", "saas-template", "--as-of", AS_OF)
    distribute = run_cli(libpq, "run", "distribute-credits", "--period-key", PERIOD)
    sound = check_invariants(engine).ok
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    return {
        "users": size,
        "template_grants": first["imported"],
        "dry_run_s": dry["duration_s"],
        "import_s": first["duration_s"],
        "second_import_s": again["duration_s"],
        "second_import_imported": again["imported"],
        "distribute_s": distribute["duration_s"],
        "import_vs_distribute": round(first["duration_s"] / distribute["duration_s"], 2),
        "balance_mismatches": first["balance_mismatches"],
        "duplicate_user_credit_users": first["duplicate_user_credit_users"],
        "check_ok": sound,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000", help="comma-separated user counts")
    sizes = [int(s) for s in parser.parse_args().sizes.split(",")]
    server = start_embedded()
    admin = sa.create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")
    try:
        for size in sizes:
            print(json.dumps(bench(admin, server, size)), flush=True)
    finally:
        admin.dispose()
        server.stop()


if __name__ == "__main__":
    main()
