"""Where the sink reads a partition from: the table's recorded position against the consumer
group's offset and what retention left (services.sink.resume)."""

from __future__ import annotations

from services.sink.resume import Reason, Resume, resume_point


def test_the_table_and_the_group_agree() -> None:
    assert resume_point(table=40, verified=True, committed=40, log_start=0) == Resume(None, 40, 0, Reason.GROUP)


def test_a_crash_between_the_delta_commit_and_the_offset_commit_re_reads_without_applying_again() -> None:
    # The group re-reads 35..39; the table holds them: re-confirmed only.
    assert resume_point(table=40, verified=True, committed=35, log_start=0) == Resume(None, 40, 0, Reason.GROUP)


def test_a_restored_table_replays_from_its_own_position() -> None:
    assert resume_point(table=25, verified=True, committed=40, log_start=0) == Resume(25, 25, 0, Reason.REWIND)


def test_a_table_created_again_empty_replays_everything_left() -> None:
    assert resume_point(table=None, verified=None, committed=40, log_start=0) == Resume(0, 0, 0, Reason.REFILL)
    # Retention already deleted 0..9: they cannot be replayed, and they are counted.
    assert resume_point(table=None, verified=None, committed=40, log_start=10) == Resume(10, 0, 10, Reason.REFILL)


def test_a_new_deployment_starts_at_the_oldest_record_and_misses_nothing() -> None:
    assert resume_point(table=None, verified=None, committed=None, log_start=10) == Resume(None, 0, 0, Reason.NEW)


def test_a_group_that_lost_its_offsets_goes_on_from_the_table() -> None:
    assert resume_point(table=40, verified=True, committed=None, log_start=0) == Resume(40, 40, 0, Reason.TABLE)


def test_positions_of_a_topic_created_again_are_ignored() -> None:
    assert resume_point(table=40, verified=False, committed=3, log_start=0) == Resume(None, 0, 0, Reason.RECREATED_TOPIC)


def test_records_retention_deleted_are_reported_and_the_rest_replayed() -> None:
    # A restored table at 25, the group at 40, retention now starts at 30: 25..29 are gone.
    assert resume_point(table=25, verified=None, committed=40, log_start=30) == Resume(30, 25, 5, Reason.GAP)
    # The sink itself was down past retention (the marker lost after `enforced`): the same.
    assert resume_point(table=25, verified=None, committed=25, log_start=30) == Resume(30, 25, 5, Reason.GAP)


def test_a_table_exactly_at_the_oldest_record_misses_nothing() -> None:
    assert resume_point(table=30, verified=None, committed=40, log_start=30) == Resume(30, 30, 0, Reason.REWIND)
    assert resume_point(table=30, verified=None, committed=30, log_start=30) == Resume(None, 30, 0, Reason.GROUP)
