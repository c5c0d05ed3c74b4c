"""Importing historical objections: each line validated, reported by number, duplicates
skipped, and every accepted event handed to the publisher (a list here: no broker)."""

import asyncio

import orjson
import pytest

from consentry.domain.model import Invalid, ObjectionEvent
from consentry.importer import MAX_LINE_BYTES, ImportFailed, import_lines, parse_import_line, split_lines
from consentry.timeutil import parse_rfc3339

NOW = parse_rfc3339("2025-06-01T00:00:00Z")


def line(objection_id: str, user: str = "u-1", **extra: object) -> bytes:
    return orjson.dumps({"objection_id": objection_id, "user_id": user, "kind": "object", "received_at": "2021-03-04T05:06:07Z", **extra})


def run(lines, chunk_events: int = 2, fail: bool = False):  # type: ignore[no-untyped-def]
    published: list[list[ObjectionEvent]] = []

    async def publish(events):  # type: ignore[no-untyped-def]
        if fail:
            raise ConnectionError("broker gone")
        published.append(list(events))

    report = asyncio.run(import_lines(publish, lines, NOW, chunk_events=chunk_events))
    return report, published


def test_a_historical_line_keeps_its_date_and_defaults_to_the_import_channel() -> None:
    event = parse_import_line(line("old-1"), NOW)
    assert isinstance(event, ObjectionEvent)
    assert event.received_at_us == parse_rfc3339("2021-03-04T05:06:07Z")
    assert event.channel == "import"
    assert parse_import_line(line("old-2", channel="email"), NOW).channel == "email"  # type: ignore[union-attr]


def test_bad_lines_say_why() -> None:
    assert parse_import_line(b"   ", NOW) is None
    reasons = {
        b"{nope": "invalid_json",
        b"[1, 2]": "not_an_object",
        orjson.dumps({"objection_id": "x", "user_id": "u", "kind": "maybe", "received_at": "2021-01-01T00:00:00Z"}): "bad_value",
        orjson.dumps({"objection_id": "x", "user_id": "u", "kind": "object", "received_at": "yesterday"}): "bad_timestamp",
        orjson.dumps({"objection_id": "x", "user_id": "u", "kind": "object", "received_at": "2030-01-01T00:00:00Z"}): "bad_timestamp",
        orjson.dumps({"user_id": "u", "kind": "object", "received_at": "2021-01-01T00:00:00Z"}): "missing_field",
        b'{"objection_id": "' + b"x" * MAX_LINE_BYTES + b'"}': "too_large",
    }
    for raw, code in reasons.items():
        parsed = parse_import_line(raw, NOW)
        assert isinstance(parsed, Invalid) and parsed.code == code, (raw[:40], parsed)


def test_the_report_counts_lines_and_names_the_rejected_ones() -> None:
    lines = [line("a"), b"not json", line("b"), b"", line("a", user="u-2"), line("c"), b'{"kind": "object"}']
    report, published = run(lines)
    assert (report.lines, report.accepted, report.duplicates, report.rejected_count) == (7, 3, 1, 2)
    assert [n for n, _reason in report.rejected] == [2, 7]
    assert report.rejected[0][1].startswith("invalid_json")
    assert [e.objection_id for chunk in published for e in chunk] == ["a", "b", "c"]
    assert [len(chunk) for chunk in published] == [2, 1]  # handed over in chunks
    assert report.as_dict()["rejected_lines"][1] == {"line": 7, "reason": report.rejected[1][1]}


def test_a_publishing_failure_stops_the_import_with_what_was_read() -> None:
    with pytest.raises(ImportFailed) as failed:
        run([line("a"), line("b"), line("c")], fail=True)
    assert failed.value.report.lines >= 2


def test_a_streamed_body_is_cut_into_lines_whatever_the_chunks() -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for piece in (b'{"a"', b": 1}\n{", b'"b": 2}\n\n', b'{"c": 3}'):
            yield piece

    async def collect():  # type: ignore[no-untyped-def]
        return [x async for x in split_lines(chunks())]

    assert asyncio.run(collect()) == [b'{"a": 1}', b'{"b": 2}', b"", b'{"c": 3}']


def test_an_overlong_streamed_line_is_cut_and_then_rejected_not_buffered() -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        yield b"A" * 50
        yield b"A" * 50
        yield b"B\nnext\n"

    async def collect():  # type: ignore[no-untyped-def]
        return [x async for x in split_lines(chunks(), max_line=60)]

    lines = asyncio.run(collect())
    assert lines == [b"A" * 61, b"next"]
    assert isinstance(parse_import_line(b"x" * (MAX_LINE_BYTES + 1), NOW), Invalid)


# ------------------------------------------------------------------ notices: the same machinery


def notice_line(notice_id: str, user: str = "u-1", **extra: object) -> bytes:
    return orjson.dumps(
        {"notice_id": notice_id, "user_id": user, "notice_version": "v1", "channel": "email", "sent_at": "2025-01-02T03:04:05Z", "country": "FR", **extra}
    )


def test_a_notices_import_reports_lines_the_same_way() -> None:
    from consentry.domain.model import Notice
    from consentry.importer import NOTICES

    published: list[list[Notice]] = []

    async def publish(notices):  # type: ignore[no-untyped-def]
        published.append(list(notices))

    lines = [
        notice_line("n-1"),
        notice_line("n-2", channel="sms"),
        notice_line("n-1", user="u-2"),  # the same notice_id again
        b"",
        notice_line("n-3", sent_at="2030-01-01T00:00:00Z"),  # not sent yet
        notice_line("n-4", country="France"),
        notice_line("n-5", user="u-3", channel="in_app", country="NO"),
    ]
    report = asyncio.run(import_lines(publish, lines, NOW, chunk_events=1, kind=NOTICES))

    assert (report.lines, report.accepted, report.duplicates, report.rejected_count) == (7, 2, 1, 3)
    assert [(n, reason.split(":")[0]) for n, reason in report.rejected] == [(2, "bad_value"), (5, "bad_timestamp"), (6, "bad_value")]
    assert "'sent_at' is in the future" in report.rejected[1][1]
    notices = [n for chunk in published for n in chunk]
    assert [(n.notice_id, n.user_id, n.channel, n.country) for n in notices] == [("n-1", "u-1", "email", "FR"), ("n-5", "u-3", "in_app", "NO")]
    assert notices[0].sent_at_us == parse_rfc3339("2025-01-02T03:04:05Z")
