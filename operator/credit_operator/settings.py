"""Operator settings: environment variables (set by the chart's Deployment) and `credit-jobs operator` flags.

Read once at the entry point (`commands.py`) and at Kopf start-up (`handlers.py`); the pure planners never see this
class — they take the few values they need (`ManifestDefaults`) as plain arguments. Every variable is documented in
docs/operator.md.
"""

from __future__ import annotations

import importlib.metadata
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from credit_operator.cronjob_manifest import ManifestDefaults

# The image the chart publishes; its tag is the package version (= the chart's appVersion).
IMAGE_REPOSITORY = "ghcr.io/credit-jobs/credit-jobs"


def own_image() -> str:
    """The jobs image of this operator's own version: never `latest`, which would change under a running cluster."""
    return f"{IMAGE_REPOSITORY}:{importlib.metadata.version('credit-jobs')}"


class OperatorSettings(BaseSettings):
    """What the operator process needs to know about its environment."""

    model_config = SettingsConfigDict(env_prefix="CREDITJOBS_", extra="ignore", populate_by_name=True)

    namespaces: str = Field(
        default="",
        description="Comma-separated namespaces to watch; empty = every namespace (clusterwide).",
    )
    default_image: str = Field(
        default_factory=own_image,
        description="Image for CreditJobs whose spec.image is empty; default: the image of the operator's version.",
    )
    default_db_secret_name: str = Field(default="credit-jobs-db")
    default_db_secret_key: str = Field(default="url")
    pushgateway_url: str = Field(default="", validation_alias=AliasChoices("PUSHGATEWAY_URL", "pushgateway_url"))
    log_format: Literal["json", "console"] = Field(
        default="json", validation_alias=AliasChoices("LOG_FORMAT", "log_format")
    )
    metrics_port: int = Field(default=9090, ge=0, le=65535)
    health_port: int = Field(default=8080, ge=0, le=65535)
    peering_name: str = Field(default="credit-jobs")
    # How often every CreditJob is re-checked without any change (next run time, missed fire times, drift
    # that happened while a watch was down). Short in tests, a minute in production.
    resync_seconds: float = Field(default=60.0, gt=0)

    @property
    def namespace_list(self) -> list[str]:
        """The namespaces to watch, or [] for all of them."""
        return [ns.strip() for ns in self.namespaces.split(",") if ns.strip()]

    @property
    def clusterwide(self) -> bool:
        return not self.namespace_list

    def manifest_defaults(self) -> ManifestDefaults:
        return ManifestDefaults(
            image=self.default_image,
            db_secret_name=self.default_db_secret_name,
            db_secret_key=self.default_db_secret_key,
            pushgateway_url=self.pushgateway_url,
        )
