"""Moves this Python process's wall clock, and the embedded PostgreSQL's, by `TEST_CLOCK_OFFSET_S` seconds, for
`tests/at_instant.sh`, which puts this directory on PYTHONPATH for every process of a test session (pytest, and
each `credit-jobs` process a test starts). Without that variable this module does nothing.

- Python: time-machine, ticking from the moved instant (`time.time()`, `datetime.now()`, …). Monotonic time is left
  alone: it measures durations (timeouts, heartbeats), not dates.
- PostgreSQL: its programs (`initdb`, `pg_ctl`, and the server `pg_ctl` starts) are started with libfaketime
  preloaded (`TEST_CLOCK_FAKETIME_LIB`, Debian `faketime`) at the same offset, so `now()` and `clock_timestamp()`
  move with Python's clock. Only those: in a Python process libfaketime 0.9.10 fakes the monotonic clock without
  intercepting `sem_clockwait` (every lock or `Event.wait` with a timeout hangs), and with the monotonic clock left
  real its `clock_nanosleep` wrapper makes `time.sleep` fail with EINVAL.
- Under libfaketime, PostgreSQL's timeout timer fires early: a session idle in a transaction for ~10 s was ended by a
  60 s `idle_in_transaction_session_timeout` (a probe: 9 s idle ended, never without libfaketime). These sessions
  test dates, not timeouts, so the runs' idle-in-transaction timeout is left to the server (off) here:
  `CREDITJOBS_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS=0` in every process. The timeout itself is tested at the real
  clock (tests/reliability/test_network_partition.py, tests/integration/runs/test_statement_timeouts.py).
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

_offset = os.environ.get("TEST_CLOCK_OFFSET_S")
_POSTGRES_PROGRAMS = {"initdb", "pg_ctl", "postgres"}

if _offset:
    import time_machine

    time_machine.travel(time.time() + float(_offset), tick=True).start()
    os.environ["CREDITJOBS_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS"] = "0"  # see above: libfaketime's early timer
    _faked = {
        "LD_PRELOAD": os.environ["TEST_CLOCK_FAKETIME_LIB"],
        "FAKETIME": f"{int(_offset):+d}",
        "FAKETIME_DONT_RESET": "1",
    }
    _popen_init = subprocess.Popen.__init__

    def _init(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        program = args if isinstance(args, str | os.PathLike) else args[0]
        if os.path.basename(os.fspath(program)) in _POSTGRES_PROGRAMS:
            kwargs["env"] = {**(os.environ if kwargs.get("env") is None else kwargs["env"]), **_faked}
        _popen_init(self, args, *rest, **kwargs)

    subprocess.Popen.__init__ = _init  # type: ignore[method-assign]
