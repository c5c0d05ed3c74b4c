"""The audit chain's rules (consentry.domain.audit): records link by hash, and verification
names the first broken link whatever was changed, removed or inserted."""

from __future__ import annotations

import json

import orjson

from consentry.domain.audit import GENESIS, ChainHead, Verification, Window, canonical, digest, percentiles, report_figures, verify_partition


def chain(n: int) -> list[bytes]:
    head = ChainHead()
    return [head.link({"fact": "received", "user_id": f"u-{i}", "at_us": i, "count": i})[1] for i in range(n)]


def verify(raws: list[bytes]) -> Verification:
    result = Verification()
    verify_partition(3, list(enumerate(raws)), result)
    return result


def test_an_intact_chain_verifies_and_its_anchor_is_the_last_hash() -> None:
    raws = chain(5)
    result = verify(raws)
    assert result.ok and result.records == 5
    assert result.partitions == {3: digest(raws[-1])}
    assert json.loads(raws[0])["prev"] == GENESIS


def test_canonical_bytes_are_orjsons_sorted_form() -> None:
    record = {"b": [1, "é"], "a": "x\n\u2028", "seq": 2}
    assert canonical(record) == orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def test_a_changed_count_is_the_first_broken_link() -> None:
    raws = chain(5)
    tampered = json.loads(raws[2])
    tampered["count"] = 99
    raws[2] = canonical(tampered)
    result = verify(raws)
    assert not result.ok
    assert (result.breaks[0].partition, result.breaks[0].position) == (3, 3)  # the next record no longer links


def test_a_changed_last_record_is_caught_by_its_bytes_or_anchor() -> None:
    raws = chain(3)
    changed = raws[2].replace(b'"count":2', b'"count": 2')  # not canonical
    assert verify(raws[:2] + [changed]).breaks[0].position == 2


def test_a_removed_or_inserted_record_breaks_the_seq() -> None:
    raws = chain(4)
    assert verify(raws[:1] + raws[2:]).breaks[0].position == 1
    assert "seq" in verify(raws[:3] + [raws[1]] + raws[3:]).breaks[0].reason  # an old record replayed later


def test_percentiles_are_nearest_rank() -> None:
    assert percentiles([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) == {"p50": 5, "p90": 9, "p99": 10, "max": 10}
    assert percentiles([])["p50"] is None


def test_report_figures_from_records() -> None:
    day = 86_400_000_000
    t0 = 20_000 * day
    records = [
        {"fact": "received", "user_id": "a", "objection_id": "o1", "kind": "object", "channel": "web", "at_us": t0},
        {"fact": "received", "user_id": "b", "objection_id": "o2", "kind": "object", "channel": "import", "at_us": t0 + day},
        {"fact": "received", "user_id": "c", "objection_id": "o3", "kind": "object", "channel": "web", "at_us": t0 - day},  # outside
        {"fact": "enforced", "user_id": "a", "objection_ids": ["o1"], "at_us": t0 + 2_000_000},
        {"fact": "purged", "user_id": "a", "objection_ids": ["o1"], "at_us": t0 + 5_000_000, "rows_purged": 3},
        {"fact": "purged", "user_id": "c", "objection_ids": ["o3"], "at_us": t0, "rows_purged": 0},  # no rows: no run read them
        {"fact": "run_read", "run_id": "r-early", "version": 1, "at_us": t0 - 2 * day},
        {"fact": "run_read", "run_id": "r-late", "version": 9, "at_us": t0 + 3 * day},
        {"fact": "reconciled", "runs": 1, "rows_purged": 0, "users": 2, "rows_scanned": 10, "at_us": t0 + day},
        {"fact": "dropped", "user_id": "a", "day": "x", "reason": "objected", "count": 4, "at_us": t0 + 10},
    ]
    f = report_figures(records, Window(t0, t0 + 2 * day), now_us=t0 + 2 * day)
    assert f["objections_received"] == 2
    assert sum(sum(c.values()) for c in f["objections_by_day_and_channel"].values()) == 2
    assert f["time_to_enforced_s"]["p50"] == 2.0 and f["time_to_purged_s"]["p50"] == 5.0
    assert [o["objection_id"] for o in f["not_yet_purged"]] == ["o2"]
    assert f["reconciliation"]["rows_found_last_pass"] == 0
    assert f["posts_dropped_by_reason"] == {"objected": 4}
    # Without the sink's trained_on_runs, every run that read before an objection counts (the safe side).
    assert f["runs_with_users_who_objected_later"] == {"r-early": ["a", "b"]}


def test_a_record_written_twice_by_a_retried_send_is_not_a_break() -> None:
    raws = chain(3)
    result = verify(raws[:2] + [raws[1]] + raws[2:])
    assert result.ok and result.records == 3 and result.duplicates == 1
    assert "written twice" in result.summary()
