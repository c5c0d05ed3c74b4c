"""The consent table's class: faust's Table, whose changelog records carry the trace context of
the event that wrote them (W3C `traceparent`, consentry/tracing.py), so ingest continues an
objection's trace from the changelog. faust-streaming 0.15.3's `Table.send_changelog`, with
headers; without a current span `tracing.headers()` is empty and the record is as before.
consentry.patches.check_versions refuses another faust version before this runs."""

from __future__ import annotations

from typing import Any

import faust

from consentry import tracing


class ConsentTable(faust.Table):
    def send_changelog(  # type: ignore[override]
        self, partition: int | None, key: Any, value: Any, key_serializer: Any = None, value_serializer: Any = None
    ) -> Any:
        return self.changelog_topic.send_soon(
            key=key,
            value=value,
            partition=partition,
            headers=tracing.headers() or None,
            key_serializer=key_serializer if key_serializer is not None else self.key_serializer,
            value_serializer=value_serializer if value_serializer is not None else self.value_serializer,
            callback=self._on_changelog_sent,
            eager_partitioning=True,  # the final partition number is ready in ret.message.partition
        )
