"""One implementation of the money path: the SQL functions decide, the library, the CLI and the API go through them.

Each case where the SQL functions and the library's own statements once disagreed, tried as an application would
(SQL inside its own transaction) and as the CLI and the library do, against the real PostgreSQL: a webhook's retried
grant with a relative validity, expiries past any calendar (`infinity`, year 10000), user ids the CLI refuses as
unprintable, a user the eligibility source does not know, a key replayed across interfaces with another expiry. Then
the proof that there is one implementation: the functions, wrapped by ones that record each call, see every library
consume, grant and void, and every code point is judged the same by the database's user-id rule and by the CLI's.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, timedelta

import pytest
import sqlalchemy as sa

from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.requests import validate_user_id
from credit_jobs.usecases.check_invariants import check_invariants
from credit_jobs.usecases.consume import consume
from credit_jobs.usecases.grant import grant
from credit_jobs.usecases.void_grant import void_grant
from tests.support import cli_process
from tests.support.ledger import add_users, scalar


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(getattr(exc, "orig", exc), "sqlstate", None)


def _call(engine: sa.Engine, sql: str, **params: object) -> object:
    with engine.begin() as conn:  # one transaction per call: a retry is a new transaction, as a webhook's is
        return conn.execute(sa.text(sql), params).scalar_one()


def _refused(engine: sa.Engine, sql: str, **params: object) -> tuple[str | None, str]:
    with pytest.raises(sa.exc.DBAPIError) as raised:
        _call(engine, sql, **params)
    return _sqlstate(raised.value), str(getattr(raised.value, "orig", raised.value)).split("\n")[0]


@pytest.fixture
def known(engine: sa.Engine) -> sa.Engine:
    add_users(engine, [(u, "pro", "active", False, False) for u in ("u1", "u2", "u3", "u4")])
    return engine


def test_a_retried_webhook_grant_with_a_relative_validity_replays(known: sa.Engine) -> None:
    sql = "SELECT credit_grant('u1', 500, 'purchase', 'cs_test_abc', p_expires_in_days => 365)"
    first = _call(known, sql)
    time.sleep(0.05)  # a later transaction, a later clock: the same parameters
    assert _call(known, sql) == first
    expires, granted = (
        scalar(known, "SELECT expires_at FROM credit_grants WHERE grant_id = :g", g=first),
        scalar(known, "SELECT granted_at FROM credit_grants WHERE grant_id = :g", g=first),
    )
    assert expires.astimezone(UTC) - granted.astimezone(UTC) == timedelta(days=365)  # 24-hour days, whatever the zone
    assert scalar(known, "SELECT count(*) FROM credit_grants") == 1


def test_an_absolute_expiry_is_compared_to_the_second(known: sa.Engine) -> None:
    at = _call(known, "SELECT date_trunc('second', now()) + interval '30 days 0.1 second'")
    first = _call(known, "SELECT credit_grant('u1', 5, 'gift', 'k-abs', :at)", at=at)
    assert (
        _call(known, "SELECT credit_grant('u1', 5, 'gift', 'k-abs', :at)", at=at + timedelta(microseconds=700)) == first
    )
    state, message = _refused(known, "SELECT credit_grant('u1', 5, 'gift', 'k-abs', :at)", at=at + timedelta(seconds=1))
    assert state == "CJ002", message
    assert "was first used with expires_at=" in message, message


@pytest.mark.parametrize(
    ("expiry", "needle"),
    [
        ("p_expires_at => 'infinity'", "expires_at infinity is not a finite instant"),
        ("p_expires_at => '10000-01-01 00:00:00+00'", "at most 36500 days from now"),
        ("p_expires_at => now() + interval '36501 days'", "at most 36500 days from now"),
        ("p_expires_at => now() - interval '1 second'", "is not in the future"),
        ("p_expires_in_days => 0", "expires-in-days must be between 1 and 36500, got 0"),
        ("p_expires_in_days => 36501", "expires-in-days must be between 1 and 36500, got 36501"),
        ("p_expires_in_days => 3, p_expires_at => now() + interval '3 days'", "either p_expires_in_days or"),
    ],
)
def test_expiries_past_any_calendar_are_refused_and_the_user_stays_readable(
    known: sa.Engine, expiry: str, needle: str, database_url: str
) -> None:
    state, message = _refused(known, f"SELECT credit_grant('u2', 5, 'gift', 'k-inf', {expiry})")
    assert state == "22023", message
    assert needle in message, message
    assert scalar(known, "SELECT count(*) FROM credit_requests") == 0  # nothing claimed: the key stays free
    done = cli_process.run(["balance", "u2"], cli_process.cli_env(database_url))
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("character", ["\u00a0", "\u200b", "\u2028", "\u202e", "\u0085", "\ufeff", "\U000e0041"])
def test_the_sql_functions_refuse_the_user_ids_the_cli_refuses(
    known: sa.Engine, character: str, database_url: str
) -> None:
    user = f"user{character}x"
    with pytest.raises(ConfigError, match="contains control or unprintable characters"):
        validate_user_id(user)
    state, message = _refused(
        known, "SELECT credit_grant(:u, 5, 'gift', :k, p_allow_unknown_user => true)", u=user, k="k"
    )
    assert state == "22023", message
    assert "contains control or unprintable characters" in message, message
    state, _ = _refused(known, "SELECT credit_consume(:u, 1, 'r')", u=user)
    assert state == "22023"
    assert scalar(known, "SELECT count(*) FROM credit_grants") == 0


def test_every_code_point_is_judged_alike_by_the_database_and_the_cli(engine: sa.Engine) -> None:
    """The whole of Unicode (but surrogates, which neither side can hold, and NUL, which PostgreSQL text cannot)
    through the database's rule and the CLI's: the same code points refused."""
    with engine.connect() as conn:
        refused_by_db = set(
            conn.execute(
                sa.text(
                    "SELECT cp FROM generate_series(1, 1114111) AS cp WHERE cp NOT BETWEEN 55296 AND 57343 "
                    "AND NOT credit_text_id_is_valid('a' || chr(cp) || 'a')"
                )
            ).scalars()
        )
    refused_by_cli = set()
    for cp in range(1, sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        try:
            validate_user_id(f"a{chr(cp)}a")
        except ConfigError:
            refused_by_cli.add(cp)
    assert 0x20 not in refused_by_db  # a sanity check of the comparison itself
    assert 0xA0 in refused_by_db
    assert refused_by_db == refused_by_cli


def test_a_grant_to_a_user_the_eligibility_source_does_not_know_is_refused_unless_allowed(known: sa.Engine) -> None:
    state, message = _refused(known, "SELECT credit_grant('ghost-user', 5, 'gift', 'k-ghost')")
    assert state == "CJ004", message
    assert "user 'ghost-user' is not in credit_eligibility" in message, message
    assert scalar(known, "SELECT count(*) FROM credit_requests") == 0
    gid = _call(known, "SELECT credit_grant('ghost-user', 5, 'gift', 'k-ghost', p_allow_unknown_user => true)")
    assert scalar(known, "SELECT user_id FROM credit_grants WHERE grant_id = :g", g=gid) == "ghost-user"
    with pytest.raises(ConfigError, match="user ghost-2 is not in credit_eligibility"):
        grant(known, "ghost-2", 5, grant_type="gift", idempotency_key="k-ghost-2")


def test_a_key_replayed_across_interfaces_with_another_expiry_is_refused(known: sa.Engine, database_url: str) -> None:
    env = cli_process.cli_env(database_url)
    done = cli_process.run(["grant", "u3", "10", "--idempotency-key", "k-x", "--expires-in-days", "30"], env)
    assert done.returncode == 0, done.stderr
    state, message = _refused(known, "SELECT credit_grant('u3', 10, 'gift', 'k-x', NULL)")
    assert state == "CJ002", message
    assert "expires_in_days=30, this request has expires_in_days=None" in message, message
    gid = _call(known, "SELECT credit_grant('u3', 10, 'gift', 'k-x', p_expires_in_days => 30)")  # the same request
    assert scalar(known, "SELECT grant_id FROM credit_grants WHERE idempotency_key = 'k-x'") == gid

    _call(known, "SELECT credit_grant('u4', 10, 'gift', 'k-y', NULL)")  # the reverse: SQL first, never expires
    done = cli_process.run(["grant", "u4", "10", "--idempotency-key", "k-y", "--expires-in-days", "30"], env)
    assert done.returncode == 2
    assert "first used with expires_in_days=None, this request has expires_in_days=30" in done.stderr, done.stderr
    assert scalar(known, "SELECT count(*) FROM credit_grants") == 2
    assert check_invariants(known).ok


# Each function renamed and wrapped by one that records its call, then calls the original: what the library runs.
RECORDING_WRAPPERS = """
CREATE TABLE library_calls (function text NOT NULL);
ALTER FUNCTION credit_consume(text, bigint, text) RENAME TO recorded_consume;
CREATE FUNCTION credit_consume(p_user_id text, p_amount bigint, p_request_id text) RETURNS jsonb
LANGUAGE plpgsql AS $$ BEGIN
    INSERT INTO library_calls VALUES ('credit_consume');
    RETURN recorded_consume(p_user_id, p_amount, p_request_id);
