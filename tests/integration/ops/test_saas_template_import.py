"""`credit-jobs import saas-template` over the SaaS template's real schema, in a real PostgreSQL, as real processes.

The template's tables are created from its definition (tests/support/saas_template.py: text ids, the partial
unique index on (user_id, type, period_key) WHERE period_key > 0, no unique constraint on user_credit.user_id) and
filled with 3000 users — free, pro, lifetime and banned — with the template's own history: last month's grants
(some still live, some expired but never processed, some processed), sign-up gifts partly spent, bought packages, a
custom type, and **this month half-distributed** by the template (every even user has this month's grant). Its
`user_credit` cache has the known defects: duplicate rows for some users, drifted values for others.

Then, as an adopter would (docs/adopting.md): a dry run, the import, the eligibility view swapped in, this month's
distribute-credits and expire-credits, `credit-jobs check`, and a second import. What the import should carry over
is computed here from the template's rows with the test's own statement of the rules, never read back from the
code under test.

Beside that flow: bad input as real processes (exit 2, one line, nothing written), and in-process runs of the
lifecycle for a template in another schema, a month the ledger already granted, an import racing a distribution of
the same month, a template row the ledger refuses, and a rollback and redo of an imported month.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from credit_jobs.domain.contract import Trigger
from credit_jobs.lifecycle.run_lifecycle import RunRequest, execute_run
from credit_jobs.usecases.check_invariants import check_invariants
from credit_jobs.usecases.import_saas_template import ImportScope, import_usecase
from tests.support import cli_process
from tests.support.cli_process import cli_env, error_lines
from tests.support.ledger import add_policy, add_users, rows, scalar
from tests.support.runs import RunUsecase
from tests.support.saas_template import (
    ELIGIBILITY_SQL,
    create_template_tables,
    create_template_with_one_live_grant,
)

USERS = 3000
# The test's own statement of the mapping (docs/adopting.md): template type -> ledger grant type, periodic?
TYPES = {
    "MONTHLY_REFRESH": ("free_tier", True),
    "SUBSCRIPTION_RENEWAL": ("subscription", True),
    "LIFETIME_MONTHLY": ("lifetime_monthly", True),
    "REGISTER_GIFT": ("gift", False),
    "PURCHASE_PACKAGE": ("purchase", False),
    "TRANSFER_IN": ("adjustment", False),
}

# User i: class i % 10 — 0..5 free, 6..7 pro, 8 lifetime, 9 banned (free plan). Timestamps are the template's:
# without time zone, in UTC, around :base (the test's "now").
_FILL = """
INSERT INTO "user" (id, email, banned)
SELECT 'usr_' || lpad(i::text, 5, '0'), 'u' || i || '@example.com', CASE WHEN i % 10 = 9 THEN true END
FROM generate_series(1, :users) i;

INSERT INTO payment (id, price_id, type, user_id, customer_id, status, created_at)
SELECT 'pay_' || i, 'price_pro_month', 'subscription', 'usr_' || lpad(i::text, 5, '0'), 'cus_' || i, 'active',
       CAST(:base AS timestamp) - interval '40 days'
FROM generate_series(1, :users) i WHERE i % 10 IN (6, 7);

INSERT INTO user_lifetime_membership (id, user_id, price_id, cycle_ref_date)
SELECT 'ulm_' || i, 'usr_' || lpad(i::text, 5, '0'), 'price_lifetime', CAST(:base AS timestamp) - interval '90 days'
FROM generate_series(1, :users) i WHERE i % 10 = 8;

-- sign-up gifts: some used up, some partly; a third never expire
INSERT INTO credit_transaction (id, user_id, type, amount, remaining_amount, expiration_date, period_key, created_at)
SELECT 'ct_gift_' || i, 'usr_' || lpad(i::text, 5, '0'), 'REGISTER_GIFT', 50,
       CASE WHEN i % 4 = 0 THEN 0 ELSE 50 - (i % 5) * 10 END,
       CASE WHEN i % 3 = 0 THEN NULL ELSE CAST(:base AS timestamp) + interval '10 days' END, 0,
       CAST(:base AS timestamp) - interval '60 days'
