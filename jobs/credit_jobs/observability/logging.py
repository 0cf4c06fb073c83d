"""structlog configuration, done once per process at the entry point (CLI, operator).

JSON lines when stderr is not a TTY (or LOG_FORMAT=json), a readable console renderer on a TTY; ISO UTC
timestamps; context variables merged into every line, so the run lifecycle binds the run's fields once
(`creditjob`, `usecase`, `job_run_id`, `period_key`, `shard`, `trigger` — docs/contract.md) and every line carries them.
Modules only call `structlog.get_logger()`.

structlog is imported here without Rich: `import structlog` loads `structlog.dev` and `structlog.tracebacks`, which
import Rich when it is installed (it is: Typer's) only for their exception formatters — a third of structlog's
import time, paid by every `credit-jobs run` (docs/performance.md, "Job start-up"). Those formatters render
`exc_info`, which this project never logs: a crash is logged with its traceback as formatted text (`run.crashed`,
`api.internal_error`), so the log lines are the same with or without them. Every entry point imports this module
before anything else imports structlog; if something did first, structlog simply keeps Rich.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

_HIDE_RICH = "rich" not in sys.modules and "structlog" not in sys.modules
if _HIDE_RICH:
    sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` raises ImportError: structlog's fallback
try:
    import structlog
finally:
    if _HIDE_RICH:
        del sys.modules["rich"]

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _stderr_logger(*_: Any) -> structlog.PrintLogger:
    """A logger on the *current* sys.stderr (looked up per call, so redirections and test capture work)."""
    return structlog.PrintLogger(file=sys.stderr)


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    fmt = log_format.lower()
    if fmt not in ("auto", "json", "console"):
        fmt = "auto"
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if use_json:
        processors.append(structlog.processors.dict_tracebacks)
    processors.append(renderer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level.lower(), logging.INFO)),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
