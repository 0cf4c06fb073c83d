"""The chart renders, lints and validates per environment and across a `--set` matrix, and its objects keep policy.

Rendering is Helm's engine (helm-python-sdk); manifests are validated by kubernetes-validate against the
Kubernetes OpenAPI schemas of 1.29-1.35; CreditJobs from values against the CRD's own openAPIV3Schema.
"""

from __future__ import annotations

import functools
import itertools
import json
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml
from chart_support import (
    CHART,
    ENVIRONMENTS,
    KUBE_VERSIONS,
    NAMESPACE,
    Manifest,
    env_values,
    of_kind,
    only,
    package_version,
)

from tests.support.crd_admission import admission_errors

# Kinds kubernetes-validate cannot know (custom resources); each is checked another way below.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "CreditJob"}


def _set(*expressions: str) -> dict[str, Any]:
    """Values as `helm --set a=b --set c=d` would build them."""
    values: dict[str, Any] = {}
    for expression in expressions:
        values = _merge(values, helm_python.parse_set_string(expression))
    return values


def _merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    merged = dict(left)
    for key, value in right.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


WATCH_MODES = {
    "namespaced-release": (),
    "namespaced-list": ("operator.watch.namespaces={billing,billing-eu}",),
    "cluster-wide": ("operator.watch.clusterWide=true",),
}
MONITORING = {
    "monitoring-off": (),
    "monitoring-on": (
        "metrics.serviceMonitor.enabled=true",
        "prometheusRule.enabled=true",
        "dashboards.enabled=true",
    ),
}
PUSHGATEWAY = {
    "pushgateway-off": (),
    "pushgateway-on": ("pushgateway.url=http://pushgateway.monitoring:9091",),
}
SET_MATRIX = {
    f"{w}/{m}/{p}": _set(*WATCH_MODES[w], *MONITORING[m], *PUSHGATEWAY[p])
    for w, m, p in itertools.product(WATCH_MODES, MONITORING, PUSHGATEWAY)
}
ALL_CASES = {**{f"values-{env}": env_values(env) for env in ENVIRONMENTS}, **SET_MATRIX}


@functools.cache
def _validate(serialized: str, version: str) -> None:
    """kubernetes-validate one object (cached: the matrix renders many identical objects)."""
    kubernetes_validate.validate(json.loads(serialized), version, strict=True)