FROM generate_series(1, :users) i;
INSERT INTO credit_transaction (id, user_id, type, amount, remaining_amount, period_key, created_at)
SELECT 'ct_use_' || i, 'usr_' || lpad(i::text, 5, '0'), 'USAGE', -50, NULL, 0,
       CAST(:base AS timestamp) - interval '50 days'
FROM generate_series(1, :users) i WHERE i % 4 = 0;

-- last month's grants (not banned users): processed by the template's expiry / expired 5 days ago, never processed /
-- expired yesterday, never processed / still live
INSERT INTO credit_transaction (id, user_id, type, amount, remaining_amount, expiration_date,
                                expiration_date_processed_at, period_key, created_at)
SELECT 'ct_prev_' || i, 'usr_' || lpad(i::text, 5, '0'), kind.type, kind.amount,
       CASE i % 6 WHEN 0 THEN 20 WHEN 1 THEN 30 WHEN 2 THEN 40 ELSE kind.amount / 2 END,
       CAST(:base AS timestamp) + CASE i % 6 WHEN 0 THEN interval '-5 days' WHEN 1 THEN interval '-5 days'
                                             WHEN 2 THEN interval '-1 day' ELSE interval '3 days' END,
       CASE WHEN i % 6 = 0 THEN CAST(:base AS timestamp) - interval '5 days' END,
       :prev_key, CAST(:base AS timestamp) - interval '35 days'
FROM generate_series(1, :users) i
CROSS JOIN LATERAL (SELECT CASE WHEN i % 10 IN (6, 7) THEN 'SUBSCRIPTION_RENEWAL' WHEN i % 10 = 8
                                THEN 'LIFETIME_MONTHLY' ELSE 'MONTHLY_REFRESH' END AS type,
                           CASE WHEN i % 10 IN (6, 7, 8) THEN 1000 ELSE 50 END AS amount) kind
WHERE i % 10 <> 9;

-- this month, half-distributed by the template: every even (not banned) user got it, some spent part
INSERT INTO credit_transaction (id, user_id, type, amount, remaining_amount, expiration_date, period_key, created_at)
SELECT 'ct_month_' || i, 'usr_' || lpad(i::text, 5, '0'), kind.type, kind.amount, kind.amount - (i % 7) * 5,
       CAST(:base AS timestamp) + interval '29 days', :month_key, CAST(:base AS timestamp) - interval '1 hour'
FROM generate_series(1, :users) i
CROSS JOIN LATERAL (SELECT CASE WHEN i % 10 IN (6, 7) THEN 'SUBSCRIPTION_RENEWAL' WHEN i % 10 = 8
                                THEN 'LIFETIME_MONTHLY' ELSE 'MONTHLY_REFRESH' END AS type,
                           CASE WHEN i % 10 IN (6, 7, 8) THEN 1000 ELSE 50 END AS amount) kind
WHERE i % 10 <> 9 AND i % 2 = 0;
-- ... and some of those pro users were free earlier this month: two live grants of the month (other types)
INSERT INTO credit_transaction (id, user_id, type, amount, remaining_amount, expiration_date, period_key, created_at)
SELECT 'ct_free_' || i, 'usr_' || lpad(i::text, 5, '0'), 'MONTHLY_REFRESH', 50, 45,
       CAST(:base AS timestamp) + interval '29 days', :month_key, CAST(:base AS timestamp) - interval '2 hours'
FROM generate_series(1, :users) i WHERE i % 50 = 6;

-- bought packages (never expire), incoming transfers and a type the template added itself
INSERT INTO credit_transaction (id, user_id, type, amount, remaining_amount, period_key, created_at)
SELECT 'ct_buy_' || i, 'usr_' || lpad(i::text, 5, '0'), 'PURCHASE_PACKAGE', 500, 300, 0,
       CAST(:base AS timestamp) - interval '20 days'
FROM generate_series(1, :users) i WHERE i % 25 = 0;
INSERT INTO credit_transaction (id, user_id, type, amount, remaining_amount, period_key, created_at)
SELECT 'ct_in_' || i, 'usr_' || lpad(i::text, 5, '0'), 'TRANSFER_IN', 70, 70, 0,
       CAST(:base AS timestamp) - interval '9 days'
FROM generate_series(1, :users) i WHERE i % 333 = 1;
INSERT INTO credit_transaction (id, user_id, type, amount, remaining_amount, period_key, created_at)
SELECT 'ct_bonus_' || i, 'usr_' || lpad(i::text, 5, '0'), 'BONUS', 10, 10, 0,
       CAST(:base AS timestamp) - interval '7 days'
