"""Prometheus scrapes every service where it listens; the alerts and the Grafana dashboard are
valid PromQL over the metrics the services export (parsed with `promql-parser`)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
from prometheus_client import REGISTRY

from tests.support.deploy import (
    COMPOSE_FILE,
    METRICS,
    PROMETHEUS_SERIES,
    ROOT,
    SERVICE_COMMANDS,
    SETTINGS_OF_COMMAND,
    interpolate,
    load_yaml,
    settings_with_env,
)

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "consentry.json"
OPERATIONS = ROOT / "docs" / "operations.md"
PORT_FIELD = {"consent": "consent_port", "ingest": "ingest_port", "sink": "sink_port", "gateway": "gateway_port", "audit-writer": "audit_port"}
# Grafana's interval variables, replaced by a duration before parsing.
GRAFANA_MACROS = re.compile(r"\$__(rate_interval|interval|range)")


def metric_names(expr: str) -> set[str]:
    """Every series name a PromQL expression selects (raises ValueError if it does not parse)."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name)
        elif isinstance(node, promql_parser.MatrixSelector):
            walk(node.vector_selector)
        elif isinstance(node, promql_parser.Call):
            for arg in node.args:
                walk(arg)
        else:
            for child in ("expr", "lhs", "rhs", "param"):
                if hasattr(node, child):
                    walk(getattr(node, child))

    walk(promql_parser.parse(GRAFANA_MACROS.sub("5m", expr)))
    return names


def allowed_series() -> set[str]:
    series = set(PROMETHEUS_SERIES)
    for name, kind in METRICS.items():
        series |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name}
    return series


def base_metric(series: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if series.endswith(suffix) and METRICS.get(series.removesuffix(suffix)) == "histogram":
            return series.removesuffix(suffix)
    return series


def github_anchors(markdown: Path) -> set[str]:
    anchors = set()
    for line in markdown.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(PROMETHEUS_DIR / "alerts.yml")["groups"] for rule in group["rules"]]


def dashboard_panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


# ------------------------------------------------------------------ Prometheus


def test_prometheus_scrapes_every_service_where_it_listens() -> None:
    compose = load_yaml(COMPOSE_FILE)
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    expected = {}
    for name in SERVICE_COMMANDS:
        service = compose["services"][name]
        env = {k: interpolate(v) for k, v in service["environment"].items()}
        port = getattr(settings_with_env(SETTINGS_OF_COMMAND[name], env), PORT_FIELD[name])
        expected[f"consentry-{name}"] = [f"{name}:{port}"]

    scraped = {job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]] for job in config["scrape_configs"]}

    assert scraped == expected
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in config["scrape_configs"])


def test_prometheus_loads_the_alert_rules_compose_mounts() -> None:
    compose = load_yaml(COMPOSE_FILE)
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    mounts = dict(v.split(":")[:2][::-1] for v in compose["services"]["prometheus"]["volumes"])

    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    assert mounts["/etc/prometheus/alerts.yml"] == "./deploy/prometheus/alerts.yml"


def test_every_alert_is_valid_promql_over_known_metrics() -> None:
    for rule in alert_rules():
        used = metric_names(rule["expr"])
        assert used and used <= allowed_series(), f"{rule['alert']} uses {used - allowed_series()}"
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_a_broken_query_is_refused_by_the_parser() -> None:
    with pytest.raises(ValueError):
        metric_names("sum(rate(consentry_ingest_accepted_total[5m])")


def test_alerts_cover_the_ways_the_promise_can_break() -> None:
    watched = {base_metric(s) for rule in alert_rules() for s in metric_names(rule["expr"])}

    assert {
        "up",  # a service is down
        "consentry_purge_backlog_age_seconds",
        "consentry_objection_enforce_seconds",
        "consentry_consumer_lag",
        "consentry_ingest_rejected_total",
        "consentry_consent_dead_letters_total",  # an event the consent service could not apply
        "process_start_time_seconds",  # a service stopping again and again (consent fails closed)
    } <= watched


