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

import json
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
# No line over about a kilobyte (a pod's log, a terminal): samples in an event show their first items (5, fewer if
# the line is still longer than LOG_LINE_BYTES) and count the rest, free text is cut at LOG_TEXT_CHARS and says how
# long it was. A crash's traceback is kept whole (the one place it is written); the run's audit row keeps every
# sample in full (`runs show --json`).
LOG_LINE_BYTES = 1024
LOG_SAMPLE_ITEMS = 5
LOG_TEXT_CHARS = 300
_KEPT_WHOLE = frozenset({"traceback", "exception"})


def _capped(value: Any, items: int) -> Any:
    if isinstance(value, str) and len(value) > LOG_TEXT_CHARS:
        return f"{value[:LOG_TEXT_CHARS]}… ({len(value)} characters)"
    if isinstance(value, list | tuple):
        shown = [_capped(item, items) for item in value[:items]]
        if len(value) > items:
            shown.append(f"… {len(value) - items} more")
        return shown
    if isinstance(value, dict):
        return {key: _capped(item, items) for key, item in value.items()}
    return value


def cap_values(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: samples capped and counted, long text cut (see LOG_LINE_BYTES)."""
    for items in (LOG_SAMPLE_ITEMS, 2, 1, 0):
        capped = {key: value if key in _KEPT_WHOLE else _capped(value, items) for key, value in event.items()}
        if len(json.dumps(capped, default=str).encode()) <= LOG_LINE_BYTES:
            break
    return capped


def _stderr_logger(*_: Any) -> structlog.PrintLogger:
    """A logger on the *current* sys.stderr (looked up per call, so redirections and test capture work)."""
    return structlog.PrintLogger(file=sys.stderr)


def configure_logging(log_format: str = "auto", level: str | None = None) -> None:
    """`level` None: `info` for a pipe or a pod, `warning` when a person reads the log in a terminal (the command
    prints its own summary there; LOG_LEVEL or `-v` asks for more)."""
    fmt = log_format.lower()
    if fmt not in ("auto", "json", "console"):
        fmt = "auto"
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    if level is None:
        level = "warning" if not use_json and sys.stderr.isatty() else "info"
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        cap_values,
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
