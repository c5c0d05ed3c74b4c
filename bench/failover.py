"""12. Recovery of the consent table after a worker dies, with and without a standby copy.

    python -m bench.failover [--users 1000000]

The same table as step 7 (N users' rows on the changelog, the group's offsets at the end of
its sources), served by two consent workers. The one to be killed starts first, alone, and
recovers every partition; the survivor joins and takes half of them, so it never held the
victim's partitions as their owner: whatever copy of them is on its disk is a standby copy.
With `CONSENTRY_CONSENT_STANDBY_REPLICAS=1` each worker also keeps a warm copy of the other's
half; the kill waits until the survivor's copies are caught up, observed, not assumed: faust's
persisted changelog offset of every partition in the survivor's RocksDB (read-only) against
the changelog's end offsets, within the records faust keeps in memory before applying a
standby batch (`STANDBY_BUFFER`). Without a standby the same reading must show the survivor
holding only its own half (else the run would not replay and is refused).

Then the victim is killed (SIGKILL); timed: from the kill until the survivor answers a look-up
of users of every partition (`/v1/user/status`, 200, `purged`). That includes the group
noticing the death (the session timeout, CONSENTRY_SESSION_TIMEOUT_MS, 10 s by default) and
the rebalance; without a standby the survivor then replays the victim's changelog partitions
(the victim's `consentry_consent_users` before the kill: the users replayed).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import time
from pathlib import Path

import httpx
from aiokafka import TopicPartition

from bench.common import PARTITIONS, commit_to_end, enforced_state, produce, run
from bench.memory import _messages
from bench.system import Services
from consentry.domain.model import ObjectionEvent
from consentry.partitioning import home_partition
from consentry.patches import true_end_offsets
from consentry.timeutil import now_us
from consentry.wire import encode_objection

# faust applies a standby's changelog records in batches of the table's standby_buffer_size
# (its recovery_buffer_size, 1,000 by default); fewer wait in memory, replayed at take-over.
STANDBY_BUFFER = 1000
OFFSET_KEY = b"__faust\0offset__"  # faust.stores.rocksdb.Store.offset_key
TABLE_DB = re.compile(r"^consent-(\d+)\.db$")  # faust's RocksDB directory per table partition


def _answers(url: str, user: str) -> bool:
    try:
        response = httpx.get(f"{url}/v1/user/status", params={"user_id": user}, timeout=5)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.json().get("status") == "purged"


def probes_per_partition(users: int, per_partition: int = 2) -> list[str]:
    """The first `per_partition` users of each home partition (of `user-00000000`...)."""
    found: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    for i in range(users):
        user = f"user-{i:08d}"
        bucket = found[home_partition(user, PARTITIONS)]
        if len(bucket) < per_partition:
            bucket.append(user)
            if all(len(b) == per_partition for b in found.values()):
                break
    return [u for b in found.values() for u in b]


def held_offsets(data_dir: Path) -> dict[int, int]:
    """{partition: next changelog offset to apply} of each copy of the consent table on a
    worker's disk (faust's persisted offset + 1), read while the worker runs (read-only)."""
    from rocksdict import AccessType, Rdict

    held = {}
    for path in data_dir.rglob("consent-*.db"):
        found = TABLE_DB.match(path.name)
        if not found or not path.is_dir():
            continue
        db = Rdict(str(path), access_type=AccessType.read_only())
        try:
            offset = db.get(OFFSET_KEY)
        finally:
            db.close()
        if offset is not None:
            held[int(found.group(1))] = int(offset) + 1
    return held


def records_behind(held: dict[int, int], ends: dict[int, int]) -> int:
    """Changelog records of all partitions a worker's copies have not applied (none held: all)."""
    return sum(max(0, end - held.get(p, 0)) for p, end in ends.items())


def standby_caught_up(held: dict[int, int], ends: dict[int, int]) -> bool:
    """Every partition held (each copy applied at least one standby batch) and, all partitions
    together, fewer records behind the changelog than faust keeps in memory before applying a
    standby batch. The second clause alone passes a table smaller than one batch with no copy."""
    return len(held) == len(ends) and records_behind(held, ends) < STANDBY_BUFFER