FROM generate_series(1, :users) i WHERE i % 500 = 3;

-- the template's balance cache: what its code believes (every unprocessed grant, expired or not), some drifted,
-- some users with a second, stale row (no unique constraint on user_id)
INSERT INTO user_credit (id, user_id, current_credits, updated_at)
SELECT 'uc_' || i, u.id,
       coalesce((SELECT sum(t.remaining_amount) FROM credit_transaction t
                 WHERE t.user_id = u.id AND t.amount > 0 AND t.remaining_amount > 0
                   AND t.expiration_date_processed_at IS NULL), 0) + CASE WHEN i % 97 = 0 THEN 7 ELSE 0 END,
       CAST(:base AS timestamp) - interval '1 hour'
FROM generate_series(1, :users) i JOIN "user" u ON u.id = 'usr_' || lpad(i::text, 5, '0');
INSERT INTO user_credit (id, user_id, current_credits, updated_at)
SELECT 'uc_dup_' || i, 'usr_' || lpad(i::text, 5, '0'), 999, CAST(:base AS timestamp) - interval '100 days'
FROM generate_series(1, :users) i WHERE i % 113 = 0
"""


@dataclass(frozen=True)
class Months:
    base: datetime  # the test's "now", naive UTC (the template's timestamps)
    key: str  # this month, as credit-jobs writes it
    template_key: int  # this month, as the template writes it
    prev_template_key: int
    as_of: datetime  # the import's cut-off: two days ago (so yesterday's expiries are imported, then expired)


def _months() -> Months:
    now = datetime.now(UTC).replace(microsecond=0)
    prev = (now.replace(day=1) - timedelta(days=1)).replace(day=1)
    return Months(
        base=now.replace(tzinfo=None),
        key=f"{now.year:04d}-{now.month:02d}",
        template_key=now.year * 100 + now.month,
        prev_template_key=prev.year * 100 + prev.month,
        as_of=now - timedelta(days=2),
    )


def _fill_template(engine: sa.Engine, months: Months) -> None:
    with engine.begin() as conn:
        create_template_tables(conn)
        for statement in _FILL.strip().split(";\n"):
            conn.execute(
                sa.text(statement),
                {
                    "users": USERS,
                    "base": months.base,
                    "month_key": months.template_key,
                    "prev_key": months.prev_template_key,
                },
            )


def _expected_grants(engine: sa.Engine, as_of: datetime) -> dict[str, tuple[Any, ...]]:
    """import key -> (user, grant type, period key, grant family, amount, remaining, expires_at): the template's live
    grants at `as_of`; the first live periodic grant of a (user, month) holds the month, any other carries none."""
    cutoff = as_of.replace(tzinfo=None)
    live = [
        r
        for r in rows(engine, "SELECT * FROM credit_transaction ORDER BY created_at, id")
        if r.amount > 0
        and (r.remaining_amount or 0) > 0
        and r.expiration_date_processed_at is None
        and (r.expiration_date is None or r.expiration_date > cutoff)
    ]
    held: set[tuple[str, int]] = set()
    expected = {}
    for r in live:  # in (created_at, id) order: the first of a month holds it
        grant_type, periodic = TYPES.get(r.type, ("adjustment", False))
        period = None
        if periodic and r.period_key > 0 and (r.user_id, r.period_key) not in held:
            held.add((r.user_id, r.period_key))
            period = f"{r.period_key // 100:04d}-{r.period_key % 100:02d}"
        expected[f"saas-template:{r.id}"] = (
            r.user_id,
            grant_type,
            period,
            "plan" if period else None,
            max(r.amount, r.remaining_amount),
            r.remaining_amount,
            None if r.expiration_date is None else r.expiration_date.replace(tzinfo=UTC),
        )
    return expected


def _expected_reconciliation(engine: sa.Engine, expected: dict[str, tuple[Any, ...]]) -> tuple[int, int]:
    """(users whose live grants differ from their latest user_credit row, users with several user_credit rows)."""
    live: dict[str, int] = {}
    for user_id, *_, remaining, _expires in expected.values():
        live[user_id] = live.get(user_id, 0) + remaining
    latest: dict[str, int] = {}
    count: dict[str, int] = {}
    for r in rows(engine, "SELECT user_id, current_credits FROM user_credit ORDER BY updated_at, id"):
        latest[r.user_id] = r.current_credits  # the last one (latest updated_at) wins
        count[r.user_id] = count.get(r.user_id, 0) + 1
    users = set(live) | set(latest)
    mismatches = sum(1 for u in users if live.get(u, 0) != latest.get(u, 0))
    return mismatches, sum(1 for n in count.values() if n > 1)


def _ledger_snapshot(engine: sa.Engine) -> dict[str, Any]:
    return {
        "grants": rows(
            engine,
            "SELECT grant_id, user_id, grant_type, period_key, amount, remaining, expires_at, expired_at, "
            "idempotency_key FROM credit_grants ORDER BY grant_id",
        ),
        "accounts": rows(engine, "SELECT user_id, balance FROM credit_accounts ORDER BY user_id"),
        "entries": rows(engine, "SELECT entry_id, grant_id, kind, amount FROM credit_entries ORDER BY entry_id"),
    }


def _import_stats(engine: sa.Engine, *, dry_run: bool) -> list[dict[str, Any]]:
    return [
        r.stats
        for r in rows(
            engine,
            "SELECT stats FROM job_runs WHERE trigger = 'import' AND dry_run = :d ORDER BY started_at",
            d=dry_run,
        )
    ]


def _swap_in_the_eligibility_view(engine: sa.Engine) -> None:
    """docs/adopting-eligibility.md: the view, the price mapping, the policies, then the swap."""
    add_policy(engine, "free", "free_tier", 50, 30)
    add_policy(engine, "pro", "subscription", 1000, 30)
    add_policy(engine, "lifetime", "lifetime_monthly", 1000, 30)
    with engine.begin() as conn:
        conn.exec_driver_sql(ELIGIBILITY_SQL.read_text())
        conn.execute(
            sa.text(
                "INSERT INTO credit_plan_prices (price_id, plan_code) VALUES "
                "('price_pro_month', 'pro'), ('price_lifetime', 'lifetime')"
            )
        )
        conn.execute(sa.text("ALTER TABLE credit_eligibility RENAME TO credit_eligibility_unused"))
        conn.execute(sa.text("CREATE VIEW credit_eligibility AS SELECT * FROM saas_credit_eligibility"))


def test_a_template_database_moves_into_the_ledger_once_and_its_half_distributed_month_is_not_granted_again(
    engine: sa.Engine, database_url: str
) -> None:
    months = _months()
    _fill_template(engine, months)
    env = cli_env(database_url)
    as_of = ["--as-of", months.as_of.isoformat()]
    expected = _expected_grants(engine, months.as_of)
    mismatches, duplicates = _expected_reconciliation(engine, expected)
    # the data exercises every rule
    assert len(expected) > 5000
    assert mismatches > 100
    assert duplicates > 10

    # 1. A dry run reports what would be imported and writes nothing to the ledger.
    dry = cli_process.run(["import", "saas-template", "--dry-run", *as_of], env)
    assert dry.returncode == 0, dry.stderr
    assert f"would_import={len(expected)}" in dry.stdout
    assert "dry run, nothing written" in dry.stdout
    assert _ledger_snapshot(engine) == {"grants": [], "accounts": [], "entries": []}
    (dry_stats,) = _import_stats(engine, dry_run=True)
    assert dry_stats["would_import"] == len(expected)
    assert dry_stats["balance_mismatches"] == mismatches

    # 2. The import: every live grant, with its type, month, expiry and what was already spent of it.
    done = cli_process.run(["import", "saas-template", *as_of], env)
    assert done.returncode == 0, done.stderr
    imported = {
        r.idempotency_key: (
            r.user_id,
            r.grant_type,
            r.period_key,
            r.grant_family,
            r.amount,
            r.remaining,
            r.expires_at,
        )
        for r in rows(engine, "SELECT * FROM credit_grants")
    }
    assert imported == expected
    assert f"month {months.key}:" in done.stdout
    assert f"balances: {mismatches} of" in done.stdout
    assert f"duplicate user_credit rows: {duplicates} users" in done.stdout
    assert "BONUS" in done.stderr  # the unknown type is named
    balances = dict(rows(engine, "SELECT user_id, balance FROM credit_accounts"))
    owed: dict[str, int] = {}
    for user_id, *_, remaining, _expires in expected.values():
        owed[user_id] = owed.get(user_id, 0) + remaining
    assert balances == owed
    (stats,) = _import_stats(engine, dry_run=False)
    assert (stats["imported"], stats["balance_mismatches"], stats["duplicate_user_credit_users"]) == (
        len(expected),
        mismatches,
        duplicates,
    )
    assert stats["credits_imported"] == sum(owed.values())
    assert len(stats["balance_mismatch_sample"]) == 20
    assert len(stats["duplicate_user_credit_sample"]) == 20
    holders = stats["periods_held"][months.key]
    assert holders == sum(1 for g in expected.values() if g[2] == months.key)

    # 3. This month's distribution over the template's users grants only those the template had not reached.
    _swap_in_the_eligibility_view(engine)
    distributed = cli_process.run(["run", "distribute-credits", "--period-key", months.key], env)
    assert distributed.returncode == 0, distributed.stderr
    not_banned = [i for i in range(1, USERS + 1) if i % 10 != 9]
    assert f"granted={sum(1 for i in not_banned if i % 2)}," in distributed.stdout
    assert f"already_granted={sum(1 for i in not_banned if i % 2 == 0)}," in distributed.stdout
    per_user = rows(
        engine,
        "SELECT user_id, count(*) AS n FROM credit_grants WHERE grant_family = 'plan' AND period_key = :k "
        "GROUP BY user_id",
        k=months.key,
    )
    assert len(per_user) == len(not_banned)  # nobody missed
    assert {r.n for r in per_user} == {1}  # nobody twice

    # 4. Expiry keeps the template's expiry dates: what expired yesterday (live at --as-of) expires now.
    expiring = {k for k, g in expected.items() if g[6] is not None and g[6] <= datetime.now(UTC)}
    assert expiring  # last month's grants that expired yesterday
    expired = cli_process.run(["run", "expire-credits"], env)
    assert expired.returncode == 0, expired.stderr
    assert {
        r.idempotency_key
        for r in rows(engine, "SELECT idempotency_key FROM credit_grants WHERE expired_at IS NOT NULL")
    } == expiring

    # 5. The ledger invariants hold.
    check = cli_process.run(["check"], env)
    assert check.returncode == 0, check.stdout + check.stderr

    # 6. A second import changes nothing.
    before = _ledger_snapshot(engine)
    again = cli_process.run(["import", "saas-template", *as_of], env)
    assert again.returncode == 0, again.stderr
    assert _ledger_snapshot(engine) == before
    second = _import_stats(engine, dry_run=False)[-1]
    assert (second["imported"], second["already_imported"], second["credits_imported"]) == (0, len(expected), 0)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--source-schema", "nosuch"], ["schema 'nosuch' does not exist", "--source-schema"]),
        (["--source-schema", "empty"], ["empty.credit_transaction does not exist", "--source-schema"]),
        (["--source-schema", "partial"], ["partial.credit_transaction has no column", "remaining_amount"]),
        (["--as-of", "yesterday"], ["--as-of", "2026-11-29T10:00:00Z"]),
        (["--as-of", "2999-01-01"], ["--as-of", "in the future"]),
    ],
)
def test_bad_input_exits_2_with_one_line_saying_what_and_how_to_fix_and_writes_nothing(
    engine: sa.Engine, database_url: str, args: list[str], says: list[str]
) -> None:
    with engine.begin() as conn:
        create_template_tables(conn)
        conn.exec_driver_sql("INSERT INTO \"user\" (id, email) VALUES ('u1', 'u1@example.com')")
        conn.exec_driver_sql(
            "INSERT INTO credit_transaction (id, user_id, type, amount, remaining_amount) "
            "VALUES ('ct1', 'u1', 'REGISTER_GIFT', 50, 50)"
        )
        conn.exec_driver_sql("CREATE SCHEMA empty")
        conn.exec_driver_sql("CREATE SCHEMA partial")
        conn.exec_driver_sql("CREATE TABLE partial.credit_transaction (id text, user_id text, type text)")
        conn.exec_driver_sql("CREATE TABLE partial.user_credit AS SELECT * FROM public.user_credit")
    done = cli_process.run(["import", "saas-template", *args], cli_env(database_url))
    assert done.returncode == 2
    (line,) = error_lines(done.stderr)
    assert line.startswith("credit-jobs: error: ")
    for phrase in says:
        assert phrase in line
    assert scalar(engine, "SELECT count(*) FROM job_runs") == 0
    assert scalar(engine, "SELECT count(*) FROM credit_grants") == 0


def _import_in_process(database_url: str, scope: ImportScope, *, now: datetime) -> Any:
    from credit_jobs.adapters import database

    return execute_run(
        RunRequest(usecase=import_usecase(scope), job="import-saas-template", trigger=Trigger.IMPORT.value),
        lambda: database.create_engine(database_url),
        clock=lambda: now,
        ledger_clock=lambda: now,
    )


def test_a_template_in_another_schema_imports_and_a_month_the_ledger_already_granted_is_reported_not_doubled(
    engine: sa.Engine, database_url: str
) -> None:
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    with engine.begin() as conn:
        create_template_tables(conn, "Saas Template")
        conn.exec_driver_sql(
            "INSERT INTO \"Saas Template\".\"user\" (id, email) VALUES ('a', 'a@x'), ('b', 'b@x'), ('c', 'c@x')"
        )
        conn.exec_driver_sql(
            'INSERT INTO "Saas Template".credit_transaction (id, user_id, type, amount, remaining_amount, '
            "expiration_date, period_key) VALUES "
            "('t1', 'a', 'SUBSCRIPTION_RENEWAL', 1000, 600, '2026-12-20', 202611), "
            "('t2', 'b', 'SUBSCRIPTION_RENEWAL', 1000, 1000, '2026-12-20', 202611), "
            "('t3', 'c', 'MONTHLY_REFRESH', 50, 50, '2026-11-19', 202611), "  # expired yesterday: not live
            "('t4', 'c', 'PURCHASE_PACKAGE', 100, 120, NULL, 0)"  # a defect: more left than given
        )
        # the ledger already granted user b this month (distribute-credits ran before the import)
        conn.exec_driver_sql(
            "INSERT INTO credit_grants (user_id, grant_type, grant_family, period_key, amount, remaining, "
            "cause_request_id) VALUES ('b', 'subscription', 'plan', '2026-11', 1000, 1000, 'earlier-run')"
        )
        conn.exec_driver_sql("INSERT INTO credit_accounts (user_id, balance) VALUES ('b', 1000)")
    outcome = _import_in_process(database_url, ImportScope("Saas Template"), now=now)
    assert outcome.exit_code == 0, outcome.error
    assert outcome.stats is not None
    details = outcome.stats.details
    assert (details["imported"], details["period_already_granted"]) == (2, 1)
    assert details["period_already_granted_sample"] == [
        {"user_id": "b", "transaction_id": "t2", "period_key": "2026-11"}
    ]
    assert dict(rows(engine, "SELECT user_id, balance FROM credit_accounts")) == {"a": 600, "b": 1000, "c": 120}
    (bought,) = rows(engine, "SELECT * FROM credit_grants WHERE user_id = 'c'")
    assert (bought.grant_type, bought.amount, bought.remaining, bought.period_key) == ("purchase", 120, 120, None)
    # a: 1000 granted, 400 spent before the import (a usage entry), 600 left; the grant holds a's November
    (grant,) = rows(engine, "SELECT * FROM credit_grants WHERE user_id = 'a'")
    assert (grant.amount, grant.remaining, grant.period_key, grant.grant_family) == (1000, 600, "2026-11", "plan")
    entries = rows(engine, "SELECT kind, amount, reason FROM credit_entries WHERE grant_id = :g", g=grant.grant_id)
    assert [(e.kind, e.amount) for e in entries] == [("usage", 400)]
    assert json.loads(json.dumps(details["periods_held"])) == {"2026-11": 1}


def test_a_template_row_the_ledger_refuses_is_named_and_fails_the_run_while_every_other_grant_is_imported(
    engine: sa.Engine, database_url: str
) -> None:
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    with engine.begin() as conn:
        create_template_tables(conn)
        # a user id with surrounding spaces: the template allows it, the ledger's account CHECK does not
        conn.exec_driver_sql(
            "INSERT INTO \"user\" (id, email) SELECT 'u' || i, i || '@x' FROM generate_series(1, 40) i"
        )
        conn.exec_driver_sql("""INSERT INTO "user" (id, email) VALUES (' padded ', 'p@x')""")
        conn.exec_driver_sql(
            "INSERT INTO credit_transaction (id, user_id, type, amount, remaining_amount) "
            "SELECT 't' || lpad(i::text, 2, '0'), 'u' || i, 'REGISTER_GIFT', 50, 50 FROM generate_series(1, 40) i"
        )
        conn.exec_driver_sql(
            "INSERT INTO credit_transaction (id, user_id, type, amount, remaining_amount) "
            "VALUES ('t20x', ' padded ', 'REGISTER_GIFT', 50, 50)"
        )
    from credit_jobs.adapters import database

    outcome = execute_run(
        RunRequest(
            usecase=import_usecase(ImportScope()),
            job="import-saas-template",
            trigger=Trigger.IMPORT.value,
            batch_size=16,
        ),
        lambda: database.create_engine(database_url),
        clock=lambda: now,
        ledger_clock=lambda: now,
    )
    assert outcome.exit_code == 1
    assert outcome.stats is not None
    details = outcome.stats.details
    assert (details["imported"], details["failed_item_count"]) == (40, 1)
    (failed,) = details["failed_items"]
    assert (failed["transaction_id"], failed["user_id"]) == ("t20x", " padded ")
    assert scalar(engine, "SELECT count(*) FROM credit_grants") == 40
    assert scalar(engine, "SELECT sum(balance) FROM credit_accounts") == 40 * 50


def _wait_until_a_backend_waits_on_a_lock(engine: sa.Engine, thread: threading.Thread) -> None:
    """Poll (no fixed sleep) until another backend of this database waits on a lock; fail if the thread ends first."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        waiting = scalar(
            engine,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
        )
        if waiting:
            return
        assert thread.is_alive(), "the import finished without waiting for the racing distribution"
        time.sleep(0.01)
    raise AssertionError("the import neither waited on a lock nor finished within 60 s")