END $$;
ALTER FUNCTION credit_grant(text, bigint, text, text, timestamptz, integer, boolean) RENAME TO recorded_grant;
CREATE FUNCTION credit_grant(p_user_id text, p_amount bigint, p_grant_type text, p_idempotency_key text,
                             p_expires_at timestamptz DEFAULT NULL, p_expires_in_days integer DEFAULT NULL,
                             p_allow_unknown_user boolean DEFAULT false) RETURNS bigint
LANGUAGE plpgsql AS $$ BEGIN
    INSERT INTO library_calls VALUES ('credit_grant');
    RETURN recorded_grant(p_user_id, p_amount, p_grant_type, p_idempotency_key, p_expires_at, p_expires_in_days,
                          p_allow_unknown_user);
END $$;
ALTER FUNCTION credit_void(bigint, text) RENAME TO recorded_void;
CREATE FUNCTION credit_void(p_grant_id bigint, p_request_id text) RETURNS jsonb
LANGUAGE plpgsql AS $$ BEGIN
    INSERT INTO library_calls VALUES ('credit_void');
    RETURN recorded_void(p_grant_id, p_request_id);
END $$;
"""


def test_the_library_spends_grants_and_voids_through_the_sql_functions(known: sa.Engine) -> None:
    """The SQL functions, wrapped by ones that record each call: the library's consume, grant and void are calls of
    credit_consume, credit_grant and credit_void — there is no second implementation left to call."""
    with known.begin() as conn:
        conn.exec_driver_sql(RECORDING_WRAPPERS)
    gid = grant(known, "u1", 50, grant_type="gift", idempotency_key="lib-g").grant_id
    grant(known, "u1", 50, grant_type="gift", idempotency_key="lib-g")  # a replay: a call all the same
    consume(known, "u1", 20, request_id="lib-c")
    void_grant(known, gid, request_id="lib-v")
    calls = dict(scalar_rows(known, "SELECT function, count(*) FROM library_calls GROUP BY function"))
    assert calls == {"credit_grant": 2, "credit_consume": 1, "credit_void": 1}
    assert scalar(known, "SELECT balance FROM credit_accounts WHERE user_id = 'u1'") == 0
    assert check_invariants(known).ok


def scalar_rows(engine: sa.Engine, sql: str) -> list[tuple[str, int]]:
    with engine.connect() as conn:
        return [(r[0], int(r[1])) for r in conn.execute(sa.text(sql))]
