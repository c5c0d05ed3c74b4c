"""deploy/helm/consentry: linted and rendered by Helm's own code (Helm 4's Go SDK from the
`helm-python-sdk` wheel, through scripts/helm.py: no helm binary is packaged on PyPI, npm or
Debian), every rendered object valid against the Kubernetes schemas, the same containers as
deploy/k8s (so the two cannot drift), and the insecure combinations refused at render time.

All renders happen in one subprocess per module (Helm's library is 85 MB to load)."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from functools import cache
from typing import Any

import kubernetes_validate
import pytest
import yaml

from consentry.settings import CommonSettings
from tests.support.deploy import (
    ROOT,
    SETTINGS_OF_COMMAND,
    env_names,
    k8s_resources,
    load_yaml,
    parse_command_line,
    pod_spec,
    unknown_settings,
)

CHART = ROOT / "deploy" / "helm" / "consentry"
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
KEYS = {"keys": {"existingSecret": "consentry-keys"}}

RENDERED = {
    "default": KEYS,
    "on-demand-jobs": {**KEYS, "reconcile": {"enabled": True}, "vacuum": {"enabled": True}},
    "production": {
        **KEYS,
        "image": {"repository": "registry.example.com/consentry", "tag": "0.1.0"},
        "imagePullSecrets": [{"name": "registry"}],
        "partitions": 12,
        "kafka": {
            "bootstrapServers": "kafka-0.kafka:9093,kafka-1.kafka:9093",
            "securityProtocol": "SASL_SSL",
            "tls": {"ca": "ca.pem"},
            "sasl": {"mechanism": "SCRAM-SHA-512"},
            "secret": "consentry-kafka",
        },
        "storage": {"uri": "s3://bucket/training", "credentialsSecret": "consentry-store-credentials", "options": {"conditional_put": "etag"}},
        "consent": {"replicas": 3, "standbyReplicas": 1},
        "ingest": {"replicas": 6},
        "sink": {"replicas": 4},
        "gateway": {"replicas": 3, "trustedProxies": "10.244.0.0/16"},
        "reconcile": {"enabled": True, "schedule": "5 * * * *"},
        "vacuum": {"enabled": True, "schedule": "43 3 * * *"},
        "networkPolicy": {"ingressNamespace": "ingress-nginx"},
        "monitoring": {"prometheusOperator": True, "labels": {"release": "kube-prometheus-stack"}},
    },
    "mutual-tls": {
        **KEYS,
        "kafka": {"securityProtocol": "SSL", "secret": "consentry-kafka",
                  "tls": {"ca": "ca.pem", "cert": "client.pem", "key": "client.key", "keyPassword": "key-password", "checkHostname": False}},
    },
    "public-ca-no-monitoring": {**KEYS, "kafka": {"securityProtocol": "SSL", "tls": {"ca": "system"}}, "monitoring": {"prometheusOperator": False},
                                "networkPolicy": {"enabled": False}, "vacuum": {"enabled": False}},
}

KAFKA_SECRET = {"secret": "consentry-kafka"}
REFUSED = {
    "no keys Secret": ({}, "keys.existingSecret is required"),
    "TLS without a CA": ({**KEYS, "kafka": {"securityProtocol": "SSL", **KAFKA_SECRET}}, "needs kafka.tls.ca"),
    "SASL without TLS or mechanism": ({**KEYS, "kafka": {"securityProtocol": "SASL_PLAINTEXT", **KAFKA_SECRET}}, "needs kafka.sasl.mechanism"),
    "PLAIN password in clear": ({**KEYS, "kafka": {"securityProtocol": "SASL_PLAINTEXT", "sasl": {"mechanism": "PLAIN"}, **KAFKA_SECRET}}, "in clear"),
    "SASL without its Secret": ({**KEYS, "kafka": {"securityProtocol": "SASL_SSL", "tls": {"ca": "system"}, "sasl": {"mechanism": "SCRAM-SHA-256"}}}, "SASL needs kafka.secret"),
    "a CA file without its Secret": ({**KEYS, "kafka": {"securityProtocol": "SSL", "tls": {"ca": "ca.pem"}}}, "kafka.secret, which is not set"),
    "TLS settings on PLAINTEXT": ({**KEYS, "kafka": {"tls": {"ca": "system"}}}, "half-made"),
    "SASL settings on SSL": ({**KEYS, "kafka": {"securityProtocol": "SSL", "tls": {"ca": "system"}, "sasl": {"mechanism": "PLAIN"}}}, "half-made"),
    "an unknown protocol": ({**KEYS, "kafka": {"securityProtocol": "SASL_SSLL"}}, "is not one of"),
    "no bootstrap servers": ({**KEYS, "kafka": {"bootstrapServers": ""}}, "kafka.bootstrapServers is required"),
    "the single JWT secret": ({**KEYS, "gateway": {"extraEnv": [{"name": "CONSENTRY_JWT_SECRET", "value": "x" * 64}]}}, "loopback and the demo only"),
    "the demo's secret": ({**KEYS, "consent": {"extraEnv": [{"name": "CONSENTRY_DEMO", "value": "true"}]}}, "loopback and the demo only"),
    "a key set as a value": ({**KEYS, "gateway": {"extraEnv": [{"name": "CONSENTRY_USER_KEYS", "value": "people-1:" + "x" * 64}]}}, "never from values"),
    "the token as a value": ({**KEYS, "consent": {"extraEnv": [{"name": "CONSENTRY_SERVICE_TOKEN", "value": "t" * 64}]}}, "never from values"),
    "sink replicas on one volume": ({**KEYS, "sink": {"replicas": 2}}, "needs storage.uri"),
    "more replicas than partitions": ({**KEYS, "ingest": {"replicas": 9}}, "between 1 and partitions"),
    "as many standbys as workers": ({**KEYS, "consent": {"replicas": 2, "standbyReplicas": 2}}, "standbyReplicas must be smaller"),
    # values.schema.json: the types and the choices.
    "replicas as a word": ({**KEYS, "consent": {"replicas": "two"}}, "at '/consent/replicas': got string, want integer"),
    "an unknown operator mode": ({**KEYS, "monitoring": {"prometheusOperator": "yes"}}, "/monitoring/prometheusOperator"),
}

# deploy/k8s names its objects plainly; the chart prefixes them with the release's full name.
K8S_NAME = re.compile(r"\bconsentry-(consent-workers|consent|ingest|sink|gateway|training-store|audit-writer)\b")


@cache
def helm() -> dict[str, Any]:
    request = {"lint": KEYS, "template": {**RENDERED, **{f"refused: {k}": v for k, (v, _m) in REFUSED.items()}}}
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "helm.py"), "cases", str(CHART)],
        input=json.dumps(request), capture_output=True, text=True, timeout=240, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout)


def rendered(case: str) -> list[dict[str, Any]]:
    outcome = helm()["template"][case]
    assert "manifests" in outcome, outcome.get("error")
    return [doc for doc in yaml.safe_load_all(outcome["manifests"]) if doc]


def as_k8s(resource: dict[str, Any]) -> dict[str, Any]:
    """The chart's object with deploy/k8s's names (consentry-sink -> sink, ...)."""
    return yaml.safe_load(K8S_NAME.sub(lambda m: m.group(1), yaml.safe_dump(resource)))


def component(resource: dict[str, Any]) -> str | None:
    return resource["metadata"].get("labels", {}).get("app.kubernetes.io/component")


def containers_of(resources: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(component, container name) -> (container, pod spec, resource), init containers included."""
    found = {}
    for resource in resources:
        spec = pod_spec(resource)
        if spec is None:
            continue
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            found[(component(resource), container["name"])] = (container, spec, resource)
    return found


