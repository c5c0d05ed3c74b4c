"""What the dashboard shows, computed from successive scrapes of the services' /metrics.

Pure: snapshots, health and reject summaries in; one JSON-ready dict out. The page
(services/gateway/console/static/dashboard.js) only draws it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from consentry.timeutil import parse_rfc3339
from services.gateway.console.promql import Metrics, bucket_increase, buckets, by_label, histogram_quantile, increase, value

SERVICES = ("gateway", "consent", "ingest", "sink")
DROP_REASONS = ("objected", "not_public", "minor")
QUANTILES = (0.5, 0.95, 0.99)

RATE_WINDOW_S = 10.0  # throughput: averaged over the last 10 s of scrapes
LATENCY_WINDOW_S = 300.0  # percentiles: the last 5 min of scrapes, else since the service started
HISTORY_POINTS = 90

# Thresholds for green / amber / red. A purge normally completes in seconds.
BACKLOG_WARN_S = 60.0
BACKLOG_BAD_S = 900.0
LAG_WARN = 1_000
LAG_BAD = 50_000

OK, WARN, BAD = "ok", "warn", "bad"
READY, NOT_READY, DOWN = "ready", "not_ready", "down"


@dataclass(frozen=True)
class Snapshot:
    at: float  # monotonic seconds
    wall_us: int
    services: dict[str, Metrics] = field(default_factory=dict)  # only the services that answered


@dataclass(frozen=True)
class Health:
    service: str
    state: str  # ready | not_ready | down
    detail: str


# ------------------------------------------------------------------ rejects


REJECT_FIELDS: dict[str, type] = {
    "received_at": str,
    "reason_code": str,
    "reason": str,
    "topic": str,
    "partition": int,
    "offset": int,
    "value_bytes": int,
}
MAX_REASON_CHARS = 300


def summarize_rejection(raw: bytes | None) -> dict[str, Any] | None:
    """The fields of a posts.rejected record an operator may see. Never the raw value (it
    holds the post text); only these named fields, of the expected types."""
    try:
        obj = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict:
        return None
    out = {name: obj[name] for name, kind in REJECT_FIELDS.items() if type(obj.get(name)) is kind}
    if "reason" in out:
        out["reason"] = out["reason"][:MAX_REASON_CHARS]
    return out or None


def _reject_order(summary: dict[str, Any]) -> tuple[int, int, int]:
    return parse_rfc3339(summary.get("received_at", "")) or 0, summary.get("partition", 0), summary.get("offset", 0)


def latest_rejects(summaries: Sequence[dict[str, Any]], keep: int) -> list[dict[str, Any]]:
    """The `keep` most recent, newest first."""
    return sorted(summaries, key=_reject_order, reverse=True)[:keep]


# ------------------------------------------------------------------ states


def level_backlog(age_s: float | None) -> str:
    if age_s is None:
        return WARN
    return OK if age_s <= BACKLOG_WARN_S else WARN if age_s <= BACKLOG_BAD_S else BAD


def level_lag(records: float | None) -> str:
    if records is None:
        return WARN
    return OK if records < LAG_WARN else WARN if records < LAG_BAD else BAD


def level_health(state: str) -> str:
    return {READY: OK, NOT_READY: WARN}.get(state, BAD)


def worst(levels: Sequence[str]) -> str:
    return BAD if BAD in levels else WARN if WARN in levels else OK


# ------------------------------------------------------------------ the view


def _pick_before(snapshots: Sequence[Snapshot], service: str, window: float) -> Snapshot | None:
    """The oldest snapshot within `window` seconds of the latest that has this service."""
    latest = snapshots[-1]
    chosen = None
    for snap in reversed(snapshots[:-1]):
        if latest.at - snap.at > window:
            break
        if service in snap.services:
            chosen = snap
    return chosen


def _throughput(before: Metrics, after: Metrics, seconds: float) -> dict[str, Any]:
    def per_s(name: str, **labels: str) -> float:
        return increase(before, after, name, **labels) / seconds

    posts_in = per_s("consentry_ingest_posts_in_total", source="posts")
    dropped = {reason: per_s("consentry_ingest_dropped_total", reason=reason) for reason in DROP_REASONS}
    return {
        "posts_in": posts_in,
        "accepted": per_s("consentry_ingest_accepted_total"),
        "dropped": sum(dropped.values()),
        "dropped_by_reason": dropped,
        "rejected": per_s("consentry_ingest_rejected_total"),
        "deferred": per_s("consentry_ingest_deferred_total"),
        "released": per_s("consentry_ingest_deferred_released_total"),
    }


def _totals(ingest: Metrics, sink: Metrics, consent: Metrics, gateway: Metrics) -> dict[str, Any]:
    def v(metrics: Metrics, name: str, **labels: str) -> float | None:
        return value(metrics, name, **labels) if metrics else None

    return {
        "posts_in": v(ingest, "consentry_ingest_posts_in_total", source="posts"),
        "accepted": v(ingest, "consentry_ingest_accepted_total"),
        "dropped_by_reason": {reason: (v(ingest, "consentry_ingest_dropped_total", reason=reason) or 0.0) if ingest else None for reason in DROP_REASONS},
        "rejected_by_reason": by_label(ingest, "consentry_ingest_rejected_total", "reason") if ingest else {},
        "rejected": v(ingest, "consentry_ingest_rejected_total"),
        "purge_markers": v(ingest, "consentry_ingest_purge_markers_total"),
        "stored": v(sink, "consentry_sink_rows_appended_total"),
        "purges": v(sink, "consentry_sink_purges_total"),
        "rows_purged": v(sink, "consentry_sink_rows_purged_total"),
        "objections": v(gateway, "consentry_gateway_objections_total", kind="object"),
        "withdrawals": v(gateway, "consentry_gateway_objections_total", kind="withdraw"),
        "consent_users": v(consent, "consentry_consent_users"),
    }


def _notices(ingest: Metrics) -> dict[str, Any]:
    """Posts waiting for their author's notice grace period (deferred: not dropped)."""

    def v(name: str) -> float | None:
        return value(ingest, name) if ingest else None

    full = v("consentry_ingest_deferred_full")
    return {
        "waiting_posts": v("consentry_ingest_deferred_posts"),
        "waiting_users": v("consentry_ingest_users_waiting_for_notice"),
        "deferred": v("consentry_ingest_deferred_total"),
        "released": v("consentry_ingest_deferred_released_total"),
        "dropped": v("consentry_ingest_deferred_dropped_total"),
        "bytes": v("consentry_ingest_deferred_bytes"),
        "full": bool(full),
        # Full: newly deferred posts wait unindexed (not released) until releases free room.
        "level": WARN if full else OK,
    }


