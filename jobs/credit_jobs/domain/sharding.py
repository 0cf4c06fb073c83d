"""Shards: a run may handle one hash partition of the users (`--shard i/n`, or an Indexed Job's
`JOB_COMPLETION_INDEX` with `CREDITJOB_SHARDS`). Pure: parsing and the partition function.

The partition is `shard_hash(user_id) % n`, where `shard_hash` is the first 32 bits of the MD5 of the id's UTF-8
bytes, read as an unsigned big-endian number (0 … 2^32 - 1). MD5 is a fixed standard, so the hash is the same on every
PostgreSQL version and in Python — unlike PostgreSQL's internal `hashtext`, which is not promised stable across
major versions. Migration 0007 installs the same definition as the IMMUTABLE SQL function `credit_shard_hash(text)`
that `credit_jobs.adapters.ledger_sql` filters with; `tests/integration/ledger/test_text_user_ids.py` proves the two
agree and that n shards partition the users exactly (docs/architecture.md, "Shards").
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from credit_jobs.domain.errors import ConfigError

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
MAX_SHARDS = 1024


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ConfigError(f"shard count {self.count} is out of range: use 1..{MAX_SHARDS}")
        if not 0 <= self.index < self.count:
            raise ConfigError(f"shard {self.index}/{self.count} is out of range: the index must be 0..{self.count - 1}")

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, user_id: str) -> bool:
        return shard_of(user_id, self.count) == self.index


def shard_hash(user_id: str) -> int:
    """The stable 32-bit hash of a user id: what SQL's `credit_shard_hash(user_id)` returns (migration 0007)."""
    return int.from_bytes(hashlib.md5(user_id.encode("utf-8"), usedforsecurity=False).digest()[:4], "big")


def shard_of(user_id: str, count: int) -> int:
    """The shard a user belongs to: 0 … count - 1."""
    return shard_hash(user_id) % count


def parse_shard(spec: str) -> Shard:
    """`"2/8"` → Shard(2, 8); anything else is a ConfigError saying the expected form."""
    match = _SPEC.match(spec)
    if match is None:
        raise ConfigError(f"malformed shard {spec!r}: expected INDEX/COUNT such as 0/4")
    return Shard(int(match.group(1)), int(match.group(2)))


def shard_from_env(completion_index: str | None, shards: str | None) -> Shard:
    """An Indexed Job's shard from `JOB_COMPLETION_INDEX` and `CREDITJOB_SHARDS` (both optional)."""
    try:
        count = int(shards) if shards else 1
        index = int(completion_index) if completion_index else 0
    except ValueError:
        raise ConfigError(
            f"CREDITJOB_SHARDS={shards!r} / JOB_COMPLETION_INDEX={completion_index!r} must be integers"
        ) from None
    return Shard(index, count)
