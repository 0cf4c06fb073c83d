"""Shards: a run may handle one hash partition of the users (`--shard i/n`, or an Indexed Job's
`JOB_COMPLETION_INDEX` with `CREDITJOB_SHARDS`). Pure: parsing and the partition function, which the SQL in
`credit_jobs.adapters.ledger_sql` mirrors (`((user_id % n) + n) % n = i`, correct for negative ids too).
"""

from __future__ import annotations

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

    def owns(self, user_id: int) -> bool:
        return shard_of(user_id, self.count) == self.index


def shard_of(user_id: int, count: int) -> int:
    """The shard a user belongs to (Python's % is already non-negative for a positive modulus)."""
    return user_id % count


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
