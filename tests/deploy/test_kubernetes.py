"""deploy/k8s: valid Kubernetes objects, and every container wired the way the code reads it.

Validation uses `kubernetes-validate`, which ships the Kubernetes OpenAPI-derived JSON
schemas of each release inside the package (strict mode: unknown fields are errors).
"""

from __future__ import annotations

import copy
import re
from typing import Any

import kubernetes_validate
import pytest

from tests.support.deploy import (
    K8S_DIR,
    SERVICE_COMMANDS,
    SETTINGS_OF_COMMAND,
    config_map_data,
    k8s_manifest_files,
    k8s_resources,
    load_yaml,
    parse_command_line,
    settings_with_env,
    unknown_settings,
    workloads,
)

PORT_FIELD = {"consent": "consent_port", "ingest": "ingest_port", "sink": "sink_port", "gateway": "gateway_port", "audit-writer": "audit_port"}
# Oldest release still commonly run, and the newest the package knows.
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def container_env(container: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The environment a container gets from the shared ConfigMap and its own `env`, and the
    names of downward-API helpers (such as POD_NAME) that other values refer to as $(NAME)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(config_map_data(source["configMapRef"]["name"]))
    helpers = []
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "fieldRef" in item.get("valueFrom", {}):
            helpers.append(item["name"])
        else:  # from a Secret: the value is not known here, only that it is set
            env[item["name"]] = "from-secret"
    for name in helpers:
        assert any(f"$({name})" in value for value in env.values()), f"{name} is set but never used"
    resolved = {name: re.sub(r"\$\((\w+)\)", lambda m: f"{m.group(1).lower()}-value", value) for name, value in env.items()}
    return resolved, helpers


def service_containers() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """command -> (container, resource) for the four services."""
    found = {}
    for _name, resource, spec in workloads():
        for container in spec["containers"]:
            command = parse_command_line(container["command"])
            if command in SERVICE_COMMANDS:
                found[command] = (container, resource)
    return found


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_a_valid_kubernetes_object(version: str) -> None:
    checked = []
    for path, resource in k8s_resources():
        kubernetes_validate.validate(resource, version, strict=True)
        checked.append(f"{path.name}:{resource['kind']}/{resource['metadata']['name']}")
    kinds = {item.split(":")[1].split("/")[0] for item in checked}
    assert {"Namespace", "ConfigMap", "Secret", "Job", "StatefulSet", "Deployment", "Service", "PersistentVolumeClaim"} <= kinds


def test_the_kubernetes_check_catches_a_misspelled_field() -> None:
    _path, deployment = next((p, r) for p, r in k8s_resources() if r["kind"] == "Deployment")
    broken = copy.deepcopy(deployment)
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")

    with pytest.raises(kubernetes_validate.ValidationError) as caught:
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)

    assert "readinesProbe" in caught.value.message


def test_kustomization_deploys_every_manifest_but_the_on_demand_ones() -> None:
    kustomization = load_yaml(K8S_DIR / "kustomization.yaml")

    listed = set(kustomization["resources"])

    assert listed == {p.name for p in k8s_manifest_files()} - {"keys-secret.example.yaml", "vacuum-cronjob.yaml", "reconcile-cronjob.yaml"}


def test_every_container_runs_a_real_consentry_command() -> None:
    commands = {name: [parse_command_line(c["command"]) for c in containers(spec)] for name, _r, spec in workloads()}

    assert commands == {
        "Job/consentry-topics": ["topics"],
        "CronJob/consentry-vacuum": ["vacuum"],
        "CronJob/consentry-reconcile": ["reconcile"],
        "StatefulSet/consent": ["topics", "consent"],
        "Deployment/ingest": ["ingest"],
        "Deployment/sink": ["sink"],
        "Deployment/audit-writer": ["audit-writer"],
        "Deployment/gateway": ["gateway"],
    }


def test_topics_are_replicated_on_a_production_cluster() -> None:
    for _name, _resource, spec in workloads():
        for container in containers(spec):
            if container["command"][1] == "topics":
                assert container["command"][2:] == ["--replication", "3"]