def _pod_specs(objects: list[Manifest]) -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for obj in objects:
        if obj["kind"] in {"Deployment", "Job", "StatefulSet", "DaemonSet"}:
            specs.append((f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"]))
        elif obj["kind"] == "CronJob":
            specs.append((f"CronJob/{obj['metadata']['name']}", obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return specs


# --- rendering, lint, Kubernetes schemas ---------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
@pytest.mark.parametrize("kube_version", ["v1.29.0", "v1.35.0"])
def test_each_environment_lints_clean_in_strict_mode(env: str, kube_version: str) -> None:
    report = helm_python.lint(CHART, env_values(env), strict=True, kube_version=kube_version, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems, problems
    assert not report["errors"], report["errors"]
    assert report["total_charts_linted"] == 1


def test_lint_reports_an_invalid_value_so_the_lint_check_is_live() -> None:
    report = helm_python.lint(CHART, {"operator": {"replicas": 0}}, strict=True)
    assert report["errors"]


@pytest.mark.parametrize("case", ALL_CASES)
def test_every_rendered_manifest_is_valid_for_kubernetes_1_29_to_1_35(render, case: str) -> None:
    objects = render(ALL_CASES[case])
    checked = 0
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        serialized = json.dumps(obj, sort_keys=True)
        for version in KUBE_VERSIONS:
            _validate(serialized, version)
        checked += 1
    assert checked >= 6  # Deployment, ServiceAccount, Role, RoleBinding, Service, migrations Job at least


def test_kubernetes_validate_rejects_a_broken_manifest_so_the_check_is_live(render) -> None:
    deployment = only(render({}), "Deployment")
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[0], strict=True)


def test_a_template_error_names_the_problem(render) -> None:
    with pytest.raises(helm_python.HelmError, match="existingSecret"):
        render({"database": {"existingSecret": None}})


# --- gating by values -----------------------------------------------------------------------------------------


def test_defaults_create_no_prometheus_operator_objects_and_no_dashboard(render) -> None:
    objects = render({})
    assert not of_kind(objects, "ServiceMonitor")
    assert not of_kind(objects, "PrometheusRule")
    assert not [cm for cm in of_kind(objects, "ConfigMap") if "grafana_dashboard" in cm["metadata"]["labels"]]
    assert not of_kind(objects, "CreditJob")


@pytest.mark.parametrize("case", SET_MATRIX)
def test_monitoring_objects_follow_their_switches(render, case: str) -> None:
    values = SET_MATRIX[case]
    objects = render(values)
    on = "monitoring-on" in case
    assert bool(of_kind(objects, "ServiceMonitor")) is on
    assert bool(of_kind(objects, "PrometheusRule")) is on
    dashboards = [
        cm for cm in of_kind(objects, "ConfigMap") if cm["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    assert len(dashboards) == (1 if on else 0)


def test_dashboard_configmap_carries_the_chart_dashboard_for_the_grafana_sidecar(render) -> None:
    configmap = only(render(_set("dashboards.enabled=true")), "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "dashboards" / "credit-jobs.json").read_text())
    assert json.loads(configmap["data"]["credit-jobs.json"]) == shipped


def test_service_monitor_selects_the_metrics_service_which_selects_the_operator_pods(render) -> None:
    objects = render(_set(*MONITORING["monitoring-on"]))
    monitor, service, deployment = (only(objects, k) for k in ("ServiceMonitor", "Service", "Deployment"))
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"] == 9090


# --- the operator Deployment's contract -------------------------------------------------------------------------


def _env(deployment: Manifest) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def test_the_operators_allowlists_reach_its_settings(render, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rendered env, loaded by the operator's own settings: the allowlists it holds CreditJobs to."""
    from credit_operator.settings import OperatorSettings

    values = {
        "operator": {"allowedImages": ["registry.acme.internal/billing/credit-jobs"], "allowedDatabaseSecrets": []}
    }
    env = _env(only(render(values), "Deployment"))
    assert env["CREDITJOBS_ALLOWED_IMAGES"] == "registry.acme.internal/billing/credit-jobs"
    assert env["CREDITJOBS_ALLOWED_DB_SECRETS"] == ""
    for name in ("CREDITJOBS_ALLOWED_IMAGES", "CREDITJOBS_ALLOWED_DB_SECRETS", "CREDITJOBS_DEFAULT_IMAGE"):
        monkeypatch.setenv(name, env[name])
    defaults = OperatorSettings().manifest_defaults()
    assert defaults.allowed_images == ("registry.acme.internal/billing/credit-jobs",)
    assert defaults.allowed_db_secrets == ()


@pytest.mark.parametrize("case", SET_MATRIX)
def test_operator_deployment_gets_the_settings_of_the_container_contract(render, case: str) -> None:
    objects = render(SET_MATRIX[case])
    deployment = only(objects, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = _env(deployment)
    assert container["args"] == ["operator"]
    assert env["CREDITJOBS_DEFAULT_IMAGE"] == container["image"]
    assert env["CREDITJOBS_DEFAULT_DB_SECRET_NAME"] == "credit-jobs-db"
    assert env["CREDITJOBS_DEFAULT_DB_SECRET_KEY"] == "url"
    assert env["LOG_FORMAT"] == "json"
    assert env["CREDITJOBS_METRICS_PORT"] == "9090"
    assert env["CREDITJOBS_HEALTH_PORT"] == "8080"
    assert env["CREDITJOBS_LEASE_NAME"] == deployment["metadata"]["name"]
    assert env["CREDITJOBS_LEASE_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["CREDITJOBS_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    expected_namespaces = {
        "namespaced-release": "billing",
        "namespaced-list": "billing,billing-eu",
        "cluster-wide": "",
    }[case.split("/")[0]]
    assert env["CREDITJOBS_NAMESPACES"] == expected_namespaces
    if "pushgateway-on" in case:
        assert env["PUSHGATEWAY_URL"] == "http://pushgateway.monitoring:9091"
    else:
        assert "PUSHGATEWAY_URL" not in env
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert {p["name"]: p["containerPort"] for p in container["ports"]}[probe["port"]] == 8080


def test_image_defaults_to_the_package_version(render) -> None:
    chart_meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart_meta["appVersion"] == package_version()
    deployment = only(render({}), "Deployment")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith(f":{package_version()}")


def test_an_image_digest_wins_over_the_tag(render) -> None:
    digest = "sha256:" + "a" * 64
    deployment = only(render({"image": {"digest": digest}}), "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith(f"@{digest}")


def test_selectors_never_carry_the_chart_version(render) -> None:
    objects = render(_set(*MONITORING["monitoring-on"]))
    deployment = only(objects, "Deployment")
    selectors = [
        deployment["spec"]["selector"]["matchLabels"],
        only(objects, "Service")["spec"]["selector"],
        only(objects, "ServiceMonitor")["spec"]["selector"]["matchLabels"],
    ]
    for selector in selectors:
        assert "helm.sh/chart" not in selector
        assert "app.kubernetes.io/version" not in selector
    assert deployment["metadata"]["labels"]["helm.sh/chart"] == "credit-jobs-0.1.0"


def test_long_release_names_are_cut_to_63_characters(chart) -> None:
    rendered = chart.render({}, name="r" * 53, namespace=NAMESPACE)
    for path, text in rendered.items():
        if path.endswith(".yaml"):
            for obj in yaml.safe_load_all(text):
                if obj:
                    assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]


# --- migrations hook --------------------------------------------------------------------------------------------


def test_migrations_run_db_upgrade_as_a_pre_install_and_pre_upgrade_hook(render) -> None:
    job = only(render({"database": {"existingSecret": "prod-db", "secretKey": "dsn"}}), "Job")
    hooks = set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
    assert hooks == {"pre-install", "pre-upgrade"}
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["db", "upgrade"]  # the image entrypoint is `credit-jobs`
    database_url = next(e for e in container["env"] if e["name"] == "DATABASE_URL")
    assert database_url["valueFrom"]["secretKeyRef"] == {"name": "prod-db", "key": "dsn"}
    assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_migrations_can_be_switched_off(render) -> None:
    assert not of_kind(render({"migrations": {"enabled": False}}), "Job")


# --- policy over every rendered object ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", ALL_CASES)
def test_every_pod_is_non_root_read_only_unprivileged_and_resource_bounded(render, case: str) -> None:
    specs = _pod_specs(render(ALL_CASES[case]))
    assert {name.split("/")[0] for name, _ in specs} >= {"Deployment", "Job"}
    for name, spec in specs:
        pod_security = spec.get("securityContext", {})
        assert pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        for container in spec.get("initContainers", []) + spec["containers"]:
            security = {**pod_security, **container.get("securityContext", {})}
            assert security.get("runAsNonRoot") is True, name
            assert security.get("runAsUser", 0) > 0, name
            assert security.get("readOnlyRootFilesystem") is True, name
            assert security.get("allowPrivilegeEscalation") is False, name
            assert security.get("privileged", False) is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert not security["capabilities"].get("add"), name
            image = container["image"]
            assert not image.endswith(":latest"), name
            assert ":" in image.rsplit("/", 1)[-1] or "@sha256:" in image, f"{name}: untagged image {image}"
            resources = container["resources"]
            assert resources["requests"]["cpu"], name
            assert resources["requests"]["memory"], name
            assert resources["limits"]["memory"], name


@pytest.mark.parametrize("case", ALL_CASES)
def test_rbac_has_no_wildcards(render, case: str) -> None:
    roles = [o for o in render(ALL_CASES[case]) if o["kind"] in {"Role", "ClusterRole"}]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for field in ("verbs", "resources", "apiGroups"):
                assert "*" not in rule.get(field, []), (role["metadata"]["name"], rule)
            assert "nonResourceURLs" not in rule


def _grants(role: Manifest) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _expand(groups: dict[tuple[str, str], tuple[str, ...]]) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for (group, resource), verbs in groups.items() for verb in verbs}


# Exactly what the operator needs (least privilege is equality, not "at least").
APPLICATION = _expand(
    {
        ("credits.dev", "creditjobs"): ("get", "list", "watch", "patch"),
        ("credits.dev", "creditjobs/status"): ("get", "patch"),
        ("batch", "cronjobs"): ("create", "get", "list", "watch", "patch", "delete"),
        ("batch", "jobs"): ("create", "get", "list", "watch", "patch", "delete"),
        ("", "events"): ("create",),
        # blockOwnerDeletion on the owner references of CronJobs (owner: CreditJob) and Jobs (owner: CronJob)
        ("credits.dev", "creditjobs/finalizers"): ("update",),
        ("batch", "cronjobs/finalizers"): ("update",),
    }
)
CRD_DISCOVERY = _expand({("apiextensions.k8s.io", "customresourcedefinitions"): ("list", "watch")})


@pytest.mark.parametrize("namespaces", [[], ["billing", "billing-eu", "tenant-a"]])
def test_namespaced_mode_grants_a_role_per_watched_namespace_and_nothing_cluster_wide(
    render, namespaces: list[str]
) -> None:
    objects = render({"operator": {"watch": {"clusterWide": False, "namespaces": namespaces}}})
    watched = namespaces or [NAMESPACE]
    roles = {r["metadata"]["namespace"]: r for r in of_kind(objects, "Role") if not _is_lease_rbac(r)}
    bindings = {b["metadata"]["namespace"]: b for b in of_kind(objects, "RoleBinding") if not _is_lease_rbac(b)}
    assert set(roles) == set(bindings) == set(watched)
    account = only(objects, "ServiceAccount")["metadata"]
    for namespace in watched:
        assert _grants(roles[namespace]) == APPLICATION
        binding = bindings[namespace]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": roles[namespace]["metadata"]["name"],
        }
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["name"], "namespace": NAMESPACE}]
    operator_cluster_roles = [r for r in of_kind(objects, "ClusterRole") if not _is_trigger_role(r)]
    assert not operator_cluster_roles, "namespaced mode needs nothing cluster-scoped"
    assert not of_kind(objects, "ClusterRoleBinding")
    assert _operator_env(objects)["CREDITJOBS_WATCH_CRDS"] == "false"
    _assert_lease_rbac(objects)


def test_namespaced_mode_with_discovery_may_only_list_and_watch_crds(render) -> None:
    objects = render({"rbac": {"discovery": True}})
    (cluster_role,) = [r for r in of_kind(objects, "ClusterRole") if not _is_trigger_role(r)]
    assert _grants(cluster_role) == CRD_DISCOVERY
    assert only(objects, "ClusterRoleBinding")["roleRef"]["name"] == cluster_role["metadata"]["name"]
    assert _operator_env(objects)["CREDITJOBS_WATCH_CRDS"] == "true"


@pytest.mark.parametrize("discovery", [False, True])
def test_cluster_wide_mode_grants_one_cluster_role_and_never_namespaces(render, discovery: bool) -> None:
    objects = render({**_set(*WATCH_MODES["cluster-wide"]), "rbac": {"discovery": discovery}})
    assert not [r for r in of_kind(objects, "Role") if not _is_lease_rbac(r)]
    assert not [b for b in of_kind(objects, "RoleBinding") if not _is_lease_rbac(b)]
    (cluster_role,) = [r for r in of_kind(objects, "ClusterRole") if not _is_trigger_role(r)]
    assert _grants(cluster_role) == APPLICATION | (CRD_DISCOVERY if discovery else set())
    binding = only(objects, "ClusterRoleBinding")
    assert binding["subjects"][0]["namespace"] == NAMESPACE
    _assert_lease_rbac(objects)


def _is_trigger_role(obj: Manifest) -> bool:
    return str(obj["metadata"]["name"]).endswith("-trigger")


def _operator_env(objects: list[Manifest]) -> dict[str, str]:
    (deployment,) = [d for d in of_kind(objects, "Deployment") if "operator" in d["metadata"]["name"]]
    return {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def _is_lease_rbac(obj: Manifest) -> bool:
    return str(obj["metadata"]["name"]).endswith("-leader-election")


def _assert_lease_rbac(objects: list[Manifest]) -> None:
    """Leader election: create Leases, get/patch the operator's own, in the release namespace (where the
    Deployment's CREDITJOBS_LEASE_NAMESPACE points) — and nothing else."""
    (role,) = [r for r in of_kind(objects, "Role") if _is_lease_rbac(r)]
    (binding,) = [b for b in of_kind(objects, "RoleBinding") if _is_lease_rbac(b)]
    deployment = only(objects, "Deployment")
    lease_name = _env(deployment)["CREDITJOBS_LEASE_NAME"]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [lease_name],
            "verbs": ["get", "patch"],
        },
    ]
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]


def test_rbac_can_be_left_to_the_cluster_admin(render) -> None:
    objects = render({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "billing-operator"}})
    assert not [o for o in objects if o["kind"] in {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}]
    assert not of_kind(objects, "ServiceAccount")
    assert only(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "billing-operator"


# --- CRDs ---------------------------------------------------------------------------------------------------------


def _crds(chart: helm_python.Chart) -> dict[str, Manifest]:
    found = {}
    for entry in chart.crds:
        for doc in yaml.safe_load_all(entry["data"]):
            if doc:
                found[doc["metadata"]["name"]] = doc
    return found


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_every_crd_is_a_valid_apiextensions_v1_object(chart, version: str) -> None:
    crds = _crds(chart)
    # Kopf's peering CRDs are gone: the operator elects its leader on a Lease.
    assert set(crds) == {"creditjobs.credits.dev"}
    for crd in crds.values():
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
        kubernetes_validate.validate(crd, version, strict=True)


def _creditjob_crd(chart: helm_python.Chart) -> tuple[dict[str, Any], Manifest]:
    """(the served storage version's openAPIV3Schema, the CRD)."""
    crd = _crds(chart)["creditjobs.credits.dev"]
    version = next(v for v in crd["spec"]["versions"] if v["served"] and v["storage"])
    return version["schema"]["openAPIV3Schema"], crd


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_creditjobs_from_values_are_admitted_by_the_crd_schema_and_its_cel_rules(chart, render, env: str) -> None:
    schema, crd = _creditjob_crd(chart)
    creditjobs = of_kind(render(env_values(env)), "CreditJob")
    assert creditjobs, f"values-{env}.yaml creates no CreditJob"
    served = {f"{crd['spec']['group']}/{v['name']}" for v in crd["spec"]["versions"] if v["served"]}
    for creditjob in creditjobs:
        assert creditjob["apiVersion"] in served
        assert admission_errors(schema, creditjob) == []
        assert creditjob["spec"]["resources"]  # jobDefaults.resources filled in


@pytest.mark.parametrize(
    "spec",
    [
        {"usecase": "print-money", "schedule": "0 0 1 * *"},  # enum
        {"usecase": "distribute-credits", "schedule": "every month"},  # CEL: five-field cron
        {"usecase": "distribute-credits", "schedule": "0 0 1 * *", "parallelism": 100},  # CEL: 1..64 shards
    ],
)
def test_a_bad_creditjob_from_values_is_refused_by_the_crd(chart, render, spec: dict[str, Any]) -> None:
    schema, _ = _creditjob_crd(chart)
    creditjob = only(render({"creditJobs": [{"name": "oops", "spec": spec}]}), "CreditJob")
    assert admission_errors(schema, creditjob)


def test_creditjob_resources_given_in_values_win_over_job_defaults(render) -> None:
    resources = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    values = {
        "creditJobs": [
            {"name": "big", "spec": {"usecase": "distribute-credits", "schedule": "0 0 1 * *", "resources": resources}}
        ]
    }
    assert only(render(values), "CreditJob")["spec"]["resources"] == resources
