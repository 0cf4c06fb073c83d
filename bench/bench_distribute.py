"""Benchmark: distribute-credits and expire-credits against raw set-based SQL, measured in the same run.

Not a test (`make bench`). These machines are shared and noisy, so absolute times lie: every figure is printed
next to a baseline measured in the same run on the same database, and the ratios are what to read.

For each size (default 10k, 100k, 1M users, seeded with `credit-jobs demo seed`'s generator):
  raw      one INSERT … SELECT … ON CONFLICT DO NOTHING + balance upsert, no job machinery (in-process)
  ours     `credit-jobs run distribute-credits` as a real process (lifecycle, guard, audit, chunks);
           time = the run's own duration_s (interpreter start-up excluded, reported separately); peak RSS of it
  rerun    the same period again (every user already granted)
  expire   `credit-jobs run expire-credits` vs one raw set-based UPDATE … FROM with entries and balances
  check    every `credit-jobs check` invariant plus `--period-key` coverage (in-process, on the ledger the runs
           above left: one grant and one expiry entry per eligible user), as a ratio to the raw distribute
and once, on a 20k sample: the per-user loop (exists-check, insert, balance upsert, commit per user), extrapolated.

User ids are text (migration 0007): `--id-style numeric` seeds '1', '2', … (the demo's ids); `--id-style random32`
seeds 32-character random-looking hex ids (md5 of the user number), what a host application's ids look like. Both
the raw baseline and the runs work on the same ids.

Usage: python bench/bench_distribute.py [--sizes 10000,100000,1000000] [--loop-sample 20000] [--id-style random32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from credit_jobs.adapters.embedded_database import start_embedded
from credit_jobs.adapters.schema_migrations import upgrade_schema
from credit_jobs.usecases.check_invariants import check_invariants
from credit_jobs.usecases.demo_data import ID_STYLES, seed_demo_data

CLI = str(Path(sys.executable).with_name("credit-jobs"))
PERIOD = "2026-11"
LOOP_PERIOD = "2000-01"  # the per-user loop baseline grants its own (canonical) period, apart from PERIOD
PERIOD_START = "2026-11-01T00:00:00+00"

RAW_DISTRIBUTE = """
WITH inserted AS (
    INSERT INTO credit_grants (user_id, grant_type, grant_family, period_key, amount, remaining, granted_at,
                               expires_at, cause_run_id)
    SELECT e.user_id, p.grant_type, 'plan', :pk, p.credits_per_period, p.credits_per_period, now(),
           CAST(:start AS timestamptz) + make_interval(days => p.expiry_days), :run_id
    FROM credit_eligibility e JOIN plan_credit_policies p ON p.plan_code = e.plan_code AND p.active
    WHERE (e.status = 'active' OR e.is_lifetime) AND NOT e.is_banned
    ON CONFLICT (user_id, grant_family, period_key) WHERE period_key IS NOT NULL AND NOT legacy_duplicate
        AND rolled_back_at IS NULL DO NOTHING
    RETURNING user_id, amount)
