"""Benchmark: `credit-jobs rollback distribute-credits` of a whole period vs the distribution of that period.

Not a test. Both are real processes on the same database in the same run (the machines are shared and noisy, so
the ratio is what to read); each time is the run's own `duration_s` (interpreter start-up excluded). Sequence per
size: seed N users (`credit-jobs demo seed`'s generator, no gifts), distribute the period, spend part of 1% of the
grants (so the rollback meets partly consumed grants too), roll the period back, distribute it again (the redo).
Target: rollback at most 2 times the distribution.

Usage: python bench/bench_rollback.py [--sizes 100000,1000000] [--chunks]

--chunks: both runs log at debug level; per fifth of each run, the median chunk time (from the chunk lines'
timestamps) and, for the rollback, the median pick and apply statement times; around the rollback, the autovacuum
and autoanalyze counts of the tables it writes and the checkpoints (requested/done) and buffers they wrote.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
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


def run_cli(url: str, *args: str, chunks: bool = False) -> dict[str, Any]:
    """Run the real CLI; return its end-of-run log line plus wall time (and, with `chunks`, its chunk lines)."""
    env = {**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json", **({"LOG_LEVEL": "debug"} if chunks else {})}
    started = time.perf_counter()
    proc = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"credit-jobs {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    end: dict[str, Any] = lines[-1]
    end["wall_s"] = time.perf_counter() - started
    end["chunk_lines"] = [line for line in lines if str(line.get("event", "")).endswith(".chunk_done")]
    return end


def chunk_profile(lines: list[dict[str, Any]], parts: int = 5) -> str:
    """Median chunk time per fifth of a run (the gaps between chunk lines' timestamps), plus pick/apply if logged."""
    stamps = [datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")) for line in lines]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
    if len(gaps) < parts:
        return "too few chunks"
    out = []
    for i in range(parts):
        lo, hi = len(gaps) * i // parts, len(gaps) * (i + 1) // parts
        part = f"{statistics.median(gaps[lo:hi]):.3f}s (max {max(gaps[lo:hi]):.2f})"
        if "apply_s" in lines[0]:
            picks = [line["pick_s"] for line in lines[lo + 1 : hi + 1]]
            applies = [line["apply_s"] for line in lines[lo + 1 : hi + 1]]
            part += f" [pick {statistics.median(picks):.3f}, apply {statistics.median(applies):.3f}]"
        out.append(part)
    return " | ".join(out)


SERVER_STATS = """
SELECT (SELECT jsonb_object_agg(relname, jsonb_build_object(
            'autovacuum', autovacuum_count, 'autoanalyze', autoanalyze_count, 'dead', n_dead_tup))
        FROM pg_stat_user_tables WHERE relname IN ('credit_grants', 'credit_entries', 'credit_accounts')) AS tables,
       {checkpoints} AS checkpoints
"""
CHECKPOINTER = """(SELECT jsonb_build_object('requested', num_requested, 'done', num_done, 'buffers', buffers_written)
    FROM pg_stat_checkpointer)"""  # PostgreSQL 17+
BGWRITER = """(SELECT jsonb_build_object('requested', checkpoints_req, 'done', checkpoints_timed + checkpoints_req,
    'buffers', buffers_checkpoint) FROM pg_stat_bgwriter)"""


def server_stats(engine: sa.Engine) -> dict[str, Any]:
    """Autovacuum/autoanalyze counts of the ledger tables and checkpoint counters (cumulative; compare before/after)."""
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
        newer = conn.execute(sa.text("SELECT to_regclass('pg_catalog.pg_stat_checkpointer') IS NOT NULL")).scalar()
        row = conn.execute(sa.text(SERVER_STATS.format(checkpoints=CHECKPOINTER if newer else BGWRITER))).one()
    return {"tables": row.tables, "checkpoints": row.checkpoints}


def vacuum(engine: sa.Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))


def bench_size(server: Any, users: int, chunks: bool = False) -> dict[str, Any]:
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
    distribute = run_cli(url, "run", "distribute-credits", "--period-key", PERIOD, chunks=chunks)
    with engine.begin() as conn:
        conn.execute(sa.text(SPEND_SOME))
    vacuum(engine)
    before = server_stats(engine) if chunks else {}
    rollback = run_cli(
        url, "rollback", "distribute-credits", "--period-key", PERIOD, "--reason", "bench", chunks=chunks
    )
    after = server_stats(engine) if chunks else {}
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
        "distribute_chunks": chunk_profile(distribute["chunk_lines"]) if chunks else "",
        "rollback_chunks": chunk_profile(rollback["chunk_lines"]) if chunks else "",
        "server_before": before,
        "server_after": after,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--chunks", action="store_true", help="per-chunk timings and server counters (see above)")
    args = parser.parse_args()
    server = start_embedded()
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            row = bench_size(server, size, chunks=args.chunks)
            print(
                f"{row['users']:>9} users, {row['grants']} grants: distribute {row['distribute_s']:.2f}s, "
                f"rollback {row['rollback_s']:.2f}s (ratio {row['ratio']:.2f}x, {row['not_voided_users']} partly "
                f"spent), redo {row['redo_s']:.2f}s ({row['redo_granted']} granted)",
                flush=True,
            )
            if args.chunks:
                print(f"  distribute chunks by fifth: {row['distribute_chunks']}", flush=True)
                print(f"  rollback chunks by fifth:   {row['rollback_chunks']}", flush=True)
                print(f"  server before rollback: {json.dumps(row['server_before'], sort_keys=True)}", flush=True)
                print(f"  server after rollback:  {json.dumps(row['server_after'], sort_keys=True)}", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
