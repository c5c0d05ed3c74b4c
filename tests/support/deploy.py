"""Helpers for the deployment tests: the repository's files, the `consentry` command as click
sees it, and the settings each service reads from its environment."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

import typer
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from consentry.settings import CommonSettings
from consentry.training import ReaderSettings
from consentry_cli.cli import app
from services.consent.settings import ConsentSettings
from services.gateway.settings import GatewaySettings
from services.ingest.settings import IngestSettings
from services.audit.settings import AuditSettings
from services.sink.settings import SinkSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
K8S_DIR = ROOT / "deploy" / "k8s"

# The settings class each command reads (`up` starts them all).
SETTINGS_OF_COMMAND: dict[str, type[BaseSettings]] = {
    "consent": ConsentSettings,
    "ingest": IngestSettings,
    "sink": SinkSettings,
    "gateway": GatewaySettings,
    "topics": CommonSettings,
    "import": CommonSettings,
    "import-notices": CommonSettings,
    "dead-letters": CommonSettings,
    "vacuum": SinkSettings,
    "reconcile": SinkSettings,
    "token": GatewaySettings,
    "audit-writer": AuditSettings,
    "audit": AuditSettings,
    "report": AuditSettings,
    "snapshot": ReaderSettings,
}
SERVICE_COMMANDS = ("consent", "ingest", "sink", "gateway", "audit-writer")

# The metric names the dashboard and the alerts may use (issues 5 and 7). Histograms are queried
# through their `_bucket` series.
METRICS: dict[str, str] = {
    "consentry_ingest_posts_in_total": "counter",
    "consentry_ingest_accepted_total": "counter",
    "consentry_ingest_dropped_total": "counter",
    "consentry_ingest_rejected_total": "counter",
    "consentry_ingest_repartitioned_total": "counter",
    "consentry_ingest_purge_markers_total": "counter",
    "consentry_ingest_deferred_total": "counter",
    "consentry_ingest_deferred_posts": "gauge",
    "consentry_ingest_deferred_bytes": "gauge",
    "consentry_ingest_deferred_full": "gauge",
    "consentry_ingest_deferred_released_total": "counter",
    "consentry_ingest_deferred_dropped_total": "counter",
    "consentry_ingest_users_waiting_for_notice": "gauge",
    "consentry_consent_notices_total": "counter",
    "consentry_consent_dead_letters_total": "counter",
    "consentry_sink_rows_appended_total": "counter",
    "consentry_sink_duplicates_total": "counter",
    "consentry_sink_purges_total": "counter",
    "consentry_sink_rows_purged_total": "counter",
    "consentry_sink_lineage_reads": "gauge",
    "consentry_sink_purges_trained_on_total": "counter",
    "consentry_sink_batches_total": "counter",
    "consentry_sink_commit_seconds": "histogram",
    "consentry_sink_stage_seconds": "histogram",
    "consentry_sink_table_version": "gauge",
    "consentry_sink_table_bytes": "gauge",
    "consentry_vacuum_runs_total": "counter",
    "consentry_reconcile_runs_total": "counter",
    "consentry_reconcile_rows_purged_total": "counter",
    "consentry_reconcile_last_run_timestamp_seconds": "gauge",
    "consentry_reconcile_last_duration_seconds": "gauge",
    "consentry_reconcile_last_rows_purged": "gauge",
    "consentry_sink_rewinds_total": "counter",
    "consentry_sink_unreplayable_records_total": "counter",
    "consentry_sink_commit_conflicts_total": "counter",
    "consentry_objection_enforce_seconds": "histogram",
    "consentry_objection_purge_seconds": "histogram",
    "consentry_purge_backlog_age_seconds": "gauge",
    "consentry_consumer_lag": "gauge",
    "consentry_consent_users": "gauge",
    "consentry_gateway_objections_total": "counter",
    "consentry_gateway_request_seconds": "histogram",
    # Issue 14: operators' actions and their audit trail.
    "consentry_gateway_admin_actions_total": "counter",
    "consentry_gateway_admin_action_record_failures_total": "counter",
    "consentry_gateway_imported_withdrawals_total": "counter",
    # Issue 17: failures alerted on, the consumer groups' lag read from outside, the release.
    "consentry_gateway_publish_failures_total": "counter",
    "consentry_sink_errors_total": "counter",
    "consentry_sink_last_vacuum_timestamp": "gauge",
    "consentry_sink_last_compaction_timestamp": "gauge",
    "consentry_sink_compaction_files_removed_total": "counter",
    "consentry_sink_vacuum_files_removed_total": "counter",
    "consentry_sink_housekeeping_seconds": "histogram",
    "consentry_sink_vacuum_interval_seconds": "gauge",
    "consentry_group_lag": "gauge",
    "consentry_group_lag_up": "gauge",
    "consentry_build_info": "gauge",
    # Issue 15: the audit trail.
    "consentry_audit_records_total": "counter",
    "consentry_audit_errors_total": "counter",
    "consentry_audit_chain_broken": "gauge",
    "consentry_audit_last_verified_timestamp_seconds": "gauge",
    "consentry_audit_table_rows_behind": "gauge",
    "consentry_ingest_drop_count_records_total": "counter",
}
# Prometheus' own series (1 when a target answered its last scrape), and the process series every
# prometheus_client exports on Linux (the restart alert reads the start time).
PROMETHEUS_SERIES = {"up", "process_start_time_seconds"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


# ------------------------------------------------------------------ the command line


def consentry_commands() -> dict[str, Any]:
    """The subcommands of `consentry`, as the command-line parser sees them (typer ships its
    own copy of click, so these are typer's click commands)."""
    return dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def parse_command_line(argv: list[str]) -> str:
    """Parse `consentry <command> [args]` exactly as the real CLI would (without running it);
    return the command name. Raises AssertionError, or the parser's usage error, when it is not real."""
    assert argv and argv[0] == "consentry", f"not a consentry command: {argv}"
    assert len(argv) >= 2, f"no subcommand in {argv}"
    commands = consentry_commands()
    name = argv[1]
    assert name in commands, f"'consentry {name}' is not a command (there are: {', '.join(sorted(commands))})"
    commands[name].make_context(f"consentry {name}", list(argv[2:]))
    return name


# ------------------------------------------------------------------ settings


def env_names(cls: type[BaseSettings]) -> dict[str, str]:
    """Environment variable (upper case) -> field, as pydantic-settings reads them."""
    prefix = cls.model_config.get("env_prefix", "")
    names: dict[str, str] = {}
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            choices = [c for c in alias.choices if isinstance(c, str)]
        elif isinstance(alias, str):
            choices = [alias]
        else:
            choices = [f"{prefix}{field_name}"]
        for choice in choices:
            names[choice.upper()] = field_name
    return names


def settings_with_env(cls: type[BaseSettings], env: Mapping[str, str]) -> BaseSettings:
    """The settings `cls` reads from exactly this environment."""
    with mock.patch.dict(os.environ, dict(env), clear=True):
        return cls()


def unknown_settings(cls: type[BaseSettings], env: Mapping[str, str]) -> list[str]:
    """Variables of `env` that `cls` does not read, or reads as something else."""
    known = env_names(cls)
    problems = [f"{name} is not a setting of {cls.__name__}" for name in env if name.upper() not in known]
    if problems:
        return problems
    settings = settings_with_env(cls, env)
    for name, value in env.items():
        actual = getattr(settings, known[name.upper()])
        if str(actual) != str(value):
            problems.append(f"{name}={value!r} is read by {cls.__name__} as {actual!r}")
    return problems


_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[-?+][^}]*)?\}")


