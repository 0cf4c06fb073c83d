"""Fixtures for running the real operator (Kopf + credit_operator.handlers) against kmock's Kubernetes emulator.

kmock only plays the API server: it stores objects and streams watch events. It runs no controllers — no CronJob
controller starts Jobs, no kubelet runs pods, no garbage collector follows owner references — so tests simulate
those by creating and patching Jobs themselves (see `simulate_scheduled_job` and `finish_job`). The emulator is
subclassed only to stamp the metadata a real API server assigns (uid, resourceVersion, generation,
creationTimestamp), which Kopf and owner references depend on.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import kubernetes
import pytest
from kmock import KubernetesEmulator, KubernetesError, ResourceInfo

from credit_operator import handlers

CJ = "credits.dev/v1alpha1/creditjobs"
_rv = itertools.count(1)


class ApiServerEmulator(KubernetesEmulator):
    """kmock plus the metadata a real API server assigns on create and bumps on every write."""

    # Plurals the operator's identity may not touch (403), as with RBAC missing: tests add and remove them.
    forbidden: frozenset[str] | set[str] = frozenset()

    async def _handle(self, request: Any) -> Any:
        if request.resource is not None and request.resource.plural in self.forbidden:
            verb = request.action.name.lower() if request.action is not None else "access"
            raise KubernetesError(
                status=403,
                reason="Forbidden",
                message=f'{request.resource.plural}.{request.resource.group} is forbidden: User "test" cannot '
                f"{verb} resource {request.resource.plural!r} in namespace {request.namespace!r}",
            )
        data = request.data
        if request.resource is not None and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if request.action is not None and request.action.name == "CREATE":
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("generation", 1)
                meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
                meta["resourceVersion"] = str(next(_rv))
            elif request.action is not None and request.action.name == "UPDATE":
                key = (request.resource, request.namespace, request.name)
                if request.resource.plural == "leases" and key in self.objects and meta.get("resourceVersion"):
                    # A merge patch naming a resourceVersion is a conditional update on a real API server (409
                    # when the object moved on); leader election relies on it, kmock does not check it.
                    current = self.objects[key].get("metadata", {}).get("resourceVersion")
                    if current != meta["resourceVersion"]:
                        raise KubernetesError(status=409, reason="Conflict", message="the object has been modified")
                meta["resourceVersion"] = str(next(_rv))
                is_status = str(request.url.path).endswith("/status")
                if "spec" in data and not is_status and key in self.objects:
                    current = self.objects[key]
                    meta["generation"] = int(current.get("metadata", {}).get("generation", 1)) + 1
        return await super()._handle(request)


@pytest.fixture
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    return {**kmock_options, "cls": ApiServerEmulator}


@pytest.fixture
def kube(kmock: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    kmock.resources.load_bundled()  # discovery: Kopf needs v1/namespaces; we need batch/v1 and v1/events
    kmock.resources[CJ] = ResourceInfo(
        kind="CreditJob",
        namespaced=True,
        subresources={"status"},
        verbs={"list", "watch", "get", "create", "patch", "delete"},
    )
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "k",
                "clusters": [{"name": "k", "cluster": {"server": str(kmock.url).rstrip("/")}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "k", "context": {"cluster": "k", "user": "u"}}],
            }
        )
    )
    # The kubernetes client read $KUBECONFIG at import time; point its default at the emulator instead.
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(cfg))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("CREDITJOBS_DEFAULT_IMAGE", "registry.test/credit-jobs:1.2.3")
    monkeypatch.setenv("CREDITJOBS_RESYNC_SECONDS", "0.5")
    monkeypatch.setenv("PUSHGATEWAY_URL", "http://pushgateway.test:9091")
    return kmock


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[datetime], None]:
    """Pin the operator's clock (handlers.clock) — the test's way to fast-forward through downtime."""

    def set_now(moment: datetime) -> None:
        monkeypatch.setattr(handlers, "clock", lambda: moment)

    return set_now
