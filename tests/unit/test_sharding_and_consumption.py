"""Pure rules: shards partition users exactly; consumption takes soonest-expiring credits first, or nothing.
(The SQL form of the partition, `ledger_sql.shard_predicate`, is checked against `Shard.owns` on PostgreSQL in
tests/integration/test_shard_predicate.py.)"""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credit_jobs.domain.consumption import LiveGrant, consumption_order, plan_consumption
from credit_jobs.domain.errors import ConfigError, InsufficientCredits
from credit_jobs.domain.run_model import validate_batch_size
from credit_jobs.domain.sharding import Shard, parse_shard, shard_from_env, shard_hash, shard_of
from tests.instants import NOW


@settings(deadline=None)  # a shared, loaded machine: no per-example time limit
@given(
    st.lists(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40), unique=True, max_size=300),
    st.integers(1, 64),
)
def test_shards_cover_every_user_exactly_once(users: list[str], count: int) -> None:
    owners = {u: [i for i in range(count) if Shard(i, count).owns(u)] for u in users}
    assert all(len(found) == 1 for found in owners.values())


@pytest.mark.parametrize(
    ("user_id", "expected"),
    # md5("42") = a1d0c6e8…, md5("") = d41d8cd9…: the definition pinned, so a change of it fails here, not in prod
    [("42", 0xA1D0C6E8), ("", 0xD41D8CD9), ("abc", 0x90015098)],
)
def test_the_shard_hash_is_the_first_32_bits_of_md5(user_id: str, expected: int) -> None:
    assert shard_hash(user_id) == expected
    assert shard_of(user_id, 4) == expected % 4


@pytest.mark.parametrize(("spec", "shard"), [("0/1", Shard(0, 1)), ("2/8", Shard(2, 8)), (" 3 / 4 ", Shard(3, 4))])
def test_shard_specs_parse(spec: str, shard: Shard) -> None:
    assert parse_shard(spec) == shard


@pytest.mark.parametrize(
    ("spec", "message"),
    [("3/2", "shard 3/2 is out of range"), ("1/0", "shard count 0"), ("a/b", "malformed shard"), ("2", "malformed")],
)
def test_bad_shard_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_shard(spec)


def test_an_indexed_job_gets_its_shard_from_the_environment() -> None:
    assert shard_from_env("3", "4") == Shard(3, 4)
    assert shard_from_env(None, None) == Shard(0, 1)
    with pytest.raises(ConfigError, match="must be integers"):
        shard_from_env("x", "4")
    with pytest.raises(ConfigError, match="out of range"):
        shard_from_env("4", "4")


def test_batch_size_bounds() -> None:
    assert validate_batch_size(5000) == 5000
    for bad in (0, -1, 100_001):
        with pytest.raises(ConfigError, match="batch size"):
            validate_batch_size(bad)


def _grant(grant_id: int, remaining: int, days: int | None) -> LiveGrant:
    return LiveGrant(grant_id, remaining, NOW + timedelta(days=days) if days is not None else None)


def test_soonest_expiring_first_never_expiring_last_ties_oldest_first() -> None:
    grants = [_grant(1, 5, None), _grant(2, 5, 30), _grant(3, 5, 3), _grant(4, 5, 3)]
    assert [g.grant_id for g in consumption_order(grants)] == [3, 4, 2, 1]
    assert plan_consumption(9, grants, 12) == [(3, 5), (4, 5), (2, 2)]


def test_not_enough_credits_plans_nothing() -> None:
    with pytest.raises(InsufficientCredits, match="user 9 has 10 credits available, 11 requested"):
        plan_consumption(9, [_grant(1, 4, 1), _grant(2, 6, None)], 11)


@settings(deadline=None)  # a shared, loaded machine: no per-example time limit
@given(
    st.lists(st.tuples(st.integers(0, 50), st.one_of(st.none(), st.integers(-5, 90))), min_size=1, max_size=12),
    st.integers(1, 400),
)
def test_a_plan_takes_exactly_the_amount_and_never_more_than_a_grant_holds(
    spec: list[tuple[int, int | None]], amount: int
) -> None:
    grants = [_grant(i, remaining, days) for i, (remaining, days) in enumerate(spec)]
    available = sum(g.remaining for g in grants)
    if available < amount:
        with pytest.raises(InsufficientCredits):
            plan_consumption(1, grants, amount)
        return
    plan = plan_consumption(1, grants, amount)
    by_id = {g.grant_id: g for g in grants}
    assert sum(take for _, take in plan) == amount
    assert all(0 < take <= by_id[g].remaining for g, take in plan)
    # every grant before the last one touched is emptied (soonest-expiring first)
    order = [g.grant_id for g in consumption_order(grants) if g.remaining > 0]
    touched = [g for g, _ in plan]
    assert touched == order[: len(touched)]
    assert all(take == by_id[g].remaining for g, take in plan[:-1])
