"""What the dashboard shows, from successive scrapes: throughput, shares, percentiles,
green/amber/red, and reject summaries that never carry a post's text."""

from __future__ import annotations

import math

import orjson

from consentry.domain.model import Invalid
from consentry.wire import encode_rejection
from consentry.scrape import parse_metrics
from services.gateway.console.view import (
    BAD,
    DOWN,
    NOT_READY,
    OK,
    READY,
    WARN,
    Health,
    Snapshot,
    build_view,
    latest_rejects,
    level_backlog,
    level_lag,
    summarize_rejection,
)

NOW_US = 1_800_000_000 * 1_000_000
HEALTHY = [Health("gateway", READY, "broker reachable"), Health("consent", READY, ""), Health("ingest", READY, ""), Health("sink", READY, "")]


def ingest(posts: int, accepted: int, objected: int, not_public: int, rejected: int, lag: int = 0) -> dict:
    return parse_metrics(
        f"""
# TYPE consentry_ingest_posts_in_total counter
consentry_ingest_posts_in_total{{source="posts"}} {posts}
consentry_ingest_posts_in_total{{source="posts_by_user"}} 999
# TYPE consentry_ingest_accepted_total counter
consentry_ingest_accepted_total {accepted}
# TYPE consentry_ingest_dropped_total counter
consentry_ingest_dropped_total{{reason="objected"}} {objected}
consentry_ingest_dropped_total{{reason="not_public"}} {not_public}
# TYPE consentry_ingest_rejected_total counter
consentry_ingest_rejected_total{{reason="invalid_json"}} {rejected}
# TYPE consentry_consumer_lag gauge
consentry_consumer_lag{{service="ingest",topic="posts",partition="0"}} {lag}
consentry_consumer_lag{{service="ingest",topic="posts",partition="1"}} 0
"""
    )


def consent(enforced: tuple[int, int, int], backlog_age: float, waiting: int) -> dict:
    under_100ms, under_1s, total = enforced
    return parse_metrics(
        f"""
# TYPE consentry_objection_enforce_seconds histogram
consentry_objection_enforce_seconds_bucket{{le="0.1"}} {under_100ms}
consentry_objection_enforce_seconds_bucket{{le="1.0"}} {under_1s}
consentry_objection_enforce_seconds_bucket{{le="+Inf"}} {total}
consentry_objection_enforce_seconds_count {total}
consentry_objection_enforce_seconds_sum 1
# TYPE consentry_purge_backlog_age_seconds gauge
consentry_purge_backlog_age_seconds {backlog_age}
# TYPE consentry_purge_backlog_objections gauge
consentry_purge_backlog_objections {waiting}
# TYPE consentry_consent_users gauge
consentry_consent_users 42
"""
    )


SINK = parse_metrics(
    """
# TYPE consentry_sink_purges_total counter
consentry_sink_purges_total 3
# TYPE consentry_sink_rows_purged_total counter
consentry_sink_rows_purged_total 17
# TYPE consentry_sink_table_bytes gauge
consentry_sink_table_bytes 2048
# TYPE consentry_sink_last_vacuum_timestamp gauge
consentry_sink_last_vacuum_timestamp 1799999940
# TYPE consentry_vacuum_runs_total counter
consentry_vacuum_runs_total 2
# TYPE consentry_reconcile_runs_total counter
consentry_reconcile_runs_total 4
# TYPE consentry_reconcile_rows_purged_total counter
consentry_reconcile_rows_purged_total 0
# TYPE consentry_reconcile_last_run_timestamp_seconds gauge
consentry_reconcile_last_run_timestamp_seconds 1799999700
# TYPE consentry_reconcile_last_rows_purged gauge
consentry_reconcile_last_rows_purged 0
# TYPE consentry_reconcile_last_users gauge
consentry_reconcile_last_users 1200
# TYPE consentry_sink_lineage_reads gauge
consentry_sink_lineage_reads 3
# TYPE consentry_sink_purges_trained_on_total counter
consentry_sink_purges_trained_on_total 5
"""
)


def two_scrapes() -> list[Snapshot]:
    return [
        Snapshot(100.0, NOW_US - 5_000_000, {"ingest": ingest(1000, 700, 100, 190, 10), "consent": consent((1, 2, 2), 0, 0), "sink": SINK}),
        Snapshot(105.0, NOW_US, {"ingest": ingest(2000, 1400, 300, 290, 20), "consent": consent((3, 5, 6), 2.5, 1), "sink": SINK}),
    ]