def test_an_import_racing_a_distribution_of_the_same_month_waits_on_the_unique_index_and_grants_the_month_once(
    engine: sa.Engine, database_url: str
) -> None:
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    with engine.begin() as conn:
        create_template_with_one_live_grant(conn)
    box: list[Any] = []
    with engine.connect() as distribution:  # a distribution's chunk that granted user a November, not committed yet
        pending = distribution.begin()
        distribution.exec_driver_sql(
            "INSERT INTO credit_grants (user_id, grant_type, grant_family, period_key, amount, remaining, "
            "cause_request_id) VALUES ('a', 'subscription', 'plan', '2026-11', 1000, 1000, 'racing-distribution')"
        )
        distribution.exec_driver_sql("INSERT INTO credit_accounts (user_id, balance) VALUES ('a', 1000)")
        thread = threading.Thread(
            target=lambda: box.append(_import_in_process(database_url, ImportScope(), now=now)), daemon=True
        )
        thread.start()
        # the import saw no grant of a's November (not committed): only the unique index can stop it now
        _wait_until_a_backend_waits_on_a_lock(engine, thread)
        pending.commit()
    thread.join(timeout=120)
    (outcome,) = box
    assert outcome.exit_code == 0, outcome.error
    assert (outcome.stats.details["imported"], outcome.stats.details["period_already_granted"]) == (0, 1)
    assert scalar(engine, "SELECT count(*) FROM credit_grants WHERE user_id = 'a'") == 1
    assert scalar(engine, "SELECT balance FROM credit_accounts WHERE user_id = 'a'") == 1000
    assert check_invariants(engine).ok


