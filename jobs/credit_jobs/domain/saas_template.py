"""How the SaaS template's credit rows become ledger grants — pure rules, no I/O.

The SQL only joins: every mapping is decided here, over the types and period keys the template's live grants carry
(`plan_import`), so the rules are tested without a server. A second import changes nothing (`import_key`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Final

from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.period_keys import MAX_KEY_YEAR, MIN_KEY_YEAR

# The template's transaction types that give credits (a row with positive amount and remaining_amount), and what
# each becomes in the ledger. USAGE, TRANSFER_OUT and EXPIRE rows take credits away: they are never grants.
GRANT_TYPES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "MONTHLY_REFRESH": "free_tier",  # free users' monthly credits
        "SUBSCRIPTION_RENEWAL": "subscription",  # the paid plan's credits of the period
        "LIFETIME_MONTHLY": "lifetime_monthly",  # the lifetime plan's monthly credits
        "REGISTER_GIFT": "gift",
        "PURCHASE_PACKAGE": "purchase",
        "TRANSFER_IN": "adjustment",
    }
)
# The types the template grants once per month (its partial unique index on (user_id, type, period_key)).
PERIODIC_TYPES: Final = frozenset({"MONTHLY_REFRESH", "SUBSCRIPTION_RENEWAL", "LIFETIME_MONTHLY"})
UNKNOWN_TYPE_GRANT: Final = "adjustment"  # an unknown type with live credits: carried over, reported

IMPORT_KEY_PREFIX: Final = "saas-template:"
MAX_SCHEMA_NAME_BYTES: Final = 63  # PostgreSQL's NAMEDATALEN - 1

_ISO = re.compile(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9:.]+([+-][0-9:]+|Z)?)?\Z", re.ASCII)


def ledger_grant_type(template_type: str) -> str:
    """The ledger grant type of a template transaction type (unknown types: `adjustment`).

    The three monthly types become the periodic types distribute-credits writes (`free_tier`, `subscription`,
    `lifetime_monthly`), so an imported grant of this month holds the (user, grant family, period) key and
    distribution does not grant the month again; the sign-up gift, bought packages and incoming transfers become
    one-off types; an unknown type with live credits becomes an `adjustment` (its credits still carry over) and is
    reported.
    """
    return GRANT_TYPES.get(template_type, UNKNOWN_TYPE_GRANT)


def ledger_period_key(template_key: int) -> str | None:
    """202611 → `2026-11`; 0 (or less) → None (not periodic). Raises ValueError for a number that is no month.

    The template's integer `period_key` (YYYYMM, 0 = not periodic) becomes this project's monthly key; a value that is
    no month is unreadable (reported; the grant carries over without a period).
    """
    if template_key <= 0:
        return None
    year, month = divmod(template_key, 100)
    if not (MIN_KEY_YEAR <= year <= MAX_KEY_YEAR and 1 <= month <= 12):
        raise ValueError(f"period_key {template_key} is not a month written YYYYMM")
    return f"{year:04d}-{month:02d}"


def import_key(transaction_id: str) -> str:
    """The key an imported grant carries: one per template credit_transaction row
    (`saas-template:<credit_transaction.id>`), which makes a second import change nothing."""
    return IMPORT_KEY_PREFIX + transaction_id


@dataclass(frozen=True)
class ImportPlan:
    """What the import statements join on: every type and period key the template's live grants carry, mapped."""

    # template type -> (ledger grant type, periodic?)
    types: Mapping[str, tuple[str, bool]]
    # template period_key -> ledger monthly key (only readable, positive keys)
    period_keys: Mapping[int, str]
    unknown_types: list[str] = field(default_factory=list)
    unreadable_period_keys: list[int] = field(default_factory=list)


def plan_import(types: Iterable[str], period_keys: Iterable[int]) -> ImportPlan:
    """Map the types and period keys found among the template's live grants.

    The import (`credit-jobs import saas-template`) reads which transaction types and period keys the template's live
    grants carry, plans them here, and hands the plan to the set-based statements of `adapters.saas_template_sql` as
    arrays (so the SQL only joins, and these rules are tested without a server in
    tests/unit/test_saas_template_rules.py).
    """
    planned_types = {t: (ledger_grant_type(t), t in PERIODIC_TYPES) for t in sorted(set(types))}
    keys: dict[int, str] = {}
    unreadable: list[int] = []
    for value in sorted(set(period_keys)):
        try:
            mapped = ledger_period_key(value)
        except ValueError:
            unreadable.append(value)
            continue
        if mapped is not None:
            keys[value] = mapped
    unknown = [t for t in planned_types if t not in GRANT_TYPES]
    return ImportPlan(planned_types, keys, unknown, unreadable)


def parse_as_of(text: str) -> datetime:
    """`--as-of`: an ISO 8601 date or date-time (ASCII digits); without an offset it is UTC. Anything else is refused
    with one line (ConfigError, exit 2)."""
    value = text.strip()
    if not _ISO.match(value):
        raise ConfigError(
            f"--as-of {text[:40]!r} is not an ISO 8601 time: write e.g. 2026-11-29T10:00:00Z (no offset means UTC)"
        )
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--as-of {text[:40]!r} is not a valid date or time: e.g. 2026-11-29T10:00:00Z") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def validate_source_schema(name: str) -> str:
    """`--source-schema`: a PostgreSQL schema name as it is stored (quoted in SQL, so any case is kept). Anything
    else is refused with one line (ConfigError, exit 2)."""
    if not name or not name.isprintable() or len(name.encode()) > MAX_SCHEMA_NAME_BYTES or name != name.strip():
        raise ConfigError(
            f"--source-schema {name[:70]!r} is not a schema name: 1-{MAX_SCHEMA_NAME_BYTES} printable bytes without "
            "surrounding spaces, e.g. public"
        )
    return name