def _consent_users(url: str) -> int:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.search(r"^consentry_consent_users (\S+)$", text, re.M)
    if not found:
        raise AssertionError("consentry_consent_users not on /metrics")
    return int(float(found.group(1)))


def _wait(condition, what: str, timeout: float, pause: float = 0.5) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what} not within {timeout:.0f} s")
        time.sleep(pause)
    return time.monotonic() - started


def scenario(bootstrap: str, work: Path, users: int, standby: int, timeout: float = 1800) -> dict:
    if standby and users < 4 * STANDBY_BUFFER:
        raise ValueError(f"{users:,} users: too few to see the standby copies on disk (faust applies them {STANDBY_BUFFER:,} records at a time)")
    load_start = os.getloadavg()[0]
    at = now_us() - 86_400_000_000
    event = lambda user: ObjectionEvent(f"obj-{user}", user, "object", at, "import")  # noqa: E731
    prefix = f"fo{standby}-{os.getpid()}-"
    env = {"CONSENTRY_CONSENT_STANDBY_REPLICAS": str(standby), "CONSENTRY_LOG_LEVEL": "WARNING"}
    with Services(bootstrap, prefix, work / f"failover{standby}-survivor", env) as survivor, \
            Services(bootstrap, prefix, work / f"failover{standby}-victim", env) as victim:
        survivor.create_topics()
        topics = survivor.topics
        run(produce(bootstrap, topics.objections, _messages(users, lambda u: encode_objection(event(u))), chunk=50_000))
        run(produce(bootstrap, topics.consent_state, _messages(users, lambda u: enforced_state(event(u), at)), chunk=50_000))
        run(commit_to_end(bootstrap, topics.group("consent"), [topics.objections, topics.receipts, topics.notices]))
        changelog = [TopicPartition(topics.consent_state, p) for p in range(PARTITIONS)]
        ends = {tp.partition: end for tp, end in run(true_end_offsets(bootstrap, changelog)).items()}
        victim.start("consent", timeout=timeout)  # alone: it owns and recovers every partition
        survivor.start("consent", timeout=timeout)  # takes half of them over
        probes = probes_per_partition(users)
        _wait(lambda: all(_answers(survivor.url("consent"), u) for u in probes), "both workers answering for every partition", timeout, 1)
        survivor_data = survivor.root / "var"
        catch_up = 0.0
        if standby:
            catch_up = _wait(lambda: standby_caught_up(held_offsets(survivor_data), ends), "the survivor's standby copies caught up", timeout)
        held = held_offsets(survivor_data)
        behind = records_behind(held, ends)
        if not standby and len(held) == PARTITIONS:
            raise AssertionError(f"without a standby the survivor holds every partition ({held}): it would not replay the victim's")
        victim_users = _consent_users(victim.url("consent"))
        killed_at = time.monotonic()
        os.killpg(victim.pid("consent"), signal.SIGKILL)
        _wait(lambda: all(_answers(survivor.url("consent"), u) for u in probes), "the survivor answering for the victim's users", timeout, 0.2)
        seconds = time.monotonic() - killed_at
    return {
        "users": users, "standby": standby, "seconds": seconds, "victim_users": victim_users,
        "partitions_held": len(held), "records_behind": behind, "catch_up_seconds": catch_up,
        "load": [load_start, os.getloadavg()[0]],
    }


def run_failover(bootstrap: str, work: Path, users: int) -> dict:
    without = scenario(bootstrap, work, users, 0)
    with_standby = scenario(bootstrap, work, users, 1)
    return {
        "users": users, "partitions": PARTITIONS,
        "without_standby_seconds": without["seconds"], "with_standby_seconds": with_standby["seconds"],
        "replayed_users": without["victim_users"],
        "without": without, "with": with_standby,
        "load": [without["load"][0], with_standby["load"][1]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    args = parser.parse_args()
    from bench.common import on_embedded_broker

    on_embedded_broker("consentry-failover-", lambda bootstrap, work: run_failover(bootstrap, work, args.users))

if __name__ == "__main__":
    main()
