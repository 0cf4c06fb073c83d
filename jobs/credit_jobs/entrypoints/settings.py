"""Configuration from the environment (pydantic-settings). Every variable is documented in docs/env-and-ops.md.

The CronJob container gets its run's identity through these (design.md ⚓ container contract); CLI options
override them. Read once, at the entry point.
"""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


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

    creditjobs_data_dir: Path = Path(".data")
    creditjobs_heartbeat_seconds: float = 10.0
    creditjobs_batch_size: int = 5000
    creditjobs_statement_timeout_seconds: float = 300.0  # job runs: SET LOCAL statement_timeout
    creditjobs_lock_timeout_seconds: float = 30.0  # job runs: SET LOCAL lock_timeout
