"""The SQL form of the user partition (`ledger_sql.shard_predicate`, used by every sharded statement) selects, on
PostgreSQL, exactly the users the domain's rule (`Shard.owns`) gives each shard — numeric-looking, Unicode and
longest-allowed text ids included — so shards cover every user once. (Replaces a unit test that re-typed the
formula and never ran it.)"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from credit_jobs.adapters.ledger_sql import shard_params, shard_predicate
from credit_jobs.domain.limits import MAX_USER_ID_LENGTH
from credit_jobs.domain.sharding import Shard
from tests.support.ledger import add_users

USERS = [
    *(str(n) for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 97, 1_000_003, 2**62 + 1)),
    "user_2Nq0Zl8xK3",
    "auth0|5f7c8ec7c33c6c004bbafe82",
    "Émilie",
    "ユーザー",
    "a b",
    "x" * MAX_USER_ID_LENGTH,
]


def _selected(engine: sa.Engine, shard: Shard) -> set[str]:
    sql = "SELECT e.user_id FROM credit_eligibility e WHERE true" + shard_predicate("e.user_id", shard)
    with engine.connect() as conn:
        return {str(row[0]) for row in conn.execute(sa.text(sql), shard_params(shard))}


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_each_shard_selects_exactly_the_users_the_domain_gives_it(engine: sa.Engine, count: int) -> None:
    add_users(engine, [(user, "free", "active", False, False) for user in USERS])
    selected = {index: _selected(engine, Shard(index, count)) for index in range(count)}
    for index, users in selected.items():
        assert users == {user for user in USERS if Shard(index, count).owns(user)}, f"shard {index}/{count}"
    assert sorted(user for users in selected.values() for user in users) == sorted(USERS)
    if count > 1:  # the check can fail: the shards really split these users
        assert sum(1 for users in selected.values() if users) > 1
