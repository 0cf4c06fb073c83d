"""credit-jobs: exactly-once periodic billing jobs (credit distribution, expiry, cleanup) over PostgreSQL.

Layers, outermost first (import direction checked by import-linter, see `.importlinter`):
`entrypoints` (CLI) → `usecases` + `lifecycle` → `adapters` (database, Pushgateway, embedded PostgreSQL)
→ `domain` (pure: period keys, sharding, errors, result types).
"""

__version__ = "0.1.0"