def interpolate(value: Any) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error}: a stand-in value for the variable."""
    return _INTERPOLATION.sub(lambda m: f"from-host-{m.group(1).lower()}", str(value))


# ------------------------------------------------------------------ kubernetes


def k8s_manifest_files() -> list[Path]:
    return sorted(p for p in K8S_DIR.glob("*.yaml") if p.name != "kustomization.yaml")


@cache
def _parsed_manifests() -> tuple[tuple[Path, dict[str, Any]], ...]:
    return tuple((path, doc) for path in k8s_manifest_files() for doc in load_yaml_documents(path))


def k8s_resources() -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every object of every manifest (a deep copy each time: tests may modify them)."""
    for path, doc in _parsed_manifests():
        yield path, copy.deepcopy(doc)


def pod_spec(resource: dict[str, Any]) -> dict[str, Any] | None:
    kind = resource["kind"]
    if kind in ("Deployment", "StatefulSet", "Job"):
        return resource["spec"]["template"]["spec"]
    if kind == "CronJob":
        return resource["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def workloads() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(kind/name, resource, pod spec) of every workload."""
    for _path, resource in k8s_resources():
        spec = pod_spec(resource)
        if spec is not None:
            yield f"{resource['kind']}/{resource['metadata']['name']}", resource, spec


def config_map_data(name: str) -> dict[str, str]:
    for _path, resource in k8s_resources():
        if resource["kind"] == "ConfigMap" and resource["metadata"]["name"] == name:
            return dict(resource["data"])
    raise AssertionError(f"no ConfigMap {name} in {K8S_DIR}")
