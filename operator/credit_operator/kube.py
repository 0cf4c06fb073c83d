"""The one Kubernetes API client of the operator and the `trigger` command: plain dicts in and out.

`connect()` is the single factory (in-cluster service account, else the kubeconfig — tests point it at kmock).
`KubeApi` wraps the `kubernetes` package's low-level ApiClient because its typed APIs (v30+) validate request
bodies as models and return models; the planners work on manifests as dicts, and merge patches must be sent as
`application/merge-patch+json` (lists replaced whole, which is what converging a CronJob needs).
Writes go to the API server; reads of CreditJobs, CronJobs and child Jobs come from `cache` (what the watches
delivered, see cache.py) once it is ready, so a pass costs no read request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import kubernetes

from credit_operator.cache import WorldCache
from credit_operator.creditjob import GROUP, LABEL_CREDITJOB, PLURAL, VERSION

MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    """An API call failed; `status` is the HTTP status (404 not found, 409 conflict, …)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def connect(pool_size: int | None = None) -> kubernetes.client.ApiClient:
    """An ApiClient from the in-cluster service account, else from the kubeconfig.

    `pool_size`: HTTP connections kept open, one per thread that may call at once (the client's default, 10,
    made 16 worker threads discard and reopen connections in bursts: "Connection pool is full").
    """
    configuration = kubernetes.client.Configuration()
    if pool_size is not None:
        configuration.connection_pool_maxsize = pool_size
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return kubernetes.client.ApiClient(configuration)


def _cj_path(namespace: str, name: str = "") -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace)}/{PLURAL}"
    return f"{base}/{quote(name)}" if name else base


def _batch_path(kind: str, namespace: str, name: str = "") -> str:
    base = f"/apis/batch/v1/namespaces/{quote(namespace)}/{kind}"
    return f"{base}/{quote(name)}" if name else base