def _latency(snapshots: Sequence[Snapshot], name: str) -> dict[str, Any]:
    latest = snapshots[-1].services.get("consent", {})
    now = buckets(latest, name)
    window = "since start"
    observed = now
    before = _pick_before(snapshots, "consent", LATENCY_WINDOW_S)
    if before is not None:
        recent = bucket_increase(buckets(before.services["consent"], name), now)
        if recent and recent[-1][1] > 0:
            observed, window = recent, f"last {round(snapshots[-1].at - before.at)} s"
    count = observed[-1][1] if observed else 0
    return {
        "count": count,
        "window": window,
        **{f"p{round(q * 100)}": histogram_quantile(q, observed) for q in QUANTILES},
    }


def _lag(latest: Snapshot) -> list[dict[str, Any]]:
    out = []
    for service in ("ingest", "consent", "sink"):
        metrics = latest.services.get(service)
        series = metrics.get("consentry_consumer_lag", {}) if metrics else {}
        partitions = sorted(
            ({"topic": dict(s).get("topic", ""), "partition": int(dict(s).get("partition", "0")), "lag": v} for s, v in series.items() if dict(s).get("service") == service),
            key=lambda p: (p["topic"], p["partition"]),
        )
        total = sum(p["lag"] for p in partitions) if metrics else None
        out.append({"service": service, "total": total, "level": level_lag(total), "partitions": partitions})
    return out


def _history(snapshots: Sequence[Snapshot]) -> dict[str, list[Any]]:
    points: dict[str, list[Any]] = {"ago_s": [], "posts_in": [], "accepted": [], "dropped": [], "rejected": []}
    latest = snapshots[-1]
    pairs = list(zip(snapshots, snapshots[1:], strict=False))[-HISTORY_POINTS:]
    for before, after in pairs:
        b, a = before.services.get("ingest"), after.services.get("ingest")
        seconds = after.at - before.at
        if b is None or a is None or seconds <= 0:
            continue
        t = _throughput(b, a, seconds)
        points["ago_s"].append(round(latest.at - after.at, 1))
        for key in ("posts_in", "accepted", "dropped", "rejected"):
            points[key].append(round(t[key], 2))
    return points


