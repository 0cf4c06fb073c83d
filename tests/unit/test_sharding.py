"""Pure rules: shards partition users exactly. (The SQL form of the partition, `ledger_sql.shard_predicate`, is
checked against `Shard.owns` on PostgreSQL in tests/integration/ledger/test_shard_predicate.py; the consumption
order, the database's `credit_consume`, in tests/integration/ledger/test_sql_api.py.)"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.run_model import validate_batch_size
from credit_jobs.domain.sharding import Shard, parse_shard, shard_from_env, shard_hash, shard_of


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