def test_every_environment_variable_is_a_setting_the_container_reads() -> None:
    for name, _resource, spec in workloads():
        for container in containers(spec):
            settings_class = SETTINGS_OF_COMMAND[parse_command_line(container["command"])]
            env, _helpers = container_env(container)
            assert unknown_settings(settings_class, env) == [], f"{name}/{container['name']}"


def test_consent_workers_advertise_their_own_stable_address() -> None:
    container, statefulset = service_containers()["consent"]
    env, helpers = container_env(container)
    settings = settings_with_env(SETTINGS_OF_COMMAND["consent"], env)

    assert helpers == ["POD_NAME"]
    assert settings.consent_host == "0.0.0.0"
    assert settings.canonical_url == f"http://pod_name-value.{statefulset['spec']['serviceName']}:{settings.consent_port}"
    headless = next(r for _p, r in k8s_resources() if r["kind"] == "Service" and r["metadata"]["name"] == statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize("command", SERVICE_COMMANDS)
def test_probes_ask_healthz_and_readyz_on_the_port_the_service_listens_on(command: str) -> None:
    container, _resource = service_containers()[command]
    env, _helpers = container_env(container)
    port = getattr(settings_with_env(SETTINGS_OF_COMMAND[command], env), PORT_FIELD[command])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    liveness, readiness = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]

    assert liveness["path"] == "/healthz" and readiness["path"] == "/readyz"
    assert ports[liveness["port"]] == ports[readiness["port"]] == port


@pytest.mark.parametrize("command", SERVICE_COMMANDS)
def test_the_service_and_the_scrape_annotations_point_at_the_same_port(command: str) -> None:
    container, resource = service_containers()[command]
    port = container["ports"][0]["containerPort"]
    labels = resource["spec"]["template"]["metadata"]["labels"]
    annotations = resource["spec"]["template"]["metadata"]["annotations"]
    services = [r for _p, r in k8s_resources() if r["kind"] == "Service" and r["spec"]["selector"].items() <= labels.items()]

    assert annotations["prometheus.io/port"] == str(port) and annotations["prometheus.io/path"] == "/metrics"
    assert services and all(s["spec"]["ports"][0]["port"] == port for s in services)


def test_every_container_has_resource_requests_and_limits() -> None:
    for name, _resource, spec in workloads():
        for container in containers(spec):
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"]), name


def test_every_pod_runs_as_a_non_root_user_without_privileges() -> None:
    for name, _resource, spec in workloads():
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0, name
        for container in containers(spec):
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], name


def test_consent_keeps_its_rocksdb_state_on_a_volume_per_pod() -> None:
    container, statefulset = service_containers()["consent"]
    env, _helpers = container_env(container)
    state_dir = settings_with_env(SETTINGS_OF_COMMAND["consent"], env).state_dir
    claims = {t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]}

    mounted = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}

    assert statefulset["kind"] == "StatefulSet"
    assert any(state_dir.is_relative_to(path) and name in claims for path, name in mounted.items())


def test_the_sink_writes_the_delta_table_on_its_volume() -> None:
    container, deployment = service_containers()["sink"]
    env, _helpers = container_env(container)
    store_uri = settings_with_env(SETTINGS_OF_COMMAND["sink"], env).store_uri
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}

    mounted = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}

    assert any(store_uri.startswith(path + "/") and "persistentVolumeClaim" in volumes[name] for path, name in mounted.items())
    # One writer on a ReadWriteOnce volume: the old pod must let go before the new one starts.
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"


def test_no_service_has_more_replicas_than_partitions_to_share() -> None:
    partitions = int(config_map_data("consentry-config")["CONSENTRY_PARTITIONS"])
    for command in ("consent", "ingest", "sink"):
        _container, resource = service_containers()[command]
        assert 1 <= resource["spec"]["replicas"] <= partitions, command


