"""Crashes and stalls: kill -9 (or freeze) each worker in the middle of a sustained load,
restart it, and check 0 leaks, every required post stored exactly once, every 202 objection
applied in the consent state itself (enforced, purged). The system runs with the production
default (the notice rule on, users told long ago) and, in the scale-out runs, two consent and
two ingest workers, so each kill or long stall also moves partitions under load.

Then the precise windows that random kills rarely hit, with failpoints
(consentry/failpoints.py): the sink between its Delta commit and its receipts / offset
commit, with a purge in the replayed batch; ingest between forwarding and committing; the
consent worker after its table writes are flushed but before it ever committed an offset,
replaced by one with no local state.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import time

import httpx
import pytest

from consentry import fencing
from consentry.scrape import total
from consentry.timeutil import now_us
from tests.reliability import races
from tests.reliability.oracle import objecting_now
from tests.reliability.workload import Load, World, adopt_consent_history, check_world, flush_pipeline
from tests.support import ledger
from tests.support.logcheck import assert_logs_clean
from tests.support.system import System, service_of
from tests.support.wait import eventually

ORDER = ("consent", "ingest", "sink", "gateway")
SESSION_TIMEOUT_S = 3.0  # tests/support/system.py: CONSENTRY_SESSION_TIMEOUT_MS
SHORT_STALL_S = 1.0  # within the 3 s session timeout the tests run with: nobody notices
LONG_STALL_S = 8.0  # past it: the group moves the worker's partitions away while it sleeps


def consent_states(world: World) -> dict:
    async def fetch() -> dict:
        async with world:
            return await world.consent_states()

    return asyncio.run(fetch())


def faults_under_load(system: System, seed: int, faults: list[tuple[str, str]], users: int = 150) -> dict[str, int]:
    """`faults`: (action, instance) in turn under load: "kill" (SIGKILL, restarted once the
    load moved on; every other consent kill also deletes its RocksDB directory), or
    "stall:<seconds>" (SIGSTOP, SIGCONT)."""
    system.create_topics()
    system.start()
    world = World(system, random.Random(seed), tag=f"k{seed}")
    load = Load(world, users)

    async def tell() -> None:
        async with world:
            await world.tell_everyone()

    asyncio.run(tell())
    load.start()
    kills = stalls = consent_kills = fenced = 0
    try:
        for action, instance in faults:
            load.wait_progress(150)
            if action == "kill":
                system.kill(instance)
                kills += 1
                if service_of(instance) == "consent":
                    if consent_kills % 2 == 0:
                        # A new machine: no local RocksDB, the table comes back from its changelog.
                        shutil.rmtree(system.consent_state_dir(instance), ignore_errors=True)
                    consent_kills += 1
                load.wait_progress(100)  # the rest of the system keeps going meanwhile
                system.start(instance)
            else:
                seconds = float(action.split(":", 1)[1])
                system.stall(instance)
                try:
                    time.sleep(seconds)  # the fault's duration, not a wait for anything: the load goes on
                finally:
                    system.resume(instance)
                if seconds > SESSION_TIMEOUT_S and service_of(instance) in ("consent", "ingest"):
                    # Its group moved on while it slept (the other worker took its partitions): it
                    # wakes fenced (consentry/fencing.py) and ends before writing anything; its
                    # supervisor starts it again.
                    assert system.wait_exit(instance, timeout=60) == fencing.EXIT_CODE, system.log(instance)[-3000:]
                    assert "fenced:" in system.log(instance)
                    fenced += 1
                    system.start(instance)
                elif seconds > SESSION_TIMEOUT_S and service_of(instance) == "sink":
                    # Alone in its group, nobody took its partitions: the embedded broker expires a
                    # member only when the group has other activity, so the sink may wake still a
                    # member (its heartbeat answered: not a zombie) or, if it wrote before that
                    # heartbeat, end fenced on its expired lease. Either is right; an end must be fenced.
                    process = system.processes[instance]
                    try:
                        eventually(lambda: process.poll() is not None, timeout=15, what="the sink fenced")
                    except AssertionError:
                        pass  # still a member
                    else:
                        assert system.wait_exit(instance) == fencing.EXIT_CODE and "fenced:" in system.log(instance), system.log(instance)[-3000:]
                        fenced += 1
                        system.start(instance)
                stalls += 1
        load.wait_progress(200)
    finally:
        load.stop()

    async def settle() -> None:
        async with world:
            await world.wait_settled(timeout=240)

    asyncio.run(settle())
    unseen = adopt_consent_history(world, consent_states(world))
    rows = system.training_rows()
    objecting = {u.user_id for u in world.users.values() if objecting_now(list(u.events.values()))}
    assert not [r for r in rows if r["user_id"] in objecting], "posts of objecting users stored after purged"

    async def late() -> None:
        async with world:
            await races.play_late(world)

    asyncio.run(late())
    flush_pipeline(system)
    consent = consent_states(world)
    world.wait_released(consent)
    figures = check_world(world, system.training_rows(), consent)
    assert_logs_clean(system, [t for u in world.users.values() for t in u.texts], [system.token(u) for u in list(world.users)[:30]])
    print(f"seed {seed}: {kills} kills, {stalls} stalls, {load.retries} client retries, {load.superseded} superseded (409), {unseen} events acknowledged to nobody; {figures}")
    ledger.record("no leak", kills=kills, stalls=stalls, **{"woken fenced": fenced}, leaks=figures["leaks"])
    ledger.record("nothing lost", kills=kills, stalls=stalls, posts=figures["posts"], required=figures["required"], lost=figures["lost"],
                  duplicates=figures["duplicates"], **{"202 objections": sum(v for k, v in world.counts.items() if k.endswith("via gateway"))})
    return figures


def kill_under_load(system: System, seed: int, rounds: int, users: int = 150) -> dict[str, int]:
    """Each service killed in turn, `rounds` times."""
    return faults_under_load(system, seed, [("kill", s) for _ in range(rounds) for s in ORDER], users)


@pytest.mark.quick
def test_kill_each_service_once_under_load(scaled_system: System) -> None:
    """Two consent and two ingest workers: the consent worker the gateway asks, the second
    ingest worker, the sink and the gateway are killed in turn; each kill of a consent or
    ingest worker moves its partitions to the other one under load."""
    faults_under_load(scaled_system, seed=11, faults=[("kill", "consent"), ("kill", "ingest-2"), ("kill", "sink"), ("kill", "gateway")])


@pytest.mark.reliability
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("seed", [12, 13])
def test_kill_each_service_repeatedly_under_load(system: System, seed: int) -> None:
    kill_under_load(system, seed=seed, rounds=4)


@pytest.mark.reliability
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("seed", [14, 15])
def test_kill_and_stall_each_worker_under_load(scaled_system: System, seed: int) -> None:
    """Two consent and two ingest workers: each worker (both of each, the sink, the gateway)
    is killed, then stalled briefly, then stalled past the session timeout, under load."""
    instances = scaled_system.instances
    rng = random.Random(seed)
    faults = [("kill", i) for i in rng.sample(instances, len(instances))]
    faults += [(f"stall:{SHORT_STALL_S}", i) for i in rng.sample(instances, len(instances))]
    faults += [(f"stall:{LONG_STALL_S}", i) for i in rng.sample(instances, len(instances))]
    faults_under_load(scaled_system, seed=seed, faults=faults)


def post(post_id: str, user: str, created_us: int | None = None) -> dict:
    """A post from France: its author must have been told (System.tell) for it to be used."""
    return {"post_id": post_id, "user_id": user, "created_at": _ts(created_us), "visibility": "public", "text": f"text of {post_id}", "country": "FR"}


def _ts(us: int | None) -> str:
    from consentry.timeutil import format_rfc3339

    return format_rfc3339(us if us is not None else now_us())


def user_rows_by_version(system: System, user: str, since: int) -> dict[int, int]:
    from deltalake import DeltaTable

    uri = str(system.data_dir / "training")
    latest = DeltaTable(uri).version()
    return {v: sum(1 for r in DeltaTable(uri, version=v).to_pyarrow_table().to_pylist() if r["user_id"] == user) for v in range(since, latest + 1)}


# sink.before_commit runs in make test-reliability only (make test's 15 minutes): in make test,
# tests/integration/test_sink_bounded.py kills a sink at that failpoint too.
@pytest.mark.parametrize("failpoint", ["sink.after_purge", pytest.param("sink.before_commit", marks=pytest.mark.reliability)])
def test_sink_crash_between_delta_commit_and_offset_commit(system: System, failpoint: str) -> None:
    """The batch holding alice's purge marker is committed to Delta, then the sink dies before
    its receipts (or its offset commit). Replayed: no duplicate, alice's posts never come back
    in any table version, and the purge is still confirmed."""
    system.create_topics()
    # Each sink flush is its own batch here: the crash lands in the batch with the marker.
    system.start("consent", "ingest", "gateway")
    # Told long ago, and known to ingest before their posts come (no barrier objections: the
    # sink's first purge must be alice's): ingest holds consent state for exactly these two.
    system.tell("alice", "bob", sync=False)
    eventually(lambda: total(system.metrics("ingest"), "consentry_ingest_consent_users") == 2, what="ingest read the notices")
    system.start("sink", env={"CONSENTRY_FAILPOINTS": failpoint if failpoint == "sink.after_purge" else f"{failpoint}:2"})
    system.publish_posts([post("alice-1", "alice"), post("alice-2", "alice"), post("bob-1", "bob")])
    eventually(lambda: len(system.training_rows()) == 3, what="first posts stored")
    if failpoint == "sink.before_commit":
        system.publish_posts([post("bob-0", "bob")])  # flush 2 ends in the crash
        eventually(lambda: "bob-0" in {r["post_id"] for r in system.training_rows()}, what="bob-0 stored")
        assert system.wait_exit("sink") == 75
        system.start("sink", env={"CONSENTRY_FAILPOINTS": "sink.after_purge"})
    from deltalake import DeltaTable

    before = DeltaTable(str(system.data_dir / "training")).version()
    system.object("alice")
    assert system.wait_exit("sink") == 75  # died right after the Delta commit of the purge
    assert not [r for r in system.training_rows() if r["user_id"] == "alice"]
    assert system.consent_status("alice")["status"] in ("received", "enforced")  # not confirmed yet
    # The restarted sink confirms the purge without waiting for new traffic.
    system.start("sink")
    doc = eventually(lambda: (d := system.consent_status("alice"))["status"] == "purged" and d, timeout=60, what="alice purged")
    # Then bob writes, alice's old post is re-delivered, bob's too.
    system.publish_posts([post("bob-2", "bob"), post("alice-1", "alice"), post("bob-1", "bob")])
    eventually(lambda: "bob-2" in {r["post_id"] for r in system.training_rows()}, what="bob-2 stored")
    ids = sorted(r["post_id"] for r in system.training_rows())
    assert ids == sorted(["bob-1", "bob-2"] + (["bob-0"] if failpoint == "sink.before_commit" else []))
    versions = user_rows_by_version(system, "alice", before + 1)
    assert all(count == 0 for count in versions.values()), versions  # never resurrected, not even briefly
    assert doc["history"][0]["purged_at"]
    assert "re-confirming 1 purges" in system.log("sink") or failpoint == "sink.before_commit"
    ledger.record("nothing lost", **{"sink crashes in the commit window": 1}, duplicates=len(ids) - len(set(ids)))
    ledger.record("no leak", **{"sink crashes in the commit window": 1}, leaks=sum(versions.values()))


def test_ingest_crash_between_forwarding_and_offset_commit(system: System) -> None:
    """Ingest forwards a batch, dies before committing its offsets, re-reads the batch after
    the restart and forwards it again: the sink stores each post once."""
    import orjson

    system.create_topics()
    system.start()
    system.tell("carol", "dan")
    first = [post(f"carol-{n}", "carol") for n in range(5)]
    system.publish_posts(first)
    eventually(lambda: len(system.training_rows()) == 5, what="first batch stored")
    system.kill("ingest")
    system.start("ingest", env={"CONSENTRY_FAILPOINTS": "ingest.before_commit"})  # the next forwarded batch
    system.publish_posts([post(f"dan-{n}", "dan") for n in range(5)])
    assert system.wait_exit("ingest") == 75
    system.start("ingest")
    system.publish_posts([post("dan-5", "dan")])
    eventually(lambda: "dan-5" in {r["post_id"] for r in system.training_rows()}, what="dan-5 stored")
    ids = [r["post_id"] for r in system.training_rows()]
    assert sorted(ids) == sorted({*(p["post_id"] for p in first), *(f"dan-{n}" for n in range(6))})
    assert len(ids) == len(set(ids))
    forwarded = [orjson.loads(r.value).get("post_id") for r in system.read(system.topics.training_posts)]
    assert len(forwarded) > len(set(forwarded)), "the crash should have made ingest forward some posts twice"
    ledger.record("nothing lost", **{"ingest crashes in the commit window": 1}, duplicates=len(ids) - len(set(ids)))


def consent_holds(system: System, user: str) -> set[str]:
    """The objection ids of the user's row, read from the consent service itself (the gateway
    would add the events its own receipt cache remembers)."""
    response = httpx.get(f"{system.url('consent')}/v1/user/status", params={"user_id": user}, timeout=5)
    assert response.status_code == 200, response.text
    return {item["objection_id"] for item in response.json()["history"]}


def users_in(system: System, partitions: set[int], count: int, prefix: str) -> list[str]:
    from consentry.partitioning import home_partition

    names = (f"{prefix}-{n}" for n in range(10_000))
    return [user for user in names if home_partition(user, system.partitions) in partitions][:count]


def test_consent_replaced_before_its_first_commit_applies_every_acknowledged_event(system: System) -> None:
    """The consent worker applies the first objections, flushes their changelog records and dies
    (as kill -9) before it ever committed a source offset. A worker with no local state (a new
    machine) takes over; the users withdraw while no worker runs, others object while it starts.
    It rebuilds the table from the changelog, then must apply every event after the last commit.

    faust-streaming 0.15.3 dropped them: while it read the changelog, aiokafka also fetched the
    paused source partitions; once the changelog was read faust paused every partition, and a
    fetch still waiting then asked aiokafka for the records of that (now empty) set, which
    aiokafka reads as "every partition". faust dropped the records of the paused partitions;
    with no committed offset to seek back to, the worker went on after them
    (consentry/patches.py, install_faust_consumer_fetch_fix). `consent.table_recovered` holds that window open (a
    big table takes as long to index there) while the objections of the new users arrive."""
    system.create_topics()
    system.start("gateway")
    system.start("consent", env={"CONSENTRY_FAILPOINTS": "consent.before_commit"})
    early = users_in(system, {0}, 4, "early")  # partitions 1-3 of `objections` stay empty until the window
    acknowledged = {user: {system.object(user)["objection_id"]} for user in early}
    # The first offset commit ends the worker: its changelog records are out, no offset committed.
    assert system.wait_exit("consent") == 75
    shutil.rmtree(system.data_dir / "consent")  # a new machine: the table comes back from the changelog
    for user in early:
        acknowledged[user].add(system.withdraw(user)["objection_id"])

    seen = len(system.log("consent"))
    system.start("consent", wait=False, env={"CONSENTRY_FAILPOINTS": "consent.table_recovered@3"})
    # Logged as the table is recovered, right before the window (held open 3 s).
    eventually(lambda: "consent table:" in system.log("consent")[seen:], timeout=60, interval=0.01,
               what="the new worker between its changelog and its sources")
    for user in users_in(system, {1, 2, 3}, 6, "starting"):
        acknowledged[user] = {system.object(user)["objection_id"]}
    system.wait_ready("consent")

    def missing() -> dict[str, set[str]]:
        return {user: lost for user, ids in acknowledged.items() if (lost := ids - consent_holds(system, user))}

    try:
        eventually(lambda: not missing(), timeout=20, what="every acknowledged event in the consent table")
    except AssertionError:
        lost = missing()
        raise AssertionError(f"{sum(map(len, lost.values()))} events acknowledged (202) but not in the consent table: {lost}") from None
    ledger.record("nothing lost", **{"consent crashes before its first commit": 1})