def env_of(container: dict[str, Any], resources: list[dict[str, Any]]) -> dict[str, Any]:
    """The container's environment: its ConfigMap's data, then `env` (values, or where they come from)."""
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            config = next(r for r in resources if r["kind"] == "ConfigMap" and r["metadata"]["name"] == source["configMapRef"]["name"])
            env.update(config["data"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", item.get("valueFrom"))
    return env


# ------------------------------------------------------------------ helm lint and helm template


def test_helm_lint_finds_nothing_to_fix() -> None:
    report = helm()["lint"]
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["total_charts_linted"] == 1 and not report["errors"] and not problems, report


# Every case against the newest schemas; the one using every value against the oldest release too
# (a schema check is about a second per case: make test has little room).
@pytest.mark.parametrize(("case", "version"), [*((case, VERSIONS[-1]) for case in RENDERED), ("production", VERSIONS[0])])
def test_every_rendered_object_is_a_valid_kubernetes_object(case: str, version: str) -> None:
    checked = set()
    for resource in rendered(case):
        if resource["apiVersion"] == "monitoring.coreos.com/v1":
            continue  # the operator's kinds: checked below
        kubernetes_validate.validate(resource, version, strict=True)
        checked.add(resource["kind"])
    assert {"ConfigMap", "StatefulSet", "Deployment", "Service", "Job"} <= checked


def test_the_schema_check_of_the_rendered_chart_catches_a_misspelled_field() -> None:
    deployment = copy.deepcopy(next(r for r in rendered("default") if r["kind"] == "Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


@pytest.mark.parametrize("case", RENDERED)
def test_every_container_runs_a_real_command_with_settings_it_reads(case: str) -> None:
    resources = rendered(case)
    for (comp, name), (container, _spec, _resource) in containers_of(resources).items():
        command = parse_command_line(container["command"])
        known = env_names(SETTINGS_OF_COMMAND[command])
        unknown = {k for k in env_of(container, resources) if k.upper() not in known and k != "POD_NAME"}
        assert not unknown, f"{case}: {comp}/{name} sets {unknown}, which `consentry {command}` does not read"


def test_the_default_settings_are_read_as_written() -> None:
    resources = rendered("default")
    for (comp, name), (container, _spec, _resource) in containers_of(resources).items():
        env = {k: v for k, v in env_of(container, resources).items() if isinstance(v, str) and k != "POD_NAME"}
        assert unknown_settings(SETTINGS_OF_COMMAND[parse_command_line(container["command"])], env) == [], f"{comp}/{name}"


# ------------------------------------------------------------------ the same system as deploy/k8s

# What must be equal, container by container: the chart may add, deploy/k8s may not be missing.
COMPARED = ("command", "ports", "livenessProbe", "readinessProbe", "startupProbe", "securityContext", "resources")


def k8s_containers() -> dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    return containers_of([r for _p, r in k8s_resources()])


@pytest.mark.parametrize("case", ["default", "on-demand-jobs"])
def test_every_container_of_deploy_k8s_is_in_the_chart_with_the_same_command_env_ports_and_probes(case: str) -> None:
    k8s = [r for _p, r in k8s_resources()]
    chart = [as_k8s(r) for r in rendered(case)]
    theirs, ours = k8s_containers(), containers_of(chart)
    wanted = set(theirs) if case == "on-demand-jobs" else {key for key in theirs if key[0] not in ("reconcile", "vacuum")}

    assert wanted <= set(ours), f"missing from the chart: {wanted - set(ours)}"
    for key in wanted:
        (k8s_container, k8s_spec, k8s_resource), (container, spec, resource) = theirs[key], ours[key]
        for field in COMPARED:
            assert container.get(field) == k8s_container.get(field), f"{key} {field}"
        env, k8s_env = env_of(container, chart), env_of(k8s_container, k8s)
        if key == ("sink", "sink") and case == "on-demand-jobs":
            # deploy/k8s/reconcile-cronjob.yaml asks for this in sink.yaml; the chart does it.
            assert env.pop("CONSENTRY_RECONCILE_INTERVAL_S") == "0"
            # and deploy/k8s/vacuum-cronjob.yaml this.
            assert env.pop("CONSENTRY_VACUUM_INTERVAL_S") == "0"
        assert env == k8s_env, key
        assert {m["mountPath"] for m in container.get("volumeMounts", [])} == {m["mountPath"] for m in k8s_container.get("volumeMounts", [])}, key
        assert spec["securityContext"] == {**k8s_spec["securityContext"], "fsGroup": 10001}, key
        assert spec.get("terminationGracePeriodSeconds") == k8s_spec.get("terminationGracePeriodSeconds"), key
        annotations = resource["spec"].get("template", {}).get("metadata", {}).get("annotations", {})
        k8s_annotations = k8s_resource["spec"].get("template", {}).get("metadata", {}).get("annotations", {})
        assert {k: v for k, v in annotations.items() if k.startswith("prometheus.io/")} == k8s_annotations, key
        if resource["kind"] in ("Deployment", "StatefulSet"):
            assert resource["kind"] == k8s_resource["kind"] and resource["spec"]["replicas"] == k8s_resource["spec"]["replicas"], key
            assert resource["spec"].get("strategy") == k8s_resource["spec"].get("strategy"), key
        if resource["kind"] == "CronJob" and k8s_resource["kind"] == "CronJob":
            assert resource["spec"]["schedule"] == k8s_resource["spec"]["schedule"], key


def test_the_services_and_volumes_of_deploy_k8s_are_in_the_chart() -> None:
    def by_name(resources: list[dict[str, Any]], kinds: set[str]) -> dict[tuple[str, str], dict[str, Any]]:
        return {(r["kind"], r["metadata"]["name"]): r.get("spec", r.get("data")) for r in resources if r["kind"] in kinds}

    kinds = {"Service", "PersistentVolumeClaim", "PodDisruptionBudget", "ConfigMap"}
    theirs = by_name([r for _p, r in k8s_resources()], kinds)
    ours = by_name([as_k8s(r) for r in rendered("default")], kinds)
    configs = {r["metadata"]["name"]: r["data"] for r in rendered("default") if r["kind"] == "ConfigMap"}

    assert set(theirs) <= set(ours), set(theirs) - set(ours)
    for key, spec in theirs.items():
        if key[0] == "Service":
            assert ours[key]["ports"] == spec["ports"] and ours[key].get("clusterIP") == spec.get("clusterIP"), key
        if key[0] == "PersistentVolumeClaim":
            assert ours[key] == spec, key
        if key[0] == "PodDisruptionBudget":
            assert {k: v for k, v in ours[key].items() if k != "selector"} == {k: v for k, v in spec.items() if k != "selector"}, key
    k8s_config = next(r["data"] for _p, r in k8s_resources() if r["kind"] == "ConfigMap")
    assert configs["consentry-config"] == k8s_config


# ------------------------------------------------------------------ values


def test_production_values_wire_kafka_security_storage_replicas_and_schedules() -> None:
    resources = rendered("production")
    ours = containers_of(resources)
    config = next(r["data"] for r in resources if r["kind"] == "ConfigMap")
    workloads = {(r["kind"], component(r)): r for r in resources if pod_spec(r) is not None}

    assert config["KAFKA_BOOTSTRAP_SERVERS"] == "kafka-0.kafka:9093,kafka-1.kafka:9093" and config["CONSENTRY_PARTITIONS"] == "12"
    assert {k: v for k, v in config.items() if k.startswith("CONSENTRY_KAFKA_")} == {
        "CONSENTRY_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "CONSENTRY_KAFKA_SSL_CAFILE": "/etc/consentry/kafka/ca.pem",
        "CONSENTRY_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "CONSENTRY_KAFKA_SASL_USERNAME_FILE": "/etc/consentry/kafka/username",
        "CONSENTRY_KAFKA_SASL_PASSWORD_FILE": "/etc/consentry/kafka/password",
    }
    for (comp, name), (container, spec, _resource) in ours.items():
        # Every Kafka client gets the Secret's files where the settings point, read-only.
        assert {"name": "kafka-credentials", "mountPath": "/etc/consentry/kafka", "readOnly": True} in container["volumeMounts"], (comp, name)
        assert {"name": "kafka-credentials", "secret": {"secretName": "consentry-kafka", "defaultMode": 0o440}} in spec["volumes"], (comp, name)
        assert container["image"] == "registry.example.com/consentry:0.1.0" and spec["imagePullSecrets"] == [{"name": "registry"}]
        if comp in ("sink", "vacuum", "reconcile"):
            env = env_of(container, resources)
            assert env["TRAINING_STORE_URI"] == "s3://bucket/training", comp
            assert json.loads(env["CONSENTRY_STORE_OPTIONS"]) == {"conditional_put": "etag"}, comp
            assert {"secretRef": {"name": "consentry-store-credentials"}} in container["envFrom"], comp
            assert not any("persistentVolumeClaim" in v for v in spec["volumes"]), comp
    assert not [r for r in resources if r["kind"] == "PersistentVolumeClaim"]
    assert workloads[("StatefulSet", "consent")]["spec"]["replicas"] == 3
    assert env_of(ours[("consent", "consent")][0], resources)["CONSENTRY_CONSENT_STANDBY_REPLICAS"] == "1"
    assert workloads[("Deployment", "sink")]["spec"]["replicas"] == 4
    assert workloads[("Deployment", "sink")]["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    assert workloads[("Deployment", "ingest")]["spec"]["replicas"] == 6
    assert workloads[("CronJob", "reconcile")]["spec"]["schedule"] == "5 * * * *"
    assert env_of(ours[("sink", "sink")][0], resources)["CONSENTRY_RECONCILE_INTERVAL_S"] == "0"
    assert workloads[("CronJob", "vacuum")]["spec"]["schedule"] == "43 3 * * *"
    assert env_of(ours[("sink", "sink")][0], resources)["CONSENTRY_VACUUM_INTERVAL_S"] == "0"
    assert "affinity" not in pod_spec(workloads[("CronJob", "vacuum")])  # object storage: any node will do
    assert env_of(ours[("gateway", "gateway")][0], resources)["CONSENTRY_TRUSTED_PROXIES"] == "10.244.0.0/16"
    topics = [c["command"] for (_comp, name), (c, _s, _r) in ours.items() if name == "topics"]
    assert topics == [["consentry", "topics", "--replication", "3"]] * 2


def test_mutual_tls_files_and_the_hostname_check_reach_the_settings() -> None:
    config = next(r["data"] for r in rendered("mutual-tls") if r["kind"] == "ConfigMap")
    assert {k: v for k, v in config.items() if k.startswith("CONSENTRY_KAFKA_")} == {
        "CONSENTRY_KAFKA_SECURITY_PROTOCOL": "SSL",
        "CONSENTRY_KAFKA_SSL_CAFILE": "/etc/consentry/kafka/ca.pem",
        "CONSENTRY_KAFKA_SSL_CERTFILE": "/etc/consentry/kafka/client.pem",
        "CONSENTRY_KAFKA_SSL_KEYFILE": "/etc/consentry/kafka/client.key",
        "CONSENTRY_KAFKA_SSL_KEY_PASSWORD_FILE": "/etc/consentry/kafka/key-password",
        "CONSENTRY_KAFKA_SSL_CHECK_HOSTNAME": "False",
    }
    assert set(config) <= set(env_names(CommonSettings))
    assert env_names(CommonSettings)["CONSENTRY_KAFKA_SSL_CHECK_HOSTNAME"] == "kafka_ssl_check_hostname"


def test_the_operator_objects_scrape_every_service_under_the_alerts_job_names() -> None:
    resources = rendered("production")
    monitors = {r["metadata"]["name"]: r for r in resources if r["kind"] == "ServiceMonitor"}
    services = [r for r in resources if r["kind"] == "Service"]
    rule = next(r for r in resources if r["kind"] == "PrometheusRule")

    assert len(monitors) == 4
    for monitor in monitors.values():
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        selector = monitor["spec"]["selector"]
        chosen = [s for s in services if selector["matchLabels"].items() <= s["metadata"]["labels"].items()
                  and "consentry.io/headless" not in s["metadata"]["labels"]]
        assert len(chosen) == 1, monitor["metadata"]["name"]  # not the consent workers' headless Service too
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in chosen[0]["spec"]["ports"]} and endpoint["path"] == "/metrics"
        assert endpoint["relabelings"][0] == {"targetLabel": "job", "replacement": f"consentry-{component(chosen[0])}"}
    # The same rules as deploy/prometheus/alerts.yml (files/alerts.yml links to it: one source).
    assert rule["spec"]["groups"] == load_yaml(ROOT / "deploy" / "prometheus" / "alerts.yml")["groups"]


def test_the_operator_objects_follow_the_cluster_or_the_value() -> None:
    def kinds(case: str) -> set[str]:
        return {r["kind"] for r in rendered(case)}

    # `helm template` (no cluster) has no monitoring.coreos.com/v1: "auto" renders none.
    assert not {"ServiceMonitor", "PrometheusRule"} & kinds("default")
    assert not {"ServiceMonitor", "PrometheusRule"} & kinds("public-ca-no-monitoring")
    assert {"ServiceMonitor", "PrometheusRule"} <= kinds("production")
    assert "Has \"monitoring.coreos.com/v1\"" in (CHART / "templates" / "_helpers.tpl").read_text()


def test_table_cronjobs_on_the_local_volume_run_on_the_sinks_node() -> None:
    """A ReadWriteOnce volume is mounted on one node: the vacuum and reconcile pods must join the sink's."""
    resources = rendered("on-demand-jobs")
    sink = next(r for r in resources if r["kind"] == "Deployment" and component(r) == "sink")
    for job in ("vacuum", "reconcile"):
        spec = pod_spec(next(r for r in resources if r["kind"] == "CronJob" and component(r) == job))
        assert any("persistentVolumeClaim" in v for v in spec["volumes"]), job
        (term,) = spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["labelSelector"]["matchLabels"] == sink["spec"]["selector"]["matchLabels"], job


def test_network_policies_and_the_vacuum_can_be_left_out() -> None:
    kinds = {r["kind"] for r in rendered("public-ca-no-monitoring")}
    assert "NetworkPolicy" not in kinds and "CronJob" not in kinds
    gateway = next(r for r in rendered("production") if r["kind"] == "NetworkPolicy" and r["metadata"]["name"].endswith("-gateway"))
    sources = gateway["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}} in sources


# ------------------------------------------------------------------ refused


@pytest.mark.parametrize("case", REFUSED)
def test_an_insecure_or_inconsistent_combination_is_refused_at_render_time(case: str) -> None:
    _values, message = REFUSED[case]
    outcome = helm()["template"][f"refused: {case}"]
    assert "error" in outcome, f"rendered although {case}"
    assert message in outcome["error"]


def test_the_keys_and_the_service_token_come_from_the_named_secret_only() -> None:
    resources = rendered("default")
    ours = containers_of(resources)
    secret_refs = {
        comp: {item["name"]: item["valueFrom"]["secretKeyRef"] for item in c.get("env", []) if "secretKeyRef" in item.get("valueFrom", {})}
        for (comp, _name), (c, _s, _r) in ours.items()
    }
    keys = ("CONSENTRY_USER_KEYS", "CONSENTRY_ADMIN_KEYS", "CONSENTRY_LINK_KEYS", "CONSENTRY_SERVICE_TOKEN")
    assert secret_refs["gateway"] == {k: {"name": "consentry-keys", "key": k} for k in keys}
    assert secret_refs["consent"] == {"CONSENTRY_SERVICE_TOKEN": {"name": "consentry-keys", "key": "CONSENTRY_SERVICE_TOKEN"}}
    assert not [r for r in resources if r["kind"] == "Secret"]  # the chart never holds a secret itself