def test_throughput_is_per_second_over_the_last_scrapes() -> None:
    view = build_view(two_scrapes(), HEALTHY, [], NOW_US)
    flow = view["throughput"]
    assert flow["posts_in"] == 200.0  # posts from upstream only; internal reroutes are not "in"
    assert flow["accepted"] == 140.0
    assert flow["dropped_by_reason"] == {"objected": 40.0, "not_public": 20.0, "minor": 0.0}
    assert flow["dropped"] == 60.0
    assert flow["rejected"] == 2.0
    assert math.isclose(flow["drop_share"], 60 / 200)
    assert math.isclose(flow["reject_share"], 2 / 200)
    assert view["totals"]["accepted"] == 1400
    assert view["totals"]["dropped_by_reason"]["objected"] == 300
    assert view["history"]["posts_in"] == [200.0]


def test_one_scrape_is_not_enough_for_a_rate() -> None:
    view = build_view(two_scrapes()[-1:], HEALTHY, [], NOW_US)
    assert view["throughput"] is None
    assert view["totals"]["posts_in"] == 2000


def test_latency_percentiles_cover_the_recent_objections() -> None:
    view = build_view(two_scrapes(), HEALTHY, [], NOW_US)
    enforce = view["latency"]["enforce"]
    # 4 new observations: 2 under 100 ms, 1 more under 1 s, 1 above
    assert enforce["count"] == 4 and enforce["window"] == "last 5 s"
    assert math.isclose(enforce["p50"], 0.1)
    assert enforce["p99"] == 1.0
    # no objection enforced in the window: fall back to everything since the start
    quiet = [Snapshot(100.0, 0, {"consent": consent((3, 5, 6), 0, 0)}), Snapshot(105.0, 0, {"consent": consent((3, 5, 6), 0, 0)})]
    since_start = build_view(quiet, HEALTHY, [], NOW_US)["latency"]["enforce"]
    assert since_start["window"] == "since start" and since_start["count"] == 6
    assert since_start["p50"] == 0.1


def test_all_green_when_healthy_caught_up_and_purging() -> None:
    view = build_view(two_scrapes(), HEALTHY, [], NOW_US)
    assert view["overall"] == OK
    assert view["backlog"] == {"age_s": 2.5, "objections": 1, "level": OK}
    ingest_lag, consent_lag, _sink_lag = view["lag"]
    assert ingest_lag["total"] == 0 and ingest_lag["level"] == OK and len(ingest_lag["partitions"]) == 2
    assert consent_lag["total"] == 0 and consent_lag["partitions"] == []  # answering, no partition assigned


def test_lag_far_behind_or_unknown_is_not_green() -> None:
    scrapes = two_scrapes()
    scrapes[-1].services["ingest"] = ingest(2000, 1400, 300, 290, 20, lag=80_000)
    del scrapes[-1].services["sink"]  # the sink did not answer this scrape
    ingest_lag, _consent_lag, sink_lag = build_view(scrapes, HEALTHY, [], NOW_US)["lag"]
    assert (ingest_lag["total"], ingest_lag["level"]) == (80_000, BAD)
    assert (sink_lag["total"], sink_lag["level"]) == (None, WARN)


def test_a_stuck_purge_or_a_down_service_turns_the_page_red() -> None:
    scrapes = two_scrapes()
    scrapes[-1].services["consent"] = consent((3, 5, 6), 3600, 4)
    assert build_view(scrapes, HEALTHY, [], NOW_US)["overall"] == BAD
    sick = [Health("gateway", READY, ""), Health("consent", READY, ""), Health("ingest", DOWN, "unreachable"), Health("sink", NOT_READY, "")]
    view = build_view(two_scrapes(), sick, [], NOW_US)
    assert view["overall"] == BAD
    assert [h["level"] for h in view["health"]] == [OK, OK, BAD, WARN]


def test_levels() -> None:
    assert (level_backlog(0), level_backlog(300), level_backlog(3600), level_backlog(None)) == (OK, WARN, BAD, WARN)
    assert (level_lag(10), level_lag(5_000), level_lag(10**6), level_lag(None)) == (OK, WARN, BAD, WARN)


def test_the_store_shows_its_size_and_last_vacuum() -> None:
    store = build_view(two_scrapes(), HEALTHY, [], NOW_US)["store"]
    assert store["bytes"] == 2048
    assert store["vacuum_runs"] == 2
    assert store["last_vacuum_ago_s"] == 60


