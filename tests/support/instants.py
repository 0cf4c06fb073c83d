"""The fixed instant the jobs tests share: `NOW`, a Saturday noon (UTC) late in November 2026 (period keys
2026-11, 2026-W48, 2026-11-28). Tests derive every other time from it, so one clock is read the same everywhere.
Imported by `tests/support/ledger.py` (which re-exports it) and the unit tests."""

from __future__ import annotations

from datetime import UTC, datetime

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