def test_rolling_back_an_imported_month_counts_what_was_spent_in_the_template_as_kept(
    engine: sa.Engine, database_url: str, run_usecase: RunUsecase
) -> None:
    from credit_jobs.adapters import database
    from credit_jobs.domain.contract import Period
    from credit_jobs.usecases.rollback_period import RollbackScope, rollback_usecase

    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    with engine.begin() as conn:
        create_template_tables(conn)
        conn.exec_driver_sql("INSERT INTO \"user\" (id, email) VALUES ('a', 'a@x')")
        conn.exec_driver_sql(  # 1000 given for November, 400 spent in the template
            "INSERT INTO credit_transaction (id, user_id, type, amount, remaining_amount, expiration_date, period_key) "
            "VALUES ('t1', 'a', 'SUBSCRIPTION_RENEWAL', 1000, 600, '2026-12-20', 202611)"
        )
    assert _import_in_process(database_url, ImportScope(), now=now).exit_code == 0
    rolled = execute_run(
        RunRequest(
            usecase=rollback_usecase(RollbackScope("wrong amount")),
            job="distribute-credits",
            trigger=Trigger.ROLLBACK.value,
            period=Period.MONTHLY,
            pinned_key="2026-11",
        ),
        lambda: database.create_engine(database_url),
        clock=lambda: now,
        ledger_clock=lambda: now,
    )
    assert rolled.exit_code == 0, rolled.error
    add_policy(engine, "pro", "subscription", 1000, 30)
    add_users(engine, [("a", "pro", "active", False, False)])
    redo = run_usecase("distribute-credits", pinned_key="2026-11", now=now)
    assert redo.exit_code == 0, redo.error
    # the redo gives the policy amount less the 400 spent before the import: 1000 received in total for November
    assert scalar(engine, "SELECT amount FROM credit_grants WHERE cause_run_id = :r", r=redo.run_id) == 600
    assert scalar(engine, "SELECT balance FROM credit_accounts WHERE user_id = 'a'") == 600
    assert check_invariants(engine).ok


