"""Configuration from the environment. Every variable is documented in docs/env-and-ops.md.

The CronJob container gets its run's identity through these (docs/contract.md, container contract); CLI options
override them. Read once, at the entry point (the CLI's root callback, `cli/root.py`),
through `load_settings()`: every value is checked here, at the edge, and a bad one becomes a one-line ConfigError
(exit 2) naming the variable, the value and the accepted range — before anything connects or writes.

A plain reader, not pydantic-settings: every `credit-jobs run` (each CronJob run) imports this module, and pydantic is
not on that path (the start-up rule: `cli/__init__.py`). Variable names are matched case-insensitively.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from credit_jobs.domain.contract import CLEANUP_STORAGE, DEFAULT_BATCH_SIZE, PURGE_RETENTION
from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.grant_rules import DEFAULT_GRANT_FAMILY, validate_grant_family
from credit_jobs.domain.limits import MAX_JOB_NAME_LENGTH
from credit_jobs.domain.retention import (
    DEFAULT_REQUEST_REPLAY_DAYS,
    DEFAULT_RETENTION_DAYS,
    MAX_RETENTION_DAYS,
    RetentionPolicy,
)
from credit_jobs.domain.run_model import MAX_BATCH_SIZE, UsecaseSpec

LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
# The heartbeat writes the audit row and notices a lost guard session: under a second is a busy loop against the
# database, over ten minutes leaves a lost guard unnoticed for too long.
MIN_HEARTBEAT_SECONDS = 1.0
MAX_HEARTBEAT_SECONDS = 600.0
_WHOLE_NUMBER = re.compile(r"[0-9]+")
_SHOWN = 60  # characters of a bad value echoed back in the error line


def _shown(value: Any) -> str:
    text = str(value)
    text = text if len(text) <= _SHOWN else text[:_SHOWN] + "…"
    return repr(text.encode("utf-8", "backslashreplace").decode("utf-8"))


def _utf8_problem(value: str) -> str | None:
    """Environment bytes that are not UTF-8 reach Python as lone surrogates (PEP 383): name the first bad byte."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raw = value.encode("utf-8", "surrogateescape")
        return f"byte 0x{raw[len(value[: exc.start].encode('utf-8', 'surrogateescape'))]:02x} at position {exc.start}"
    return None


@dataclass(frozen=True)
class Settings:
    """The checked settings; `Settings()` is the defaults (no environment)."""

    database_url: str | None = None
    pushgateway_url: str | None = None
    log_format: str = "auto"  # auto (JSON unless stderr is a TTY) | json | console
    log_level: str | None = None  # None: not set (commands log at info; `demo` at error)

    creditjob_name: str | None = None
    creditjob_namespace: str | None = None
    creditjob_schedule: str | None = None
    creditjob_time_zone: str = "UTC"
    creditjob_period: str | None = None
    creditjob_shards: str | None = None
    job_completion_index: str | None = None
    creditjob_trigger: str | None = None
    creditjob_period_key: str | None = None
    creditjob_grant_family: str = DEFAULT_GRANT_FAMILY
    creditjob_requested_by: str | None = None  # set by the operator on run-now Jobs the HTTP API asked for

    creditjobs_data_dir: Path | None = None  # None: the per-user default (entrypoints/cli/data_dir.py)
    creditjobs_embedded_idle_seconds: float = 1800.0  # the CLI's embedded server stops after this long unused
    creditjobs_heartbeat_seconds: float = 10.0
    creditjobs_batch_size: int = DEFAULT_BATCH_SIZE
    creditjobs_statement_timeout_seconds: float = 300.0  # job runs: SET LOCAL statement_timeout
    creditjobs_lock_timeout_seconds: float = 30.0  # job runs: SET LOCAL lock_timeout
    creditjobs_idle_in_transaction_timeout_seconds: float = 60.0  # job runs: SET LOCAL idle_in_transaction_…
    creditjobs_network_timeout_seconds: float = 30.0  # every connection: TCP keepalives and tcp_user_timeout
    creditjobs_retention_days: int = DEFAULT_RETENTION_DAYS  # purge-retention: job_runs, deleted stored_files rows
    creditjobs_request_replay_days: int = DEFAULT_REQUEST_REPLAY_DAYS  # purge-retention: processed request ids
    creditjobs_storage_file_root: str | None = None  # cleanup-storage: file:// paths only under this directory
    s3_endpoint_url: str | None = None  # cleanup-storage: an S3-compatible store's endpoint (None: AWS)


