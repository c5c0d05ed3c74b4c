"""The vacuum record that `consentry vacuum` leaves beside the table for the sink to show."""

from __future__ import annotations

from services.sink.store import MemoryTrainingStore
from services.sink.vacuum_record import VacuumRecord, decode_record, encode_record, next_record


def test_every_run_counts_even_when_it_removed_nothing() -> None:
    first = next_record(None, files_removed=3, version=10, ended_at_us=1_000)
    second = next_record(first, files_removed=0, version=12, ended_at_us=2_000)
    assert first == VacuumRecord(runs=1, last_ended_at_us=1_000, last_files_removed=3, last_version=10)
    assert second == VacuumRecord(runs=2, last_ended_at_us=2_000, last_files_removed=0, last_version=12)


def test_the_record_round_trips_and_garbage_reads_as_none() -> None:
    record = VacuumRecord(4, 123, 5, 9)
    assert decode_record(encode_record(record)) == record
    for garbage in (b"", b"not json", b"[]", b'{"runs": "x"}', b'{"runs": 1}'):
        assert decode_record(garbage) is None


def test_the_memory_store_keeps_the_same_record() -> None:
    store = MemoryTrainingStore()
    assert store.vacuum_record() is None
    store.vacuum()
    store.vacuum()
    record = store.vacuum_record()
    assert record is not None and record.runs == 2
