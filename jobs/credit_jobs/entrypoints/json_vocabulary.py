"""The one JSON vocabulary of the CLI's `--json` and the HTTP API (docs/contract.md, "JSON"): camelCase names, ids
as strings (a grant id is a 64-bit integer, past what JavaScript's numbers hold exactly), ISO-8601 timestamps with
their offset, counts as numbers. The CLI's `runs`, `balance`, `grants` and the API's runs and ledger routes render
through here, so the same run, balance or grant reads the same through both.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from credit_jobs.adapters.ledger_views import UserLedger

# Database names whose camelCase is not the plain conversion: a run is a "job run" everywhere else (logs, metrics,
# the seed's route), and `stats` are its counts.
_RENAMED = {"run_id": "jobRunId", "grant_type": "type", "duration_s": "durationSeconds"}
_WORD = re.compile(r"_([a-z0-9])")


def camel(name: str) -> str:
    """`period_key` → `periodKey` (and the renames above)."""
    return _RENAMED.get(name) or _WORD.sub(lambda m: m.group(1).upper(), name)


def value(item: Any) -> Any:
    """A database value as JSON: UUIDs as strings, datetimes ISO-8601 with offset, whole numerics as integers;
    inside mappings (a run's counts) only the values change — their keys are data, as in the logs."""
    if isinstance(item, Decimal):
        return int(item) if item == item.to_integral_value() else float(item)
    if isinstance(item, uuid.UUID):
        return str(item)
    if isinstance(item, datetime | date):
        return item.isoformat()
    if isinstance(item, Mapping):
        return {key: value(inner) for key, inner in item.items()}
    if isinstance(item, list | tuple):
        return [value(inner) for inner in item]
    return item


def record(row: Mapping[str, Any]) -> dict[str, Any]:
    """A database row as a JSON object of this vocabulary; every id (`…_id`) a string."""
    return {camel(key): _id(item) if key.endswith("_id") else value(item) for key, item in row.items()}


def _id(item: Any) -> Any:
    return str(item) if isinstance(item, int | uuid.UUID) and not isinstance(item, bool) else value(item)


def run_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A job run's audit row (`run_audit` columns)."""
    return record(row)


def grant_json(grant: Mapping[str, Any]) -> dict[str, Any]:
    """A grant as `ledger_views` reads it."""
    return record(grant)


def ledger_json(ledger: UserLedger) -> dict[str, Any]:
    """One user's balance and grants (`balance` / `grants`, the API's balance route)."""
    return {
        "userId": ledger.user_id,
        "knownUser": ledger.known,
        "hasAccount": ledger.has_account,
        "spendable": ledger.spendable,
        "balance": ledger.balance,
        "asOf": value(ledger.now),
        "grants": [grant_json(grant) for grant in ledger.grants],
    }