# The environment variables the settings read (upper case), in the order they are checked.
VARIABLES: tuple[str, ...] = tuple(field.name.upper() for field in dataclasses.fields(Settings))


def _log_format(value: str) -> str:
    if value.strip().lower() not in LOG_FORMATS:
        raise ConfigError(f"LOG_FORMAT={_shown(value)} is not one of {', '.join(LOG_FORMATS)}")
    return value.strip().lower()


def _log_level(value: str) -> str:
    if value.strip().lower() not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL={_shown(value)} is not one of {', '.join(LOG_LEVELS)}")
    return value.strip().lower()


def _job_name(name: str) -> str:
    if not name.strip():
        raise ConfigError("CREDITJOB_NAME is empty: unset it (the usecase's name is used) or set the job's name")
    if len(name) > MAX_JOB_NAME_LENGTH:
        raise ConfigError(
            f"CREDITJOB_NAME is {len(name)} characters long ({_shown(name)}): use at most {MAX_JOB_NAME_LENGTH} "
            "(a CreditJob name)"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ConfigError(f"CREDITJOB_NAME contains a control character ({_shown(name)}): use printable text")
    return name


def _requested_by(value: str) -> str | None:
    if not value.strip():
        return None
    if len(value) > MAX_JOB_NAME_LENGTH or not value.isprintable():
        raise ConfigError(
            f"CREDITJOB_REQUESTED_BY={_shown(value)} is not a principal name: use at most "
            f"{MAX_JOB_NAME_LENGTH} printable characters (it is set by the operator)"
        )
    return value


def _grant_family(value: str) -> str:
    return validate_grant_family(value, source="CREDITJOB_GRANT_FAMILY")


def _heartbeat(value: str) -> float:
    try:
        seconds = float(value.strip())
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds):
        raise ConfigError(
            f"CREDITJOBS_HEARTBEAT_SECONDS={_shown(value)} is not a number of seconds: "
            f"use {MIN_HEARTBEAT_SECONDS:g}..{MAX_HEARTBEAT_SECONDS:g} (default 10)"
        )
    if not MIN_HEARTBEAT_SECONDS <= seconds <= MAX_HEARTBEAT_SECONDS:
        raise ConfigError(
            f"CREDITJOBS_HEARTBEAT_SECONDS={value.strip()} is out of range: "
            f"use {MIN_HEARTBEAT_SECONDS:g}..{MAX_HEARTBEAT_SECONDS:g} (default 10)"
        )
    return seconds


def _batch_size(value: str) -> int:
    text = value.strip()
    if not _WHOLE_NUMBER.fullmatch(text):
        raise ConfigError(
            f"CREDITJOBS_BATCH_SIZE={_shown(value)} is not a whole number: use 1..{MAX_BATCH_SIZE} "
            f"(default {DEFAULT_BATCH_SIZE})"
        )
    if not 1 <= int(text) <= MAX_BATCH_SIZE:
        raise ConfigError(
            f"CREDITJOBS_BATCH_SIZE={text} is out of range: use 1..{MAX_BATCH_SIZE} (default {DEFAULT_BATCH_SIZE})"
        )
    return int(text)


def _days(variable: str) -> Callable[[str], int]:
    """A whole number of days in 1..MAX_RETENTION_DAYS (purge-retention's windows)."""

    def parse(value: str) -> int:
        text = value.strip()
        if not _WHOLE_NUMBER.fullmatch(text) or not 1 <= int(text) <= MAX_RETENTION_DAYS:
            raise ConfigError(f"{variable}={_shown(value)} is not a number of days in 1..{MAX_RETENTION_DAYS}")
        return int(text)

    return parse


