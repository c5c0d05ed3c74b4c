"""7. Memory with N users in the consent table.

N objection events are published, and the consent table's changelog as the consent
service leaves it once they were applied, enforced and purged (the same bytes its domain
code writes; the consent group's offsets are committed at the end of `objections`, as
after a run). Then the consent worker starts and recovers the table from the changelog,
and the ingest worker loads its view of it; the RSS of each is read once ready.

(Applying 1M objections through the faust agent itself takes longer than `make bench`
may run: see docs/benchmarks.md.)
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from bench.common import commit_to_end, enforced_state, produce, rss_mib, run
from bench.system import Services
from consentry.domain.model import ObjectionEvent
from consentry.wire import encode_objection
from consentry.timeutil import now_us

TEMPLATE_USER = "user-TEMPLATE9"


def _messages(count: int, encode) -> list[tuple[bytes, bytes]]:  # type: ignore[no-untyped-def]
    """`encode(template_user)` once, then the user's name swapped in: the same bytes, 1M times fast."""
    template = encode(TEMPLATE_USER)
    marker = TEMPLATE_USER.encode()
    out = []
    for i in range(count):
        user = f"user-{i:08d}".encode()  # same length as the template
        out.append((user, template.replace(marker, user)))
    return out


def run_memory(bootstrap: str, work: Path, users: int) -> dict:
    at = now_us() - 86_400_000_000
    event = lambda user: ObjectionEvent(f"obj-{user}", user, "object", at, "import")  # noqa: E731
    with Services(bootstrap, "mem-", work / "memory") as services:
        services.create_topics()
        topics = services.topics
        started = time.perf_counter()
        run(produce(bootstrap, topics.objections, _messages(users, lambda u: encode_objection(event(u))), chunk=50_000))
        run(produce(bootstrap, topics.consent_state, _messages(users, lambda u: enforced_state(event(u), at)), chunk=50_000))
        run(commit_to_end(bootstrap, topics.group("consent"), [topics.objections, topics.receipts]))
        publish_seconds = time.perf_counter() - started

        services.start("consent", wait=False)
        consent_ready = services.wait_ready("consent", timeout=600)
        consent_rss = rss_mib(services.pid("consent"), children=True)
        sample = httpx.get(f"{services.url('consent')}/v1/user/status", params={"user_id": f"user-{users - 1:08d}"}, timeout=10).json()

        services.start("ingest", wait=False)
        ingest_ready = services.wait_ready("ingest", timeout=600)
        ingest_rss = rss_mib(services.pid("ingest"), children=True)
        consent_rss = max(consent_rss, rss_mib(services.pid("consent"), children=True))
    if sample.get("status") != "purged":
        raise AssertionError(f"the consent table does not hold the last user: {sample}")
    return {
        "users": users,
        "publish_seconds": publish_seconds,
        "consent_ready_seconds": consent_ready,
        "consent_rss_mib": consent_rss,
        "ingest_ready_seconds": ingest_ready,
        "ingest_rss_mib": ingest_rss,
    }