INSERT INTO credit_accounts AS a (user_id, balance)
SELECT user_id, sum(amount) FROM inserted GROUP BY user_id
ON CONFLICT (user_id) DO UPDATE SET balance = a.balance + EXCLUDED.balance
"""

RAW_EXPIRE = """
WITH expired AS (
    UPDATE credit_grants g SET remaining = 0, expired_at = now()
    FROM (SELECT grant_id, remaining FROM credit_grants
          WHERE expired_at IS NULL AND remaining > 0 AND expires_at <= now()) p
    WHERE g.grant_id = p.grant_id
    RETURNING g.grant_id, g.user_id, p.remaining AS amount
), entries AS (
    INSERT INTO credit_entries (user_id, grant_id, kind, amount, cause_run_id)
    SELECT user_id, grant_id, 'expiry', amount, :run_id FROM expired
)
UPDATE credit_accounts a SET balance = a.balance - s.amount
FROM (SELECT user_id, sum(amount) AS amount FROM expired GROUP BY user_id) s WHERE a.user_id = s.user_id
"""


def run_cli(url: str, *args: str) -> dict[str, Any]:
    """Run the real CLI; return its end-of-run log line plus wall time and the child's own peak RSS (wait4)."""
    env = {**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json"}
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([CLI, "run", *args], env=env, stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        log.seek(0)
        stderr = log.read()
    if proc.returncode != 0:
        raise SystemExit(f"credit-jobs run {' '.join(args)} failed ({proc.returncode}):\n{stderr}")
    end: dict[str, Any] = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")][-1]
    end["wall_s"] = wall
    end["peak_rss_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
    return end


def timed(engine: sa.Engine, sql: str, **params: Any) -> float:
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(sa.text(sql), params)
    return time.perf_counter() - started


def reset_ledger(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE credit_entries, credit_grants, credit_accounts, job_runs"))
    vacuum(engine)


def vacuum(engine: sa.Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))


def unexpire(engine: sa.Engine) -> None:
    """Put every grant back to full and due for expiry, balances to match (not timed)."""
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE credit_entries"))
        conn.execute(sa.text("DELETE FROM job_runs WHERE usecase = 'expire-credits'"))
        conn.execute(
            sa.text(
                "UPDATE credit_grants SET remaining = amount, expired_at = NULL, expires_at = now() - interval '1h'"
            )
        )
        conn.execute(
            sa.text(
                "UPDATE credit_accounts a SET balance = s.total FROM "
                "(SELECT user_id, sum(remaining) AS total FROM credit_grants GROUP BY user_id) s "
                "WHERE a.user_id = s.user_id"
            )
        )
    vacuum(engine)


def per_user_loop(engine: sa.Engine, sample: int) -> float:
    """The template's loop: per user an exists-check, an insert and a balance upsert, each user its own commit."""
    with engine.connect() as conn:
        users = conn.execute(
            sa.text(
                "SELECT e.user_id, p.grant_type, p.credits_per_period FROM credit_eligibility e "
                "JOIN plan_credit_policies p USING (plan_code) "
                "WHERE (e.status = 'active' OR e.is_lifetime) AND NOT e.is_banned ORDER BY e.user_id LIMIT :n"
            ),
            {"n": sample},
        ).all()
    run_id = uuid.uuid4()
    started = time.perf_counter()
    with engine.connect() as conn:
        for user_id, grant_type, credits in users:
            exists = conn.execute(
                sa.text(
                    "SELECT 1 FROM credit_grants WHERE user_id = :u AND grant_family = 'plan' AND period_key = :pk"
                ),
                {"u": user_id, "pk": LOOP_PERIOD},
            ).first()
            if not exists:
                conn.execute(
                    sa.text(
                        "INSERT INTO credit_grants (user_id, grant_type, grant_family, period_key, amount, remaining, "
                        "cause_run_id) VALUES (:u, :t, 'plan', :pk, :c, :c, :r)"
                    ),
                    {"u": user_id, "t": grant_type, "pk": LOOP_PERIOD, "c": credits, "r": run_id},
                )
                conn.execute(
                    sa.text(
                        "INSERT INTO credit_accounts AS a (user_id, balance) VALUES (:u, :c) "
                        "ON CONFLICT (user_id) DO UPDATE SET balance = a.balance + EXCLUDED.balance"
                    ),
                    {"u": user_id, "c": credits},
                )
            conn.commit()
    return len(users) / (time.perf_counter() - started)


def bench_size(server: Any, users: int, loop_rate: float | None, id_style: str = "numeric") -> dict[str, Any]:
    name = f"bench_{users}"
    admin = sa.create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = server.url(name)
    upgrade_schema(url)
    engine = sa.create_engine(url)
    seed_demo_data(engine, users, seed=1, gifts=False, id_style=id_style)
    vacuum(engine)
    with engine.connect() as conn:
        eligible = conn.execute(
            sa.text(
                "SELECT count(*) FROM credit_eligibility e JOIN plan_credit_policies p USING (plan_code) "
                "WHERE (e.status = 'active' OR e.is_lifetime) AND NOT e.is_banned"
            )
        ).scalar_one()

    raw = timed(engine, RAW_DISTRIBUTE, pk=PERIOD, start=PERIOD_START, run_id=uuid.uuid4())
    reset_ledger(engine)
    ours = run_cli(url, "distribute-credits", "--period-key", PERIOD)
    assert ours["granted"] == eligible, (ours["granted"], eligible)
    rerun = run_cli(url, "distribute-credits", "--period-key", PERIOD)
    assert rerun["granted"] == 0

    unexpire(engine)
    raw_expire = timed(engine, RAW_EXPIRE, run_id=uuid.uuid4())
    unexpire(engine)
    ours_expire = run_cli(url, "expire-credits")
    assert ours_expire["expired_grants"] == eligible
    vacuum(engine)
    started = time.perf_counter()
    report = check_invariants(engine, period_key=PERIOD)
    check_s = time.perf_counter() - started
    assert report.ok, report.violations
    assert report.coverage is not None
    assert report.coverage.missing == 0
    engine.dispose()

    result = {
        "users": users,
        "id_style": id_style,
        "eligible": eligible,
        "raw_distribute_s": raw,
        "ours_distribute_s": ours["duration_s"],
        "ours_distribute_wall_s": ours["wall_s"],
        "distribute_ratio": ours["duration_s"] / raw,
        "rerun_s": rerun["duration_s"],
        "rerun_ratio": rerun["duration_s"] / ours["duration_s"],
        "raw_expire_s": raw_expire,
        "ours_expire_s": ours_expire["duration_s"],
        "expire_ratio": ours_expire["duration_s"] / raw_expire,
        "check_s": check_s,
        "check_ratio": check_s / raw,
        "peak_rss_mb_distribute": ours["peak_rss_mb"],
        "peak_rss_mb_expire": ours_expire["peak_rss_mb"],
        "grants_per_s": eligible / ours["duration_s"],
    }
    if loop_rate:
        result["loop_extrapolated_s"] = eligible / loop_rate
        result["loop_ratio"] = result["loop_extrapolated_s"] / ours["duration_s"]
    with sa.create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}"'))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--loop-sample", type=int, default=20_000)
    parser.add_argument("--id-style", choices=sorted(ID_STYLES), default="numeric")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    server = start_embedded()
    try:
        loop_rate = None
        if args.loop_sample:
            name = "bench_loop"
            admin = sa.create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            admin.dispose()
            upgrade_schema(server.url(name))
            engine = sa.create_engine(server.url(name))
            seed_demo_data(engine, int(args.loop_sample * 1.2), seed=1, gifts=False, id_style=args.id_style)
            loop_rate = per_user_loop(engine, args.loop_sample)
            engine.dispose()
            print(f"per-user loop on a {args.loop_sample} sample: {loop_rate:,.0f} grants/s")
        results = [bench_size(server, n, loop_rate, args.id_style) for n in sizes]
    finally:
        server.stop()

    header = (
        f"{'users':>9} {'raw s':>7} {'ours s':>7} {'ours/raw':>8} {'loop s*':>8} {'loop/ours':>9} "
        f"{'rerun s':>7} {'rerun/1st':>9} {'exp raw':>7} {'exp ours':>8} {'exp ratio':>9} {'check s':>7} "
        f"{'check/raw':>9} {'RSS MB':>7}"
    )
    print(header)
    for r in results:
        print(
            f"{r['users']:>9,} {r['raw_distribute_s']:>7.2f} {r['ours_distribute_s']:>7.2f} "
            f"{r['distribute_ratio']:>8.2f} {r.get('loop_extrapolated_s', 0):>8.1f} {r.get('loop_ratio', 0):>9.0f} "
            f"{r['rerun_s']:>7.2f} {r['rerun_ratio']:>9.2f} {r['raw_expire_s']:>7.2f} {r['ours_expire_s']:>8.2f} "
            f"{r['expire_ratio']:>9.2f} {r['check_s']:>7.2f} {r['check_ratio']:>9.2f} "
            f"{max(r['peak_rss_mb_distribute'], r['peak_rss_mb_expire']):>7.0f}"
        )
    print("* per-user loop extrapolated from the sample's rate to the eligible users of each size")
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"distribute-{args.id_style}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
