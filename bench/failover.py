"""9. Recovery of the consent table after a worker dies, with and without a standby copy.

    python -m bench.failover [--users 1000000]

The same table as step 7 (N users' rows on the changelog, the group's offsets at the end of
its sources), served by two consent workers, each the owner of half the partitions. With
`CONSENTRY_CONSENT_STANDBY_REPLICAS=1` each also keeps a warm copy of the other's half. Once
both are ready (and, with standbys, their copies caught up), one is killed (SIGKILL); timed:
from the kill until the survivor answers a look-up of a user of the dead worker's half
(`/v1/user/status`, 200). That includes the group noticing the death (the session timeout,
CONSENTRY_SESSION_TIMEOUT_MS, 10 s by default) and the rebalance; without a standby, the
survivor then replays the dead worker's changelog partitions.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

import httpx

from bench.common import PARTITIONS, commit_to_end, enforced_state, produce, run
from bench.memory import _messages
from bench.system import Services
from consentry.domain.model import ObjectionEvent
from consentry.timeutil import now_us
from consentry.wire import encode_objection


def _answers(url: str, user: str) -> bool:
    try:
        response = httpx.get(f"{url}/v1/user/status", params={"user_id": user}, timeout=5)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.json().get("status") == "purged"


def scenario(bootstrap: str, work: Path, users: int, standby: int) -> dict:
    at = now_us() - 86_400_000_000
    event = lambda user: ObjectionEvent(f"obj-{user}", user, "object", at, "import")  # noqa: E731
    prefix = f"fo{standby}-"
    env = {"CONSENTRY_CONSENT_STANDBY_REPLICAS": str(standby), "CONSENTRY_LOG_LEVEL": "WARNING"}
    with Services(bootstrap, prefix, work / f"failover{standby}a", env) as first, \
            Services(bootstrap, prefix, work / f"failover{standby}b", env) as second:
        first.create_topics()
        topics = first.topics
        run(produce(bootstrap, topics.objections, _messages(users, lambda u: encode_objection(event(u))), chunk=50_000))
        run(produce(bootstrap, topics.consent_state, _messages(users, lambda u: enforced_state(event(u), at)), chunk=50_000))
        run(commit_to_end(bootstrap, topics.group("consent"), [topics.objections, topics.receipts, topics.notices]))
        first.start("consent", wait=False)
        second.start("consent", wait=False)
        first.wait_ready("consent", timeout=1800)
        second.wait_ready("consent", timeout=1800)
        # Ready, and every user answered by one of them (both hold their halves).
        probes = [f"user-{i:08d}" for i in range(0, users, max(users // 64, 1))]
        deadline = time.monotonic() + 1800
        while not all(_answers(first.url("consent"), u) for u in probes):
            if time.monotonic() > deadline:
                raise TimeoutError("the two workers never answered for every user")
            time.sleep(1)
        if standby:
            time.sleep(20)  # the standby copies read the changelog after the assignment: let them catch up
        # Kill the second worker; a user it owned is answered again once the survivor owns it.
        victim_users = probes[:16]  # users of every partition (8): half of them were the dead worker's
        killed_at = time.monotonic()
        os.killpg(second.pid("consent"), signal.SIGKILL)
        deadline = killed_at + 1800
        while not all(_answers(first.url("consent"), u) for u in victim_users):
            if time.monotonic() > deadline:
                raise TimeoutError("the survivor never answered for the dead worker's users")
            time.sleep(0.2)
        return {"users": users, "standby": standby, "seconds": time.monotonic() - killed_at}


def run_failover(bootstrap: str, work: Path, users: int) -> dict:
    without = scenario(bootstrap, work, users, 0)
    with_standby = scenario(bootstrap, work, users, 1)
    return {"users": users, "without_standby_seconds": without["seconds"], "with_standby_seconds": with_standby["seconds"], "partitions": PARTITIONS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    args = parser.parse_args()
    import tempfile

    from bench.common import free_port
    from consentry_cli.broker import EmbeddedBroker

    work = Path(tempfile.mkdtemp(prefix="consentry-failover-"))
    broker = EmbeddedBroker(free_port(), log_path=work / "broker.log")
    broker.start()
    try:
        print(run_failover(broker.bootstrap, work, args.users), flush=True)
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
