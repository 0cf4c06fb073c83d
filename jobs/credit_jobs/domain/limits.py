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

# The characters no user id, request id or idempotency key may contain, as code-point ranges: Unicode 14's control
# (Cc), format (Cf: zero-width spaces, bidirectional overrides, the byte-order mark…), private-use (Co), line and
# paragraph separators (Zl, Zp), every space separator but the ASCII space (Zs: no-break and ideographic spaces…) and
# the noncharacters. Frozen here rather than asked of `str.isprintable()`, whose answer moves with each Python's
# Unicode version: the database's `credit_text_id_is_valid` (migration 0012) carries the same ranges, and
# tests/integration/ledger/test_money_path_one_implementation.py checks every code point through both.
UNPRINTABLE_RANGES = (
    (0x0000, 0x001F), (0x007F, 0x00A0), (0x00AD, 0x00AD), (0x0600, 0x0605), (0x061C, 0x061C), (0x06DD, 0x06DD),
    (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2), (0x1680, 0x1680), (0x180E, 0x180E), (0x2000, 0x200F),
    (0x2028, 0x202F), (0x205F, 0x2064), (0x2066, 0x206F), (0x3000, 0x3000), (0xE000, 0xF8FF), (0xFDD0, 0xFDEF),
    (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB), (0xFFFE, 0xFFFF), (0x110BD, 0x110BD), (0x110CD, 0x110CD),
    (0x13430, 0x13438), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0x1FFFE, 0x1FFFF), (0x2FFFE, 0x2FFFF),
    (0x3FFFE, 0x3FFFF), (0x4FFFE, 0x4FFFF), (0x5FFFE, 0x5FFFF), (0x6FFFE, 0x6FFFF), (0x7FFFE, 0x7FFFF),
    (0x8FFFE, 0x8FFFF), (0x9FFFE, 0x9FFFF), (0xAFFFE, 0xAFFFF), (0xBFFFE, 0xBFFFF), (0xCFFFE, 0xCFFFF),
    (0xDFFFE, 0xDFFFF), (0xE0001, 0xE0001), (0xE0020, 0xE007F), (0xEFFFE, 0x10FFFF),
)  # fmt: skip