def test_a_spent_grant_of_the_cut_over_month_holds_the_month_so_the_distribution_does_not_grant_it_again(
    engine: sa.Engine, database_url: str, run_usecase: RunUsecase
) -> None:
    """A user who had spent all of the cut-over month's template grant is granted that month once, not twice: the
    spent grant arrives as a used-up grant (its usage recorded), holding the month; spent grants of earlier months
    and spent purchases hold nothing a distribution could grant, and are not imported."""
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    with engine.begin() as conn:
        create_template_tables(conn)
        conn.exec_driver_sql(
            "INSERT INTO \"user\" (id, email) VALUES ('spent', 's@x'), ('kept', 'k@x'), ('october', 'o@x')"
        )
        conn.exec_driver_sql(
            "INSERT INTO credit_transaction (id, user_id, type, amount, remaining_amount, expiration_date, "
            "period_key) VALUES "
            "('t1', 'spent', 'MONTHLY_REFRESH', 50, 0, '2026-12-20', 202611), "  # the whole month spent
            "('t2', 'kept', 'MONTHLY_REFRESH', 50, 20, '2026-12-20', 202611), "
            "('t3', 'october', 'MONTHLY_REFRESH', 50, 0, '2026-11-25', 202610), "  # an earlier month, spent
            "('t4', 'october', 'PURCHASE_PACKAGE', 100, 0, NULL, 0)"  # a spent purchase
        )
    add_policy(engine, "free", "free_tier", 50, 30)
    add_users(engine, [(u, "free", "active", False, False) for u in ("spent", "kept", "october")])

    outcome = _import_in_process(database_url, ImportScope("public"), now=now)
    assert outcome.exit_code == 0, outcome.error
    held = rows(engine, "SELECT user_id, amount, remaining, period_key FROM credit_grants ORDER BY user_id")
    assert [tuple(r) for r in held] == [("kept", 50, 20, "2026-11"), ("spent", 50, 0, "2026-11")]
    (usage,) = rows(
        engine, "SELECT e.amount FROM credit_entries e JOIN credit_grants g USING (grant_id) WHERE g.user_id = 'spent'"
    )
    assert usage.amount == 50

    distributed = run_usecase("distribute-credits", job="monthly", pinned_key="2026-11", now=now)
    assert distributed.exit_code == 0, distributed.error
    per_user = dict(
        rows(engine, "SELECT user_id, count(*) FROM credit_grants WHERE period_key = '2026-11' GROUP BY user_id")
    )
    assert per_user == {"spent": 1, "kept": 1, "october": 1}  # only the user without a November grant got one
    assert dict(rows(engine, "SELECT user_id, balance FROM credit_accounts")) == {"spent": 0, "kept": 20, "october": 50}
    report = check_invariants(engine)
    assert report.ok, report.violations