def _proof(sink: Metrics, now_us: int) -> dict[str, Any]:
    """The safety net and the lineage: the last reconciliation pass (rows it deleted are leaks
    it caught: must be 0) and the training runs recorded and found to have read purged users."""

    def v(name: str) -> float | None:
        return value(sink, name) if sink else None

    last_run = v("consentry_reconcile_last_run_timestamp_seconds")
    last_rows = v("consentry_reconcile_last_rows_purged")
    return {
        "reconcile": {
            "runs": v("consentry_reconcile_runs_total"),
            "last_ago_s": (now_us / 1e6 - last_run) if last_run else None,
            "last_users": v("consentry_reconcile_last_users"),
            "last_rows_purged": last_rows,
            "rows_purged_total": v("consentry_reconcile_rows_purged_total"),
            "level": BAD if last_rows else OK,
        },
        "lineage": {
            "snapshots": v("consentry_sink_lineage_reads"),
            "purged_users_trained_on": v("consentry_sink_purges_trained_on_total"),
        },
    }


def build_view(snapshots: Sequence[Snapshot], health: Sequence[Health], rejects: Sequence[dict[str, Any]], now_us: int) -> dict[str, Any]:
    latest = snapshots[-1]
    ingest = latest.services.get("ingest", {})
    sink = latest.services.get("sink", {})
    consent = latest.services.get("consent", {})
    gateway = latest.services.get("gateway", {})

    throughput = None
    before = _pick_before(snapshots, "ingest", RATE_WINDOW_S)
    if before is not None and ingest:
        seconds = latest.at - before.at
        throughput = {**_throughput(before.services["ingest"], ingest, seconds), "window_s": round(seconds, 1)}
        decided = throughput["accepted"] + throughput["dropped"]
        throughput["drop_share"] = throughput["dropped"] / decided if decided > 0 else None
        throughput["reject_share"] = throughput["rejected"] / throughput["posts_in"] if throughput["posts_in"] > 0 else None

    age = value(consent, "consentry_purge_backlog_age_seconds") if consent else None
    backlog = {
        "age_s": age,
        "objections": value(consent, "consentry_purge_backlog_objections") if consent else None,
        "level": level_backlog(age),
    }
    last_vacuum = value(sink, "consentry_sink_last_vacuum_timestamp") if sink else None
    last_purge = value(sink, "consentry_sink_last_purge_timestamp") if sink else None
    store = {
        "version": value(sink, "consentry_sink_table_version") if sink else None,
        "bytes": value(sink, "consentry_sink_table_bytes") if sink else None,
        "files": value(sink, "consentry_sink_table_files") if sink else None,
        "vacuum_runs": value(sink, "consentry_vacuum_runs_total") if sink else None,
        "last_vacuum_ago_s": (now_us / 1e6 - last_vacuum) if last_vacuum else None,
        "last_purge_ago_s": (now_us / 1e6 - last_purge) if last_purge else None,
    }
    lag = _lag(latest)
    notices = _notices(ingest)
    proof = _proof(sink, now_us)
    services = [{"service": h.service, "state": h.state, "detail": h.detail, "level": level_health(h.state)} for h in health]
    overall = worst([s["level"] for s in services] + [backlog["level"], notices["level"], proof["reconcile"]["level"]] + [entry["level"] for entry in lag])
    return {
        "generated_at_us": now_us,
        "overall": overall,
        "health": services,
        "throughput": throughput,
        "totals": _totals(ingest, sink, consent, gateway),
        "latency": {
            "enforce": _latency(snapshots, "consentry_objection_enforce_seconds"),
            "purge": _latency(snapshots, "consentry_objection_purge_seconds"),
        },
        "backlog": backlog,
        "notices": notices,
        "lag": lag,
        "store": store,
        "proof": proof,
        "history": _history(snapshots),
        "rejects": latest_rejects(rejects, len(rejects)),
    }