def test_every_alert_links_to_its_section_of_the_operations_guide() -> None:
    anchors = github_anchors(OPERATIONS)
    for rule in alert_rules():
        assert "runbook_url" in rule["annotations"], f"{rule['alert']} has no runbook_url"
        page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert page == "docs/operations.md" and anchor in anchors, rule["alert"]


def test_alerts_watch_publish_failures_dead_letters_store_errors_vacuum_and_missing_targets() -> None:
    """Issue 17: each of these failures has its own alert."""
    rules = alert_rules()
    watched = {base_metric(s) for rule in rules for s in metric_names(rule["expr"])}

    assert {
        "consentry_gateway_publish_failures_total",
        "consentry_consent_dead_letters_total",
        "consentry_sink_errors_total",
        "consentry_sink_last_vacuum_timestamp",
        "consentry_group_lag",  # lag read from outside the groups: a dead group's lag shows
    } <= watched
    # A target that is gone entirely has no `up` series to be 0: absent() catches it, per job.
    absent = " ".join(rule["expr"] for rule in rules if "absent(" in rule["expr"])
    for service in SERVICE_COMMANDS:
        assert f'absent(up{{job="consentry-{service}"}})' in absent, service


# ------------------------------------------------------------------ Grafana


def test_every_dashboard_query_is_valid_promql_over_known_metrics() -> None:
    for panel in dashboard_panels():
        for target in panel["targets"]:
            used = metric_names(target["expr"])
            assert used and used <= allowed_series(), f"{panel['title']}: {used - allowed_series()}"


def test_the_dashboard_shows_every_metric_operators_need() -> None:
    shown = {base_metric(s) for p in dashboard_panels() for t in p["targets"] for s in metric_names(t["expr"])}

    assert shown >= set(METRICS) | {"up"}


def test_histograms_are_shown_as_p50_p95_p99() -> None:
    for name in ("consentry_objection_enforce_seconds", "consentry_objection_purge_seconds", "consentry_sink_commit_seconds"):
        panel = next(p for p in dashboard_panels() if any(f"{name}_bucket" in t["expr"] for t in p["targets"]))
        quantiles = {float(m) for t in panel["targets"] for m in re.findall(r"histogram_quantile\(([\d.]+)", t["expr"])}
        assert quantiles == {0.5, 0.95, 0.99}, panel["title"]


def test_the_dashboard_reads_the_provisioned_prometheus_and_is_provisioned_where_compose_mounts_it() -> None:
    datasource = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")["datasources"][0]
    provider = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "consentry.yml")["providers"][0]
    compose = load_yaml(COMPOSE_FILE)
    mounts = dict(v.split(":")[:2][::-1] for v in compose["services"]["grafana"]["volumes"])

    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    for panel in dashboard_panels():
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert all(t["datasource"]["uid"] == datasource["uid"] for t in panel["targets"]), panel["title"]
    assert mounts[provider["options"]["path"]] == "./deploy/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"


def test_panels_do_not_overlap() -> None:
    cells: set[tuple[int, int]] = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        grid = panel["gridPos"]
        mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert grid["x"] + grid["w"] <= 24 and not mine & cells, panel["title"]
        cells |= mine


def test_metrics_the_code_already_exports_have_the_type_the_queries_assume() -> None:
    """The dashboard's list is ahead of the code while the metrics work lands; where a metric
    exists, a histogram must be a histogram (queried by `_bucket`) and so on."""
    import services.consent.metrics  # noqa: F401  (registers the metrics)
    import services.gateway.metrics  # noqa: F401
    import services.ingest.metrics  # noqa: F401
    import services.sink.metrics  # noqa: F401

    exported = {}
    for family in REGISTRY.collect():
        name = family.name + "_total" if family.type == "counter" else family.name
        exported[name] = family.type
    common = set(METRICS) & set(exported)

    assert len(common) >= 15
    assert {name: exported[name] for name in common} == {name: METRICS[name] for name in common}


# ------------------------------------------------------------------ Alertmanager