def test_the_proof_shows_the_last_reconciliation_and_the_training_runs() -> None:
    proof = build_view(two_scrapes(), HEALTHY, [], NOW_US)["proof"]
    assert proof["reconcile"] == {"runs": 4, "last_ago_s": 300, "last_users": 1200, "last_rows_purged": 0, "rows_purged_total": 0, "level": OK}
    assert proof["lineage"] == {"snapshots": 3, "purged_users_trained_on": 5}
    # A pass that deleted rows caught a leak: the page says so, and the overall level with it.
    scrapes = two_scrapes()
    leaky = parse_metrics("# TYPE consentry_reconcile_last_rows_purged gauge\nconsentry_reconcile_last_rows_purged 7\n")
    scrapes[-1].services["sink"] = {**SINK, **leaky}
    view = build_view(scrapes, HEALTHY, [], NOW_US)
    assert view["proof"]["reconcile"]["level"] == BAD and view["overall"] == BAD


def test_a_reject_summary_never_carries_the_post_text() -> None:
    raw = b'{"post_id": "p-1", "user_id": "u-1", "text": "my secret diary entry"'
    record = encode_rejection(Invalid("invalid_json", "value is not valid UTF-8 JSON"), "posts", 3, 41, raw, NOW_US)
    assert b"secret diary" in record  # the topic itself keeps the raw value, for operators
    summary = summarize_rejection(record)
    assert summary == {
        "received_at": orjson.loads(record)["received_at"],
        "reason_code": "invalid_json",
        "reason": "invalid_json: value is not valid UTF-8 JSON",
        "topic": "posts",
        "partition": 3,
        "offset": 41,
        "value_bytes": len(raw),
    }
    assert "secret" not in orjson.dumps(summary).decode()


def test_unreadable_reject_records_are_skipped() -> None:
    assert summarize_rejection(b"not json") is None
    assert summarize_rejection(b"[1, 2]") is None
    assert summarize_rejection(None) is None
    # fields of the wrong type are left out rather than shown
    assert summarize_rejection(b'{"reason_code": "x", "partition": "2", "value": "text"}') == {"reason_code": "x"}


def test_the_latest_rejects_come_first() -> None:
    rejects = [
        {"received_at": "2026-01-01T10:00:00Z", "partition": 0, "offset": 1},
        {"received_at": "2026-01-01T10:00:00.500000Z", "partition": 1, "offset": 9},
        {"received_at": "2026-01-01T09:59:59Z", "partition": 0, "offset": 0},
    ]
    assert [r["offset"] for r in latest_rejects(rejects, 2)] == [9, 1]


def with_deferred(metrics: dict, deferred: int, waiting: int, users: int, released: int, dropped: int, full: int = 0) -> dict:
    return {
        **metrics,
        **parse_metrics(
            f"""
# TYPE consentry_ingest_deferred_total counter
consentry_ingest_deferred_total {deferred}
# TYPE consentry_ingest_deferred_posts gauge
consentry_ingest_deferred_posts {waiting}
# TYPE consentry_ingest_users_waiting_for_notice gauge
consentry_ingest_users_waiting_for_notice {users}
# TYPE consentry_ingest_deferred_released_total counter
consentry_ingest_deferred_released_total {released}
# TYPE consentry_ingest_deferred_dropped_total counter
consentry_ingest_deferred_dropped_total {dropped}
# TYPE consentry_ingest_deferred_bytes gauge
consentry_ingest_deferred_bytes 4096
# TYPE consentry_ingest_deferred_full gauge
consentry_ingest_deferred_full {full}
"""
        ),
    }


def test_posts_waiting_for_their_notice_are_shown_apart_from_drops() -> None:
    scrapes = two_scrapes()
    scrapes[0].services["ingest"] = with_deferred(scrapes[0].services["ingest"], 50, 50, 5, 0, 0)
    scrapes[1].services["ingest"] = with_deferred(scrapes[1].services["ingest"], 100, 70, 6, 25, 5)
    view = build_view(scrapes, HEALTHY, [], NOW_US)

    assert view["notices"] == {
        "waiting_posts": 70, "waiting_users": 6, "deferred": 100, "released": 25, "dropped": 5, "bytes": 4096, "full": False, "level": OK,
    }
    assert view["throughput"]["deferred"] == 10.0 and view["throughput"]["released"] == 5.0
    assert view["throughput"]["dropped"] == 60.0  # deferred posts are not drops
    assert view["overall"] == OK


def test_deferred_posts_filling_their_memory_bound_need_attention() -> None:
    scrapes = two_scrapes()
    scrapes[1].services["ingest"] = with_deferred(scrapes[1].services["ingest"], 100, 70, 6, 25, 5, full=1)
    view = build_view(scrapes, HEALTHY, [], NOW_US)
    assert view["notices"]["full"] is True and view["notices"]["level"] == WARN
    assert view["overall"] == WARN
