"""The chart's `api:` block, rendered by Helm's engine: a Deployment running `credit-jobs api` in cluster mode with
probes and the credentials Secret, a Service, its own ServiceAccount, RBAC of exactly get/patch on CreditJobs in each
watched namespace (a ClusterRole in cluster-wide mode), every object valid for Kubernetes 1.29-1.35."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest
from chart_support import KUBE_VERSIONS, NAMESPACE, of_kind, only

API = {"api": {"enabled": True, "credentialsSecret": "api-creds", "bearerTokens": True}}
GET_PATCH_CREDITJOBS = [{"apiGroups": ["credits.dev"], "resources": ["creditjobs"], "verbs": ["get", "patch"]}]


def _api_objects(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "api"]


@pytest.mark.parametrize(
    "watch",
    [
        {},
        {"operator": {"watch": {"namespaces": ["billing", "billing-eu"]}}},
        {"operator": {"watch": {"clusterWide": True}}},
    ],
)
def test_api_objects_are_valid_and_rbac_is_get_patch_on_creditjobs(render, watch: dict[str, Any]) -> None:
    objects = _api_objects(render({**API, **watch}))
    for obj in objects:
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(json.loads(json.dumps(obj)), version, strict=True)
    account = only(objects, "ServiceAccount")["metadata"]["name"]
    settings = watch.get("operator", {}).get("watch", {})
    if settings.get("clusterWide"):
        roles = of_kind(objects, "ClusterRole")
        assert len(roles) == 1
        assert not of_kind(objects, "Role")
    else:
        roles = of_kind(objects, "Role")
        assert {r["metadata"]["namespace"] for r in roles} == set(settings.get("namespaces") or [NAMESPACE])
        assert not of_kind(objects, "ClusterRole")
    for role in roles:
        assert role["rules"] == GET_PATCH_CREDITJOBS
    bindings = of_kind(objects, "RoleBinding") + of_kind(objects, "ClusterRoleBinding")
    assert {s["name"] for b in bindings for s in b["subjects"]} == {account}


def test_api_deployment_runs_cluster_mode_with_probes_and_the_credentials_secret(render) -> None:
    objects = _api_objects(render(API))
    deployment = only(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert container["args"] == ["api"]
    assert env["CREDITJOBS_API_MODE"]["value"] == "cluster"
    assert env["CREDITJOBS_API_DEFAULT_NAMESPACE"]["value"] == NAMESPACE
    assert env["CREDITJOBS_API_STATEMENT_TIMEOUT_SECONDS"]["value"] == "30"
    assert env["CREDITJOBS_API_LOCK_TIMEOUT_SECONDS"]["value"] == "5"
    assert env["CRON_JOBS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "api-creds", "key": "password"}
    assert env["CREDITJOBS_API_TOKENS_FILE"]["value"] == "/etc/credit-jobs/api/tokens"
    assert {"secretName": "api-creds", "items": [{"key": "tokens", "path": "tokens"}]} in [
        v.get("secret") for v in pod["volumes"]
    ]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["serviceAccountName"] == only(objects, "ServiceAccount")["metadata"]["name"]
    service = only(objects, "Service")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_api_is_off_by_default(render) -> None:
    assert not _api_objects(render({}))


@pytest.mark.parametrize(
    ("values", "body", "proxies"),
    [
        ({}, "65536", ""),
        ({"maxBodyBytes": 4096, "trustedProxies": ["10.0.0.0/8", "127.0.0.1"]}, "4096", "10.0.0.0/8,127.0.0.1"),
    ],
)
def test_api_body_limit_and_trusted_proxies_reach_the_settings_the_api_reads(
    render, monkeypatch: pytest.MonkeyPatch, values: dict[str, Any], body: str, proxies: str
) -> None:
    """What the chart renders is what `credit-jobs api` accepts: the rendered values, loaded by its own settings."""
    from credit_jobs.entrypoints.api.settings import ApiSettings

    container = only(_api_objects(render({"api": {**API["api"], **values}})), "Deployment")["spec"]["template"]
    env = {e["name"]: e.get("value") for e in container["spec"]["containers"][0]["env"]}
    assert env["CREDITJOBS_API_MAX_BODY_BYTES"] == body
    assert env["CREDITJOBS_API_TRUSTED_PROXIES"] == proxies
    monkeypatch.setenv("CREDITJOBS_API_MAX_BODY_BYTES", body)
    monkeypatch.setenv("CREDITJOBS_API_TRUSTED_PROXIES", proxies)
    settings = ApiSettings()
    assert settings.creditjobs_api_max_body_bytes == int(body)
    assert settings.creditjobs_api_trusted_proxies == proxies


def test_the_production_values_turn_the_api_docs_off(render) -> None:
    import yaml
    from chart_support import CHART

    prod = yaml.safe_load((CHART / "values-prod.yaml").read_text())
    values = {**prod, "api": {**prod["api"], **API["api"]}}  # production, with the API enabled
    container = only(_api_objects(render(values)), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CREDITJOBS_API_DOCS"] == "false"
    default = only(_api_objects(render(API)), "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {e["name"]: e.get("value") for e in default}["CREDITJOBS_API_DOCS"] == "true"


@pytest.mark.parametrize(("values_file", "workers"), [("values.yaml", "1"), ("values-prod.yaml", "2")])
def test_api_workers_reach_the_settings_the_api_reads(
    render, monkeypatch: pytest.MonkeyPatch, values_file: str, workers: str
) -> None:
    """The rendered worker count is one `credit-jobs api` accepts in the mode the chart runs it (cluster)."""
    import yaml
    from chart_support import CHART

    from credit_jobs.entrypoints.api.settings import load_api_config

    chosen = yaml.safe_load((CHART / values_file).read_text())
    values = {**chosen, "api": {**chosen["api"], **API["api"]}}
    container = only(_api_objects(render(values)), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CREDITJOBS_API_WORKERS"] == workers
    assert env["CREDITJOBS_API_MODE"] == "cluster"
    for name in ("CREDITJOBS_API_WORKERS", "CREDITJOBS_API_MODE", "CREDITJOBS_API_RATE_LIMIT_GLOBAL"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.setenv("CREDITJOBS_API_TOKENS", "app:ledger:chart-token-0123456789abcdef")
    config = load_api_config()
    assert config.settings.creditjobs_api_workers == int(workers)
    assert config.rate_global.amount == -(-500 // int(workers))  # the replica's 500/second, shared out


@pytest.mark.parametrize(("replicas", "budgets"), [(1, 0), (2, 1)])
def test_api_replicas_beyond_one_get_a_disruption_budget(render, replicas: int, budgets: int) -> None:
    objects = _api_objects(render({"api": {**API["api"], "replicas": replicas}}))
    assert only(objects, "Deployment")["spec"]["replicas"] == replicas
    found = of_kind(objects, "PodDisruptionBudget")
    assert len(found) == budgets
    for budget in found:
        assert budget["spec"]["minAvailable"] == 1
        assert (
            budget["spec"]["selector"]["matchLabels"] == only(objects, "Deployment")["spec"]["selector"]["matchLabels"]
        )
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(json.loads(json.dumps(budget)), version, strict=True)


def test_metrics_are_served_on_their_own_port_which_the_service_and_servicemonitor_name(render, monkeypatch) -> None:
    from credit_jobs.entrypoints.api.settings import ApiSettings

    objects = _api_objects(render({**API, "metrics": {"serviceMonitor": {"enabled": True}}}))
    container = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "metrics": 9095}
    env = {e["name"]: e.get("value") for e in container["env"]}
    monkeypatch.setenv("CREDITJOBS_API_METRICS_PORT", env["CREDITJOBS_API_METRICS_PORT"])
    assert ApiSettings().creditjobs_api_metrics_port == ports["metrics"]  # what the process reads is what is exposed
    service_ports = {p["name"]: p["targetPort"] for p in only(objects, "Service")["spec"]["ports"]}
    assert service_ports == {"http": "http", "metrics": "metrics"}
    (endpoint,) = only(objects, "ServiceMonitor")["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")


def test_the_network_policy_lets_only_the_callers_reach_the_api_and_only_prometheus_its_metrics(render) -> None:
    import yaml
    from chart_support import CHART

    assert of_kind(_api_objects(render(API)), "NetworkPolicy") == []  # off by default
    prod = yaml.safe_load((CHART / "values-prod.yaml").read_text())
    objects = _api_objects(render({**prod, "api": {**prod["api"], **API["api"]}}))
    policy = only(objects, "NetworkPolicy")
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(json.loads(json.dumps(policy)), version, strict=True)
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == only(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    assert spec["policyTypes"] == ["Ingress"]
    rules = {rule["ports"][0]["port"]: rule["from"] for rule in spec["ingress"]}
    assert rules == {
        "http": prod["api"]["networkPolicy"]["allowedCallers"],
        "metrics": prod["api"]["networkPolicy"]["prometheus"],
    }
    # with no callers configured, nobody reaches the API port (the policy selects the pods and allows nothing there)
    none = _api_objects(render({"api": {**API["api"], "networkPolicy": {"enabled": True}}}))
    assert only(none, "NetworkPolicy")["spec"].get("ingress") in (None, [])


@pytest.mark.parametrize("replicas", [1, 2])
def test_operator_replicas_beyond_one_spread_over_nodes_and_keep_one_through_a_drain(render, replicas: int) -> None:
    objects = [
        o
        for o in render({"operator": {"replicas": replicas}})
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "operator"
    ]
    deployment = only(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    budgets = of_kind(objects, "PodDisruptionBudget")
    if replicas == 1:
        assert budgets == []
        assert "affinity" not in pod
        return
    (budget,) = budgets
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    for obj in (budget, deployment):
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(json.loads(json.dumps(obj)), version, strict=True)