ALERTMANAGER_DIR = ROOT / "deploy" / "alertmanager"
# Alertmanager's configuration keys (docs/configuration.md of prometheus/alertmanager), the parts used here.
ALERTMANAGER_TOP = {"global", "route", "receivers", "inhibit_rules", "templates", "time_intervals"}
ROUTE_KEYS = {"receiver", "group_by", "group_wait", "group_interval", "repeat_interval", "routes", "matchers", "continue"}
WEBHOOK_KEYS = {"url", "url_file", "send_resolved", "http_config", "max_alerts", "timeout"}
MATCHER = re.compile(r'[a-zA-Z_]\w*\s*(=|!=|=~|!~)\s*"[^"]*"')
DURATION = re.compile(r"(\d+[smhdwy])+")


def alertmanager_config() -> dict[str, Any]:
    return load_yaml(ALERTMANAGER_DIR / "alertmanager.yml")


def routes(route: dict[str, Any]) -> list[dict[str, Any]]:
    return [route] + [r for child in route.get("routes", []) for r in routes(child)]


def test_prometheus_sends_alerts_to_the_composed_alertmanager_where_it_listens() -> None:
    compose = load_yaml(COMPOSE_FILE)
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    service = compose["services"]["alertmanager"]
    targets = [t for am in config["alerting"]["alertmanagers"] for c in am["static_configs"] for t in c["targets"]]
    listen = next((a.split("=", 1)[1] for a in service["command"] if a.startswith("--web.listen-address=")), ":9093")

    assert targets == [f"alertmanager{listen}"]
    assert "alertmanager" in compose["services"]["prometheus"]["depends_on"]
    assert service["image"].startswith("prom/alertmanager:v")


def test_alertmanager_loads_the_config_compose_mounts_and_it_is_well_formed() -> None:
    compose = load_yaml(COMPOSE_FILE)
    service = compose["services"]["alertmanager"]
    mounts = dict(v.split(":")[:2][::-1] for v in service["volumes"])
    config_file = next(a.split("=", 1)[1] for a in service["command"] if a.startswith("--config.file="))
    assert mounts[config_file] == "./deploy/alertmanager/alertmanager.yml"

    config = alertmanager_config()
    assert set(config) <= ALERTMANAGER_TOP and {"route", "receivers"} <= set(config)
    names = [r["name"] for r in config["receivers"]]
    assert len(names) == len(set(names))
    for route in routes(config["route"]):
        assert set(route) <= ROUTE_KEYS, set(route) - ROUTE_KEYS
        assert route.get("receiver", config["route"]["receiver"]) in names
        assert all(MATCHER.fullmatch(m) for m in route.get("matchers", [])), route
        assert all(DURATION.fullmatch(route[k]) for k in ("group_wait", "group_interval", "repeat_interval") if k in route)
    for rule in config.get("inhibit_rules", []):
        assert all(MATCHER.fullmatch(m) for m in rule["source_matchers"] + rule["target_matchers"])
        alerts = {r["alert"] for r in alert_rules()}
        assert all(m.split("=", 1)[1].strip('"') in alerts for m in rule["source_matchers"] if m.startswith("alertname="))


def test_the_receiver_is_a_webhook_whose_url_is_a_secret_the_operator_gives() -> None:
    compose = load_yaml(COMPOSE_FILE)
    service = compose["services"]["alertmanager"]
    [receiver] = alertmanager_config()["receivers"]
    [webhook] = receiver["webhook_configs"]
    assert set(webhook) <= WEBHOOK_KEYS and "url" not in webhook, "the URL (often with a token) must not be in the file"

    secret = webhook["url_file"].removeprefix("/run/secrets/")
    assert secret in service["secrets"]
    variable = compose["secrets"][secret]["environment"]
    operations = OPERATIONS.read_text()
    assert variable in COMPOSE_FILE.read_text().split("\nname:")[0], "the compose header tells the operator to export it"
    assert "## Alertmanager" in operations and variable in operations.split("## Alertmanager", 1)[1].split("\n## ")[0]


def test_alerts_carry_labels_the_routes_use() -> None:
    severities = {rule["labels"]["severity"] for rule in alert_rules()}
    routed = {m.split("=", 1)[1].strip('"') for r in routes(alertmanager_config()["route"]) for m in r.get("matchers", []) if m.startswith("severity=")}
    assert routed <= severities
