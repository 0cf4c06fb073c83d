"""Operator settings: environment variables (set by the chart's Deployment) and `credit-jobs operator` flags.

Read once at the entry point (`commands.py`) and at Kopf start-up (`handlers.py`); the pure planners never see this
class — they take the few values they need (`ManifestDefaults`) as plain arguments. Every variable is documented in
docs/operator.md.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from credit_operator.cronjob_manifest import ManifestDefaults
from credit_operator.leader_election import Timing

# Where Kubernetes mounts the pod's namespace (the Lease lives there unless CREDITJOBS_LEASE_NAMESPACE says).
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

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
    allowed_images: str = Field(
        default="",
        description="Comma-separated images a CreditJob's spec.image may name besides the default image's repository "
        "(a repository: any tag or digest; a reference with a tag or digest: only itself).",
    )
    allowed_db_secrets: str = Field(
        default="",
        description="Comma-separated Secret names a CreditJob's spec.databaseSecretRef may name besides the default.",
    )
    watch_crds: bool = Field(
        default=False,
        description="Let Kopf watch CustomResourceDefinitions (and namespaces) at runtime; needs cluster-wide "
        "list/watch on them (chart: rbac.discovery). Off: the CRD the chart installs is found at start-up.",
    )
    pushgateway_url: str = Field(default="", validation_alias=AliasChoices("PUSHGATEWAY_URL", "pushgateway_url"))
    log_format: Literal["json", "console"] = Field(
        default="json", validation_alias=AliasChoices("LOG_FORMAT", "log_format")
    )
    metrics_port: int = Field(default=9090, ge=0, le=65535)
    health_port: int = Field(default=8080, ge=0, le=65535)
    # Leader election (leader_election.py): one replica acts, the others stand by on a coordination.k8s.io Lease.
    leader_election: bool = Field(default=True, description="Off: act at once, alone (`--standalone`).")
    lease_name: str = Field(default="credit-jobs-operator")
    lease_namespace: str = Field(default="", description="Empty: the pod's namespace, else `default`.")
    lease_duration_seconds: float = Field(default=15.0, gt=0)
    lease_renew_deadline_seconds: float = Field(default=10.0, gt=0)
    lease_retry_seconds: float = Field(default=2.0, gt=0)
    pod_name: str = Field(default="", description="This replica's name (downward API); empty: the host name.")
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

    @model_validator(mode="after")
    def _lease_timing_is_consistent(self) -> OperatorSettings:
        try:
            self.lease_timing()
        except ValueError:  # a one-line ConfigError (exit 2) at the entry point
            raise ValueError(
                "CREDITJOBS_LEASE_RETRY_SECONDS < CREDITJOBS_LEASE_RENEW_DEADLINE_SECONDS < "
                f"CREDITJOBS_LEASE_DURATION_SECONDS must hold (got {self.lease_retry_seconds:g}, "
                f"{self.lease_renew_deadline_seconds:g}, {self.lease_duration_seconds:g}): renewals must fit in the "
                "deadline, and the deadline end before the others may take over"
            ) from None
        return self

    def lease_timing(self) -> Timing:
        return Timing(self.lease_duration_seconds, self.lease_renew_deadline_seconds, self.lease_retry_seconds)

    def resolved_lease_namespace(self) -> str:
        """CREDITJOBS_LEASE_NAMESPACE, else the namespace of the pod's service account, else `default`."""
        if self.lease_namespace:
            return self.lease_namespace
        try:
            return Path(SERVICE_ACCOUNT_NAMESPACE).read_text().strip() or "default"
        except OSError:
            return "default"

    def manifest_defaults(self) -> ManifestDefaults:
        return ManifestDefaults(
            image=self.default_image,
            db_secret_name=self.default_db_secret_name,
            db_secret_key=self.default_db_secret_key,
            pushgateway_url=self.pushgateway_url,
            allowed_images=_listed(self.allowed_images),
            allowed_db_secrets=_listed(self.allowed_db_secrets),
        )


def _listed(text: str) -> tuple[str, ...]:
    return tuple(entry.strip() for entry in text.split(",") if entry.strip())
