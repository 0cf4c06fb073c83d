"""Every per-user read and write of the online ledger is served by an index, on a ledger of 100k users
with history: the plans PostgreSQL really executes, captured by auto_explain (nested statements: each statement inside
`credit_consume`, `credit_balance` and `credit_grant`, past the five custom plans after which a session may switch
to a cached generic plan), and those of the Python library behind the CLI and the API (consume, balance and history,
grant, void). None may scan credit_grants, credit_entries or credit_requests, nor walk the live grants of every user."""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa

from credit_jobs.adapters import database
from credit_jobs.adapters.db_clock import database_now
from credit_jobs.adapters.ledger_views import user_ledger
from credit_jobs.usecases.consume import consume
from credit_jobs.usecases.demo_data import seed_demo_data, seed_history
from credit_jobs.usecases.grant import grant
from credit_jobs.usecases.void_grant import void_grant
from tests.support.ledger import live_month, rows, scalar
from tests.support.runs import RunUsecase

USERS = 100_000
CALLS = 8  # per function, in one session: more than the 5 custom plans before a generic plan may be cached
# a sequential scan of a ledger table, or a walk of every user's live grants (the expiry job's index, never a
# per-user read's: it costs a filter over every live grant of every user)
_SCAN = re.compile(r"Seq Scan on (credit_grants|credit_entries|credit_requests)\b|credit_grants_expiring")


@pytest.fixture
def plans(engine: sa.Engine, run_usecase: RunUsecase, database_url: str) -> tuple[sa.Engine, list[str], list[str]]:
    """(an engine whose every session logs each statement's plan to `plans`, users with live grants, plans)."""
    now = database_now(engine)
    seed_demo_data(engine, USERS, gifts=False, now=now)
    assert seed_history(engine, 3, now=now) > 3 * USERS // 2  # three months of used-up grants for the configured
    assert run_usecase("distribute-credits", now=now, pinned_key=live_month(engine)).status == "succeeded"
    name = scalar(engine, "SELECT current_database()")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
        for setting, value in (
            ("session_preload_libraries", "auto_explain"),
            ("auto_explain.log_min_duration", "0"),
            ("auto_explain.log_nested_statements", "on"),
            ("client_min_messages", "log"),
        ):
            conn.execute(sa.text(f"ALTER DATABASE \"{name}\" SET {setting} = '{value}'"))
    users = [r[0] for r in rows(engine, "SELECT user_id FROM credit_accounts WHERE balance > 100 ORDER BY 1 LIMIT 20")]
    captured: list[str] = []
    explained = database.create_engine(database_url)

    @sa.event.listens_for(explained, "connect")
    def _log_plans(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.add_notice_handler(lambda diag: captured.append(diag.message_primary or ""))

    return explained, users, captured


def test_no_per_user_call_scans_a_ledger_table(plans: tuple[sa.Engine, list[str], list[str]]) -> None:
    engine, users, captured = plans
    with engine.begin() as conn:  # one session, as an app's pooled connection
        for n, user in enumerate(users[:CALLS]):
            conn.execute(sa.text("SELECT credit_consume(:u, 1, :r)"), {"u": user, "r": f"sql-{n}"})
            conn.execute(sa.text("SELECT credit_balance(:u)"), {"u": user})
            conn.execute(sa.text("SELECT credit_grant(:u, 5, 'gift', :k)"), {"u": user, "k": f"sql-gift-{n}"})
    for n, user in enumerate(users[CALLS : 2 * CALLS]):
        consume(engine, user, 1, request_id=f"py-{n}")
        user_ledger(engine, user)
        user_ledger(engine, user, all_grants=True)
        granted = grant(
            engine,
            user,
            5,
            grant_type="gift",
            allow_unknown_user=True,
            idempotency_key=f"py-gift-{n}",
            expires_in_days=30,
        )
        void_grant(engine, granted.grant_id, request_id=f"py-void-{n}")
    engine.dispose()

    plans_seen = [text for text in captured if "plan:" in text]
    assert len(plans_seen) > 10 * CALLS  # auto_explain answered: every statement above, and those inside functions
    assert any("credit_grants_live_by_user" in text for text in plans_seen)
    assert any("credit_grants_user_history" in text for text in plans_seen)
    scans = [text for text in plans_seen if _SCAN.search(text)]
    assert scans == []
