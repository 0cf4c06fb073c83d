"""Documented bounds on every number and identifier the ledger accepts (docs/credits-lifecycle.md, "Limits").

Pure constants, shared by input validation at the edges (CLI, settings, library calls) and by the CHECK constraints
the migrations install, so a value the edge accepts is always one the database accepts — and a row written around the
edge (a host application's own SQL) is refused by the database instead of poisoning every later run.
"""

from __future__ import annotations

# One grant, one consumption, one void, one plan's credits per period: at most a trillion credits.
MAX_CREDITS = 10**12
# A user's balance: a thousand maximal grants. Far below BIGINT's 9.2e18, so no sum of a run's grants can overflow.
MAX_BALANCE = 10**15
# User ids are text (the host application's own ids: numbers, uuids, nanoids, an auth library's strings), with the
# request-id rules: non-empty, printable, no surrounding whitespace, valid UTF-8, at most this many characters.
MAX_USER_ID_LENGTH = 255
# Request ids and idempotency keys: printable text well inside PostgreSQL's btree row limit (~2.7 kB).
MAX_REQUEST_ID_LENGTH = 255
# A one-off grant's validity: at most a hundred years.
MAX_EXPIRY_DAYS = 36_500
# Job names (CreditJob names are DNS subdomain names: at most 253 characters).
MAX_JOB_NAME_LENGTH = 253
