"""The operator's logging: JSON lines (or a console format) with the field names the jobs and the metrics use.

`configure_operator_logging` is called once by `credit-jobs operator` (commands.py). It puts one stderr handler on
the root logger whose formatter is structlog's ProcessorFormatter, so the operator's own lines (stdlib logging with
`extra=` fields, see `fields()`), Kopf's lines and the kubernetes client's all come out in one format:
`{"event": …, "level": …, "timestamp": …, "logger": …, "creditjob": …, "namespace": …, "reason": …,
"decision": …}`. Kopf's per-object lines carry a `k8s_ref`; it becomes `creditjob` / `namespace` too, so a
`creditjob="x"` filter finds every line about x. `LOG_FORMAT=console` (as for the jobs) renders the same fields for
people.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# The names every operator line uses for what it is about (the metrics' labels, docs/contract.md).
CREDITJOB = "creditjob"
NAMESPACE = "namespace"
REASON = "reason"
DECISION = "decision"


def fields(
    namespace: str, name: str, reason: str | None = None, decision: str | None = None, **more: Any
) -> dict[str, Any]:
    """`extra=` for a stdlib log call about one CreditJob."""
    found: dict[str, Any] = {CREDITJOB: name, NAMESPACE: namespace, **more}
    if reason is not None:
        found[REASON] = reason
    if decision is not None:
        found[DECISION] = decision
    return found


def _kopf_reference(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Kopf's `k8s_ref` ({kind, name, namespace, …}) → `creditjob` / `namespace` (or `object` for other kinds)."""
    ref = event.pop("k8s_ref", None)
    event.pop("k8s_skip", None)
    if isinstance(ref, dict) and ref.get("name"):
        key = CREDITJOB if ref.get("kind") == "CreditJob" else "object"
        event.setdefault(key, ref["name"] if key == CREDITJOB else f"{ref.get('kind', '')}/{ref['name']}")
        if ref.get("namespace"):
            event.setdefault(NAMESPACE, ref["namespace"])
    return event


def configure_operator_logging(log_format: str = "json", verbose: bool = False) -> None:
    """Route all stdlib logging (Kopf's included) and structlog through one ProcessorFormatter on stderr."""
    use_json = log_format.lower() != "console"
    shared: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _kopf_reference,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *([structlog.processors.dict_tracebacks] if use_json else []),
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    if not verbose:
        # Kopf logs every handler call per object at INFO; the operator's own line per decision says what
        # matters, and formatting thousands of lines per burst costs real CPU.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
