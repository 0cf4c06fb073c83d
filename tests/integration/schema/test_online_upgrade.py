"""Migration 0011 reaches a live ledger without stopping it: its indexes are built CONCURRENTLY, so a
consume keeps committing while a build waits for an older writer; an index left INVALID by an interrupted build is
rebuilt by the next upgrade. Real PostgreSQL, real sessions."""

from __future__ import annotations

import threading

import sqlalchemy as sa
from alembic import command

from credit_jobs.adapters import schema_migrations
from credit_jobs.usecases.consume import consume
from credit_jobs.usecases.grant import grant
from tests.support.ledger import add_users, scalar

INDEXES = ("credit_grants_live_by_user", "credit_grants_user_history", "credit_entries_grant")


def _at_0010(engine: sa.Engine) -> None:
    config = schema_migrations.alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0010")


def _valid(engine: sa.Engine) -> dict[str, bool]:
    found = scalar(
        engine,
        "SELECT coalesce(jsonb_object_agg(c.relname, i.indisvalid), '{}') FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = ANY(:names)",
        names=list(INDEXES),
    )
    return dict(found)


def _ledger(engine: sa.Engine) -> None:
    add_users(engine, [(u, "pro", "active", False, False) for u in (1, 2)])
    for user in ("1", "2"):
        grant(
            engine,
            user,
            100,
            grant_type="gift",
            allow_unknown_user=True,
            idempotency_key=f"seed-{user}",
            expires_in_days=30,
        )


def test_a_consume_commits_while_the_index_build_waits_for_an_older_writer(engine: sa.Engine) -> None:
    _ledger(engine)
    _at_0010(engine)
    assert _valid(engine) == {}
    older = engine.connect()
    # a writer's transaction still open (an app's consume of user 1, say): the build must wait for it
    older.execute(sa.text("UPDATE credit_grants SET remaining = remaining WHERE user_id = '1'"))
    upgraded = threading.Event()
    upgrade = threading.Thread(target=lambda: (schema_migrations.upgrade_schema(engine), upgraded.set()))
    upgrade.start()
    try:
        # the build is under way and waits for `older` (a CONCURRENTLY build waits for the writers before it)
        waiting = (
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE query LIKE 'CREATE INDEX CONCURRENTLY%' AND wait_event_type = 'Lock'"
        )
        for _ in range(600):
            if scalar(engine, waiting):
                break
            threading.Event().wait(0.05)
        assert scalar(engine, waiting) == 1
        # meanwhile the application consumes from another user, and commits: the build blocks no writer
        assert consume(engine, "2", 10, request_id="during-the-build").takes
        assert not upgraded.is_set()
    finally:
        older.rollback()
        older.close()
        upgrade.join(timeout=120)
    assert upgraded.is_set()
    assert _valid(engine) == dict.fromkeys(INDEXES, True)
    assert schema_migrations.current_revision(engine) == schema_migrations.head_revision()


def test_an_index_left_invalid_by_an_interrupted_build_is_built_again(engine: sa.Engine) -> None:
    _ledger(engine)
    _at_0010(engine)
    # what a cancelled CREATE INDEX CONCURRENTLY leaves: the index, marked invalid (never used by a plan)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE INDEX credit_grants_live_by_user ON credit_grants (user_id)"))
        conn.execute(
            sa.text("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'credit_grants_live_by_user'::regclass")
        )
    assert _valid(engine) == {"credit_grants_live_by_user": False}
    schema_migrations.upgrade_schema(engine)
    assert _valid(engine) == dict.fromkeys(INDEXES, True)
    definition = scalar(engine, "SELECT indexdef FROM pg_indexes WHERE indexname = 'credit_grants_live_by_user'")
    assert "(user_id, expires_at, grant_id) WHERE ((expired_at IS NULL) AND (remaining > 0))" in definition