class KubeApi:
    """Blocking calls (the Kopf handlers that use it are sync and run in Kopf's thread pool)."""

    def __init__(self, client: kubernetes.client.ApiClient, timeout: float = 30.0) -> None:
        self.client = client
        self.timeout = timeout
        # resourceVersion of the last CronJob / Job state this client wrote, by (kind, namespace, name): a watch
        # event carrying exactly that version only echoes our own write, and needs no reconcile pass.
        self._written: dict[tuple[str, str, str], str] = {}
        self._written_lock = threading.Lock()
        self.cache = WorldCache()

    def _remember(self, kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        self.cache.store(kind, obj)
        meta = obj.get("metadata") or {}
        if meta.get("resourceVersion"):
            with self._written_lock:
                self._written[(kind, meta.get("namespace", ""), meta.get("name", ""))] = meta["resourceVersion"]
        return dict(obj)

    def is_own_write(self, kind: str, namespace: str, name: str, resource_version: str | None) -> bool:
        """Whether this object state is the one our last create/patch produced."""
        with self._written_lock:
            return resource_version is not None and self._written.get((kind, namespace, name)) == resource_version

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        _, url, headers, serialized, _ = self.client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()) or None,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.client.call_api(
            method, url, header_params=headers, body=serialized, _request_timeout=self.timeout
        )
        data = response.read()  # type: ignore[no-untyped-call]
        if response.status >= 400:
            try:
                message = json.loads(data).get("message", "")
            except (ValueError, AttributeError):
                message = data.decode(errors="replace")[:200] if data else ""
            raise ApiError(response.status, message or response.reason or "")
        if not data:
            return {}
        parsed = json.loads(data)
        return parsed if isinstance(parsed, dict) else {}

    # CreditJobs
    def get_creditjob(self, namespace: str, name: str) -> dict[str, Any]:
        return self.request("GET", _cj_path(namespace, name))

    def list_creditjobs(self, namespace: str | None) -> list[dict[str, Any]]:
        return self.relist("creditjobs", namespace)[0]

    def relist(self, kind: str, namespace: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """One LIST of `kind` (creditjobs, cronjobs, or the child jobs) in a namespace or all: (items, the LIST's
        resourceVersion) — what the resync replaces the cache's view of that kind with."""
        query: dict[str, str] | None = None
        if kind == "creditjobs":
            path = _cj_path(namespace) if namespace else f"/apis/{GROUP}/{VERSION}/{PLURAL}"
        elif kind == "cronjobs":
            path = _batch_path("cronjobs", namespace) if namespace else "/apis/batch/v1/cronjobs"
        else:
            path = _batch_path("jobs", namespace) if namespace else "/apis/batch/v1/jobs"
            query = {"labelSelector": LABEL_CREDITJOB}
        listing = self.request("GET", path, query=query)
        version = (listing.get("metadata") or {}).get("resourceVersion")
        return list(listing.get("items") or []), str(version) if version else None

    def patch_creditjob(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        patched = self.request("PATCH", _cj_path(namespace, name), patch, content_type=MERGE_PATCH)
        self.cache.store("creditjobs", patched)
        return patched

    def patch_creditjob_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        patched = self.request(
            "PATCH", _cj_path(namespace, name) + "/status", {"status": status}, content_type=MERGE_PATCH
        )
        self.cache.store("creditjobs", patched)
        return patched

    # Events
    def post_event(self, involved: Mapping[str, Any], kind: str, reason: str, message: str, now: str) -> None:
        """A core/v1 Event about a CreditJob (what `kubectl describe crj` shows)."""
        meta = involved.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'creditjob')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", f"{GROUP}/{VERSION}"),
                "kind": involved.get("kind", "CreditJob"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "credit-jobs-operator"},
            "reportingComponent": "credits.dev/credit-jobs-operator",
            "reportingInstance": "credit-jobs-operator",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self.request("POST", f"/api/v1/namespaces/{quote(namespace)}/events", event)

    # CronJobs
    def get_cronjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", _batch_path("cronjobs", namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def create_cronjob(self, cronjob: Mapping[str, Any]) -> dict[str, Any]:
        created = self.request("POST", _batch_path("cronjobs", cronjob["metadata"]["namespace"]), cronjob)
        return self._remember("cronjobs", created)

    def patch_cronjob(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        patched = self.request("PATCH", _batch_path("cronjobs", namespace, name), patch, content_type=MERGE_PATCH)
        return self._remember("cronjobs", patched)

    # Jobs
    def list_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        found = self.request("GET", _batch_path("jobs", namespace), query={"labelSelector": label_selector})
        return list(found.get("items") or [])

    def create_job(self, job: Mapping[str, Any]) -> dict[str, Any]:
        return self._remember("jobs", self.request("POST", _batch_path("jobs", job["metadata"]["namespace"]), job))

    def patch_job(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        patched = self.request("PATCH", _batch_path("jobs", namespace, name), patch, content_type=MERGE_PATCH)
        return self._remember("jobs", patched)

    # Reads for a reconcile pass: from the watch cache once it is ready (no request), else from the API server
    def read_creditjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The CreditJob, or None when it does not exist (a cache miss asks the API server)."""
        cached = self.cache.get("creditjobs", namespace, name)
        if cached is not None:
            return cached
        try:
            body = self.get_creditjob(namespace, name)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        self.cache.store("creditjobs", body)
        return body

    def read_cronjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.cache.ready.is_set():
            return self.cache.get("cronjobs", namespace, name)
        return self.get_cronjob(namespace, name)

    def read_child_jobs(self, namespace: str, creditjob: str) -> list[dict[str, Any]]:
        """The Jobs labelled with this CreditJob's name."""
        if self.cache.ready.is_set():
            return self.cache.jobs_of(namespace, creditjob)
        return self.list_jobs(namespace, f"{LABEL_CREDITJOB}={creditjob}")

    def list_cronjobs(self, namespace: str | None) -> list[dict[str, Any]]:
        return self.relist("cronjobs", namespace)[0]

    def list_child_jobs(self, namespace: str | None) -> list[dict[str, Any]]:
        """Every Job carrying the CreditJob label, in one namespace or all of them."""
        return self.relist("jobs", namespace)[0]

    # Leases (leader election, leader_election.py)
    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", _lease_path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None  # no such Lease (or no Lease API, or no namespace: the create then says which)
            raise

    def create_lease(self, namespace: str, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace},
            "spec": dict(spec),
        }
        return self.request("POST", _lease_path(namespace), body)

    def patch_lease(
        self, namespace: str, name: str, spec: Mapping[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        """A merge patch; with `resource_version` the API server applies it only to that version (else 409)."""
        patch: dict[str, Any] = {"spec": dict(spec)}
        if resource_version:
            patch["metadata"] = {"resourceVersion": resource_version}
        return self.request("PATCH", _lease_path(namespace, name), patch, content_type=MERGE_PATCH)


def _lease_path(namespace: str, name: str = "") -> str:
    base = f"/apis/coordination.k8s.io/v1/namespaces/{quote(namespace)}/leases"
    return f"{base}/{quote(name)}" if name else base
