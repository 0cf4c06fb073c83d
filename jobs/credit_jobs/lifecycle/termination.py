"""SIGTERM during a run. Kubernetes sends it on eviction, node drain, `activeDeadlineSeconds` and Job deletion, then
SIGKILL once the pod's grace period (30 s by default) is over. A run that receives it stops at its next checkpoint
(between chunks: the chunk in flight commits, as every chunk does), records itself failed with the reason, logs
`run.finished`, pushes its metrics and exits 1; a rerun completes the period (every grant is exactly-once). A run
blocked inside one statement (a lock wait) stops when that statement ends — its lock and statement timeouts bound
that — or is killed at the end of the grace period, as before.

Only the main thread can install a signal handler: runs started in another thread (tests, the API's local
triggers) keep the process's own handling.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from credit_jobs.domain.errors import RunFailed


class StopRequest:
    """Set by the signal handler; `check()` (a run checkpoint) raises once a stop was asked for."""

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        self.signal = signal.Signals(signum)

    def check(self) -> None:
        if self.signal is not None:
            raise RunFailed(
                f"stopped by {self.signal.name} (Kubernetes stops a pod so on eviction, node drain, "
                "activeDeadlineSeconds or Job deletion) after its last committed chunk; rerun the period to finish it"
            )


@contextmanager
def stop_on_sigterm() -> Iterator[StopRequest]:
    """While the block runs, SIGTERM asks the run to stop at its next checkpoint instead of killing the process."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)