def _number(variable: str) -> Callable[[str], float]:
    """A plain number of seconds (the timeouts): any float notation, surrounding blanks allowed."""

    def parse(value: str) -> float:
        try:
            if "_" in value:  # Python's float() takes `1_000`; an environment value with one is a typo
                raise ValueError(value)
            return float(value.strip())
        except ValueError:
            raise ConfigError(
                f"{variable}={_shown(value)} is invalid: Input should be a valid number, unable to parse string as "
                "a number (see docs/env-and-ops.md)"
            ) from None

    return parse


MAX_EMBEDDED_IDLE_SECONDS = 7 * 86400.0


def _idle_seconds(value: str) -> float:
    seconds = _number("CREDITJOBS_EMBEDDED_IDLE_SECONDS")(value)
    if not 0 <= seconds <= MAX_EMBEDDED_IDLE_SECONDS or math.isnan(seconds):
        raise ConfigError(
            f"CREDITJOBS_EMBEDDED_IDLE_SECONDS={value.strip()} is out of range: use 0 (stop after each command).."
            f"{MAX_EMBEDDED_IDLE_SECONDS:g} seconds (default 1800)"
        )
    return seconds


# How each checked variable is read; the others are taken as text.
_PARSERS: dict[str, Callable[[str], Any]] = {
    "log_format": _log_format,
    "log_level": _log_level,
    "creditjob_name": _job_name,
    "creditjob_grant_family": _grant_family,
    "creditjob_requested_by": _requested_by,
    "creditjobs_data_dir": Path,
    "creditjobs_embedded_idle_seconds": _idle_seconds,
    "creditjobs_heartbeat_seconds": _heartbeat,
    "creditjobs_batch_size": _batch_size,
    "creditjobs_statement_timeout_seconds": _number("CREDITJOBS_STATEMENT_TIMEOUT_SECONDS"),
    "creditjobs_lock_timeout_seconds": _number("CREDITJOBS_LOCK_TIMEOUT_SECONDS"),
    "creditjobs_idle_in_transaction_timeout_seconds": _number("CREDITJOBS_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS"),
    "creditjobs_network_timeout_seconds": _number("CREDITJOBS_NETWORK_TIMEOUT_SECONDS"),
    "creditjobs_retention_days": _days("CREDITJOBS_RETENTION_DAYS"),
    "creditjobs_request_replay_days": _days("CREDITJOBS_REQUEST_REPLAY_DAYS"),
}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings from `environ` (default: the process environment), or a ConfigError whose one line names the
    first bad variable."""
    given = {name.lower(): value for name, value in (os.environ if environ is None else environ).items()}
    present = {field.name: given[field.name] for field in dataclasses.fields(Settings) if field.name in given}
    for name, value in present.items():  # undecodable bytes first: no parser should see them
        if problem := _utf8_problem(value):
            raise ConfigError(f"{name.upper()} is not valid UTF-8 ({problem}): set it to UTF-8 text")
    return Settings(**{name: _PARSERS.get(name, str)(value) for name, value in present.items()})


def bind_settings(spec: UsecaseSpec, settings: Settings) -> UsecaseSpec:
    """The usecase with what it reads from the settings bound: purge-retention's retention and replay window,
    cleanup-storage's stores. Every entry point that runs a usecase (`run`, `backfill`, the HTTP API's local
    triggers) binds through here."""
    if spec.name == PURGE_RETENTION:
        policy = RetentionPolicy(settings.creditjobs_retention_days, settings.creditjobs_request_replay_days)
        return dataclasses.replace(spec, run=functools.partial(spec.run, policy=policy))
    if spec.name == CLEANUP_STORAGE:
        from credit_jobs.adapters.object_storage import storage_for

        storage = storage_for(settings.creditjobs_storage_file_root, settings.s3_endpoint_url)
        return dataclasses.replace(spec, run=functools.partial(spec.run, storage=storage))
    return spec
