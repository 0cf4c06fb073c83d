"""Configuration from the environment (pydantic-settings). Every variable is documented in docs/env-and-ops.md.

The CronJob container gets its run's identity through these (docs/contract.md, container contract); CLI options
override them. Read once, at the entry point, through `load_settings()`: every value is checked here, at the edge,
and a bad one becomes a one-line ConfigError (exit 2) naming the variable, the value and the accepted range —
before anything connects or writes.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from credit_jobs.domain.contract import DEFAULT_BATCH_SIZE
from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.grant_rules import DEFAULT_GRANT_FAMILY, validate_grant_family
from credit_jobs.domain.limits import MAX_JOB_NAME_LENGTH
from credit_jobs.domain.run_model import MAX_BATCH_SIZE

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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    database_url: str | None = None
    pushgateway_url: str | None = None
    log_format: str = "auto"  # auto (JSON unless stderr is a TTY) | json | console
    log_level: str = "info"

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

    creditjobs_data_dir: Path | None = None  # None: the per-user default (entrypoints/data_dir.py)
    creditjobs_heartbeat_seconds: float = 10.0
    creditjobs_batch_size: int = DEFAULT_BATCH_SIZE
    creditjobs_statement_timeout_seconds: float = 300.0  # job runs: SET LOCAL statement_timeout
    creditjobs_lock_timeout_seconds: float = 30.0  # job runs: SET LOCAL lock_timeout

    @model_validator(mode="before")
    @classmethod
    def _utf8(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, value in data.items():
                if isinstance(value, str) and (problem := _utf8_problem(value)):
                    raise ValueError(f"{name.upper()} is not valid UTF-8 ({problem}): set it to UTF-8 text")
        return data

    @field_validator("log_format", mode="before")
    @classmethod
    def _log_format(cls, value: Any) -> Any:
        if str(value).strip().lower() not in LOG_FORMATS:
            raise ValueError(f"LOG_FORMAT={_shown(value)} is not one of {', '.join(LOG_FORMATS)}")
        return str(value).strip().lower()

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: Any) -> Any:
        if str(value).strip().lower() not in LOG_LEVELS:
            raise ValueError(f"LOG_LEVEL={_shown(value)} is not one of {', '.join(LOG_LEVELS)}")
        return str(value).strip().lower()

    @field_validator("creditjob_name", mode="before")
    @classmethod
    def _job_name(cls, value: Any) -> Any:
        if value is None:
            return None
        name = str(value)
        if not name.strip():
            raise ValueError("CREDITJOB_NAME is empty: unset it (the usecase's name is used) or set the job's name")
        if len(name) > MAX_JOB_NAME_LENGTH:
            raise ValueError(
                f"CREDITJOB_NAME is {len(name)} characters long ({_shown(name)}): use at most {MAX_JOB_NAME_LENGTH} "
                "(a CreditJob name)"
            )
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise ValueError(f"CREDITJOB_NAME contains a control character ({_shown(name)}): use printable text")
        return name

    @field_validator("creditjob_requested_by", mode="before")
    @classmethod
    def _requested_by(cls, value: Any) -> Any:
        if value is None or not str(value).strip():
            return None
        text = str(value)
        if len(text) > MAX_JOB_NAME_LENGTH or not text.isprintable():
            raise ValueError(
                f"CREDITJOB_REQUESTED_BY={_shown(value)} is not a principal name: use at most "
                f"{MAX_JOB_NAME_LENGTH} printable characters (it is set by the operator)"
            )
        return text

    @field_validator("creditjob_grant_family", mode="before")
    @classmethod
    def _grant_family(cls, value: Any) -> Any:
        try:
            return validate_grant_family(str(value), source="CREDITJOB_GRANT_FAMILY")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("creditjobs_heartbeat_seconds", mode="before")
    @classmethod
    def _heartbeat(cls, value: Any) -> Any:
        try:
            seconds = float(str(value).strip())
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds):
            raise ValueError(
                f"CREDITJOBS_HEARTBEAT_SECONDS={_shown(value)} is not a number of seconds: "
                f"use {MIN_HEARTBEAT_SECONDS:g}..{MAX_HEARTBEAT_SECONDS:g} (default 10)"
            )
        if not MIN_HEARTBEAT_SECONDS <= seconds <= MAX_HEARTBEAT_SECONDS:
            raise ValueError(
                f"CREDITJOBS_HEARTBEAT_SECONDS={str(value).strip()} is out of range: "
                f"use {MIN_HEARTBEAT_SECONDS:g}..{MAX_HEARTBEAT_SECONDS:g} (default 10)"
            )
        return seconds

    @field_validator("creditjobs_batch_size", mode="before")
    @classmethod
    def _batch_size(cls, value: Any) -> Any:
        text = str(value).strip()
        if not _WHOLE_NUMBER.fullmatch(text):
            raise ValueError(
                f"CREDITJOBS_BATCH_SIZE={_shown(value)} is not a whole number: use 1..{MAX_BATCH_SIZE} "
                f"(default {DEFAULT_BATCH_SIZE})"
            )
        if not 1 <= int(text) <= MAX_BATCH_SIZE:
            raise ValueError(
                f"CREDITJOBS_BATCH_SIZE={text} is out of range: use 1..{MAX_BATCH_SIZE} (default {DEFAULT_BATCH_SIZE})"
            )
        return int(text)


def load_settings() -> Settings:
    """The settings, or a ConfigError whose one line names the first bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None


def _one_line(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    message = str(error["msg"]).removeprefix("Value error, ")
    if error.get("type") == "value_error":  # ours: already names the variable and how to fix it
        return message
    variable = str(error["loc"][0]).upper() if error.get("loc") else "a setting"
    return f"{variable}={_shown(error.get('input'))} is invalid: {message} (see docs/env-and-ops.md)"