@pytest.mark.parametrize("job", ["consentry-vacuum", "consentry-reconcile"])
def test_vacuum_and_reconcile_work_on_the_table_the_sink_writes(job: str) -> None:
    sink_container, sink = service_containers()["sink"]
    _name, _resource, job_spec = next(w for w in workloads() if w[1]["metadata"]["name"] == job)

    def store(container: dict[str, Any], spec: dict[str, Any]) -> tuple[str, set[str]]:
        env, _helpers = container_env(container)
        claims = {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
        return settings_with_env(SETTINGS_OF_COMMAND[parse_command_line(container["command"])], env).store_uri, claims

    assert store(job_spec["containers"][0], job_spec) == store(sink_container, sink["spec"]["template"]["spec"])


def test_the_keys_and_the_service_token_come_from_a_secret() -> None:
    def from_secret(component: str) -> dict[str, dict[str, str]]:
        container, _resource = service_containers()[component]
        return {item["name"]: item["valueFrom"]["secretKeyRef"] for item in container["env"] if "secretKeyRef" in item.get("valueFrom", {})}

    keys = ("CONSENTRY_USER_KEYS", "CONSENTRY_ADMIN_KEYS", "CONSENTRY_LINK_KEYS", "CONSENTRY_SERVICE_TOKEN")
    assert from_secret("gateway") == {name: {"name": "consentry-keys", "key": name} for name in keys}
    assert from_secret("consent") == {"CONSENTRY_SERVICE_TOKEN": {"name": "consentry-keys", "key": "CONSENTRY_SERVICE_TOKEN"}}
    container, _resource = service_containers()["gateway"]
    assert "CONSENTRY_JWT_SECRET" not in {item["name"] for item in container["env"]}  # loopback and demo only
    example = load_yaml(K8S_DIR / "keys-secret.example.yaml")
    assert example["metadata"]["name"] == "consentry-keys" and set(example["stringData"]) == set(keys)


def test_the_gateway_and_consent_as_deployed_would_start() -> None:
    """With real values in place of the Secret's, the start-up checks pass."""
    from services.consent.views import check_service_token
    from services.gateway.security import check

    def realistic(component: str) -> dict[str, str]:
        container, _resource = service_containers()[component]
        env, _helpers = container_env(container)
        return {k: (f"{k.lower()}-1:{k.lower():x<40}" if k.endswith("_KEYS") else "t" * 64 if k == "CONSENTRY_SERVICE_TOKEN" else v) for k, v in env.items()}

    assert not check(settings_with_env(SETTINGS_OF_COMMAND["gateway"], realistic("gateway"))).single
    check_service_token(settings_with_env(SETTINGS_OF_COMMAND["consent"], realistic("consent")))


# ------------------------------------------------------------------ issue 14: network policies

# Where a connection may come from: (pod labels, namespace).
NAMESPACE_LABELS = {"consentry": {"kubernetes.io/metadata.name": "consentry"}, "monitoring": {"kubernetes.io/metadata.name": "monitoring"},
                    "ingress-nginx": {"kubernetes.io/metadata.name": "ingress-nginx"}}
INGRESS_CONTROLLER = ({"app.kubernetes.io/name": "ingress-nginx"}, "ingress-nginx")
PROMETHEUS = ({"app.kubernetes.io/name": "prometheus"}, "monitoring")
DEBUG_POD = ({"run": "debug"}, "consentry")


def pod_of(component: str) -> tuple[dict[str, str], str]:
    return {"app.kubernetes.io/name": "consentry", "app.kubernetes.io/component": component}, "consentry"


def network_policies() -> list[dict[str, Any]]:
    return [r for _p, r in k8s_resources() if r["kind"] == "NetworkPolicy"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and the In / Exists expressions)."""
    if not (selector.get("matchLabels") or {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions") or []:
        value = labels.get(expr["key"])
        if expr["operator"] == "In" and value not in expr["values"]:
            return False
        if expr["operator"] == "Exists" and value is None:
            return False
        if expr["operator"] not in ("In", "Exists"):
            raise AssertionError(f"unsupported operator {expr['operator']} in this check")
    return True


def container_ports(component: str) -> dict[str, int]:
    container, _resource = service_containers()[component]
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def ingress_allowed(component: str, port: int, source: tuple[dict[str, str], str]) -> bool:
    """NetworkPolicy semantics: a pod selected by an Ingress policy accepts only what some rule
    of those policies allows (a rule without `from` allows every source; without `ports`, every port)."""
    labels, _namespace = pod_of(component)
    source_labels, source_namespace = source
    applicable = [p for p in network_policies() if "Ingress" in p["spec"].get("policyTypes", ["Ingress"]) and selects(p["spec"]["podSelector"], labels)]
    if not applicable:
        return True
    named = container_ports(component)
    for policy in applicable:
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports is not None and not any(named.get(p.get("port"), p.get("port")) == port for p in ports):
                continue
            peers = rule.get("from")
            if not peers:
                return True
            for peer in peers:
                namespaces = peer.get("namespaceSelector")
                in_namespace = selects(namespaces, NAMESPACE_LABELS[source_namespace]) if namespaces is not None else source_namespace == policy["metadata"].get("namespace", "consentry")
                if in_namespace and selects(peer.get("podSelector") or {}, source_labels):
                    return True
    return False


def test_every_pod_is_isolated_by_a_default_deny_ingress_policy() -> None:
    deny = [p for p in network_policies() if p["spec"]["podSelector"] == {} and p["spec"].get("policyTypes") == ["Ingress"] and not p["spec"].get("ingress")]
    assert deny, "no default-deny NetworkPolicy: every pod answers every pod of the cluster"
    assert not ingress_allowed("consent", 6066, DEBUG_POD)


@pytest.mark.parametrize(
    ("component", "port", "source", "allowed"),
    [
        ("gateway", 8080, INGRESS_CONTROLLER, True),  # the public door
        ("gateway", 8080, PROMETHEUS, True),
        ("consent", 6066, pod_of("gateway"), True),  # status look-ups
        ("consent", 6066, pod_of("consent"), True),  # a look-up routed to the worker owning the user
        ("consent", 6066, PROMETHEUS, True),  # /metrics
        ("consent", 6066, pod_of("ingest"), False),
        ("consent", 6066, pod_of("sink"), False),
        ("consent", 6066, INGRESS_CONTROLLER, False),
        ("consent", 6066, DEBUG_POD, False),
        ("ingest", 9101, pod_of("gateway"), True),  # the dashboard
        ("ingest", 9101, PROMETHEUS, True),
        ("ingest", 9101, INGRESS_CONTROLLER, False),
        ("sink", 9102, pod_of("gateway"), True),
        ("sink", 9102, PROMETHEUS, True),
        ("sink", 9102, pod_of("consent"), False),
        ("sink", 9102, INGRESS_CONTROLLER, False),
    ],
)
def test_network_policies_let_in_only_who_needs_each_port(component: str, port: int, source: tuple[dict[str, str], str], allowed: bool) -> None:
    assert ingress_allowed(component, port, source) is allowed


@pytest.mark.parametrize("cronjob", ["consentry-vacuum", "consentry-reconcile"])
def test_a_table_cronjob_on_the_sinks_volume_runs_on_the_sinks_node(cronjob: str) -> None:
    """The sink's volume is ReadWriteOnce: mounted on one node, so a pod sharing it must join the sink's."""
    _sink_container, sink = service_containers()["sink"]
    _name, _resource, spec = next(w for w in workloads() if w[1]["metadata"]["name"] == cronjob)
    claims = {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
    sink_claims = {v["persistentVolumeClaim"]["claimName"] for v in sink["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v}
    assert claims & sink_claims, f"{cronjob} no longer mounts the sink's volume: this test checks nothing"
    assert "affinity" in spec, f"{cronjob} mounts the sink's ReadWriteOnce volume {sorted(claims)} with no podAffinity to the sink's node"
    (term,) = spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= sink["spec"]["template"]["metadata"]["labels"].items()
