"""consentry.patches: each defect that needs no broker, shown on the unpatched library and
gone with the patch; the start-up check that refuses versions a patch was not written for.
The embedded broker's defects are shown on the broker in
tests/integration/test_embedded_broker_patches.py."""

from __future__ import annotations

import asyncio
import io
import logging
from importlib import metadata
from types import SimpleNamespace

import faust
import pytest
from faust.exceptions import ProducerSendError
from faust.tables.base import Collection
from faust.tables.recovery import Recovery
from faust.topics import Topic
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.producer import ProducerBuffer
from faust.types import TP
from faust.worker import Worker

from consentry import patches
from consentry.settings import CommonSettings
from tests.support.wait import eventually_async

PATCHED = (
    (ProducerBuffer, "flush"),
    (ProducerBuffer, "_send_pending"),
    (Topic, "_on_published"),
    (AIOKafkaConsumerThread, "_highwaters"),
    (AIOKafkaConsumerThread, "_create_worker_consumer"),
    (Consumer, "perform_seek"),
    (Consumer, "resume_flow"),
    (Consumer, "resume_partitions"),
    (Recovery, "on_recovery_completed"),
    (Worker, "on_setup_root_logger"),
    (Collection, "_on_changelog_sent"),
    (Topic, "_get_producer"),
    (AIOKafkaConsumerThread, "verify_event_path"),
)


@pytest.fixture
def undo_patches(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test starts from faust as released (whatever this session installed, such as a
    consent app's fail-closed stop), and what it installs is taken back after it."""
    monkeypatch.setattr(patches, "_installed", set())
    for owner, name in PATCHED:
        monkeypatch.setattr(owner, name, patches.unpatched(owner, name))

# ------------------------------------------------------------------ the version check


def test_the_installed_versions_are_the_ones_the_patches_were_written_for() -> None:
    patches.check_versions()


def test_check_versions_refuses_a_version_no_patch_was_written_for(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "0.16.0" if name == "faust-streaming" else installed(name))

    with pytest.raises(patches.UnsupportedVersion) as refused:
        patches.check_versions()

    message = str(refused.value)
    assert "faust-streaming 0.16.0 is installed" in message
    assert "written for faust-streaming 0.15.3" in message
    assert "install_faust_flush_fix" in message
    assert "aiokafka" not in message  # aiokafka's version is still a supported one


def test_check_versions_refuses_a_patched_library_that_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    def version(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", version)

    with pytest.raises(patches.UnsupportedVersion, match=r"aiokafka is not installed, but consentry.patches was written for aiokafka 0.14.0"):
        patches.check_versions()


def test_every_patch_says_what_it_was_written_for_and_when_it_applies() -> None:
    names = {patch.name for patch in patches.PATCHES}
    assert {
        "install_faust_flush_fix",
        "install_faust_send_failure_stop",
        "install_faust_end_offsets_workaround",
        "install_faust_fetch_wait_workaround",
    } <= names
    for patch in patches.PATCHES:
        doc = patch.function.__doc__ or ""
        for package, versions in patch.written_for.items():
            assert package in doc and all(version in doc for version in versions), patch.name
        assert ("Broker-conditional" in doc) is patch.embedded_broker_only, patch.name


def test_the_broker_workarounds_install_only_on_the_embedded_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    installed: list[str] = []
    for name in ("install_faust_flush_fix", "install_faust_end_offsets_workaround", "install_faust_fetch_wait_workaround"):
        monkeypatch.setattr(patches, name, lambda name=name: installed.append(name))

    patches.install_faust_patches(CommonSettings(kafka_bootstrap_servers="kafka:9092"))
    assert installed == ["install_faust_flush_fix"]

    installed.clear()
    patches.install_faust_patches(CommonSettings(kafka_bootstrap_servers=None))
    assert installed == ["install_faust_flush_fix", "install_faust_end_offsets_workaround", "install_faust_fetch_wait_workaround"]


# ------------------------------------------------------------------ faust's producer buffer flush


class SlowChannel:
    """Hands each message over slowly, as a busy machine would."""

    def __init__(self) -> None:
        self.published: list[int] = []

    async def publish_message(self, fut, wait: bool = False) -> None:  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.25)
        self.published.append(fut.n)


async def flush_three_records(flush) -> list[int]:  # type: ignore[no-untyped-def]
    """What the channel had published when `flush` returned, three records having been buffered."""
    buffer = ProducerBuffer()
    buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))
    channel = SlowChannel()
    await buffer.start()
    try:
        for n in range(3):
            buffer.put(SimpleNamespace(n=n, message=SimpleNamespace(channel=channel)))
        await flush(buffer)
        published = list(channel.published)

        async def all_sent() -> bool:
            return channel.published == [0, 1, 2]

        await eventually_async(all_sent, timeout=10, what="the buffer drained")  # faust's stop refuses a non-empty buffer
        return published
    finally:
        await buffer.stop()


async def test_faust_flush_returns_before_its_records_are_sent() -> None:
    """The defect: faust's own flush gives up after 0.1 s without a send."""
    assert await flush_three_records(patches.unpatched(ProducerBuffer, "flush")) == []


async def test_flush_waits_for_every_buffered_record(undo_patches: None) -> None:
    patches.install_faust_flush_fix()
    assert await flush_three_records(ProducerBuffer.flush) == [0, 1, 2]


# ------------------------------------------------------------------ faust's spinner and the root logger


def root_level_after_worker_setup(on_setup_root_logger) -> int:  # type: ignore[no-untyped-def]
    """The level of a root logger (set to WARNING) after a worker started with `--loglevel warn`,
    as the consent worker at CONSENTRY_LOG_LEVEL=WARNING, set it up."""
    app = faust.App("test-patches-spinner", broker="kafka://127.0.0.1:1")
    worker = Worker(app, loglevel="warn", stdout=io.StringIO(), stderr=io.StringIO())
    root = logging.Logger("root-of-the-test")  # not the process's root: the test configures nothing
    root.setLevel(logging.WARNING)
    root.addHandler(logging.NullHandler())
    on_setup_root_logger(worker, root, logging.WARNING)
    return root.level


def test_faust_sets_the_root_logger_to_debug_for_its_spinner() -> None:
    """The defect: every faust and aiokafka debug call then builds and handles a log record."""
    assert root_level_after_worker_setup(patches.unpatched(Worker, "on_setup_root_logger")) == logging.DEBUG


def test_the_root_logger_keeps_the_level_the_service_chose(undo_patches: None) -> None:
    patches.install_faust_patches(CommonSettings(kafka_bootstrap_servers="kafka:9092"))  # a consent worker's
    assert root_level_after_worker_setup(Worker.on_setup_root_logger) == logging.WARNING, (
        "a worker at --loglevel warn set the root logger below WARNING"
    )


# ------------------------------------------------------------------ the table's persisted changelog offsets


class OffsetStore:
    def __init__(self) -> None:
        self.puts: list[tuple[TP, int]] = []

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        self.puts.append((tp, offset))


def acknowledged(tp: TP, offset: int) -> asyncio.Future:
    """A changelog record's send, acknowledged at `offset`, as faust hands it to the table."""
    sent = asyncio.get_running_loop().create_future()
    sent.set_result(SimpleNamespace(topic_partition=tp, offset=offset))
    return sent


async def acknowledge_in_one_turn(offsets: list[tuple[TP, int]]) -> list[tuple[TP, int]]:
    """The persisted offsets a table writes for records acknowledged by one produce response."""
    table = SimpleNamespace(app=SimpleNamespace(in_transaction=False), data=OffsetStore())
    for tp, offset in offsets:
        Collection._on_changelog_sent(table, acknowledged(tp, offset))
    await asyncio.sleep(0)  # the next loop turn
    return table.data.puts


async def test_a_table_writes_each_acknowledged_offset_once_per_loop_turn_and_partition(undo_patches: None) -> None:
    patches.install_faust_patches(CommonSettings(kafka_bootstrap_servers="kafka:9092"))  # a consent worker's
    p0, p1 = TP("consent-state", 0), TP("consent-state", 1)

    puts = await acknowledge_in_one_turn([(p0, 3), (p1, 7), (p0, 5), (p0, 4)])

    assert sorted(puts) == [(p0, 5), (p1, 7)], "the highest acknowledged offset of each partition, once"
    assert await acknowledge_in_one_turn([(p0, 9)]) == [(p0, 9)]


# ------------------------------------------------------------------ the producer a record is published with


def yields_before_the_producer(topic: Topic, get_producer) -> bool:  # type: ignore[no-untyped-def]
    """Whether getting the (started) producer gives the event loop a turn first."""
    call = get_producer(topic)
    try:
        call.send(None)
    except StopIteration:
        return False
    call.close()
    return True


def topic_with_a_started_producer() -> Topic:
    app = faust.App("test-patches-producer", broker="kafka://127.0.0.1:1")
    app.producer._started.set()  # as after app.start(); nothing connects
    return app.topic("consent-state")


async def test_faust_takes_a_loop_turn_to_get_its_started_producer() -> None:
    """The cost: a pass of the event loop for every record published."""
    topic = topic_with_a_started_producer()
    assert yields_before_the_producer(topic, patches.unpatched(Topic, "_get_producer")) is True


async def test_a_record_is_published_with_the_started_producer_at_once(undo_patches: None) -> None:
    patches.install_faust_patches(CommonSettings(kafka_bootstrap_servers="kafka:9092"))  # a consent worker's
    topic = topic_with_a_started_producer()
    assert yields_before_the_producer(topic, Topic._get_producer) is False, "a turn of the event loop before every record published"


# ------------------------------------------------------------------ a record faust cannot send


class RefusedByBroker(Exception):
    """What aiokafka sets on a send's future when the broker refuses the record."""


def refused_changelog_send(app: faust.App) -> tuple[Topic, asyncio.Future, object]:
    """A changelog record as a table write sends it (`send_soon`), and the failed future of its
    send, as aiokafka hands it to faust's `_on_published`."""
    changelog = app.topic("consent-state", key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    record = changelog.as_future_message(key=b"u-1", value=b"row", partition=0)
    sent = asyncio.get_running_loop().create_future()
    sent.set_exception(RefusedByBroker("MESSAGE_TOO_LARGE"))
    return changelog, sent, record


async def test_faust_only_logs_a_changelog_record_the_broker_refused(caplog: pytest.LogCaptureFixture) -> None:
    """The defect: the failure ends on faust's FutureMessage, which nobody awaits, and a warning;
    nothing stops the commit that follows."""
    app = faust.App("test-patches", broker="kafka://127.0.0.1:1")
    changelog, sent, record = refused_changelog_send(app)

    patches.unpatched(Topic, "_on_published")(changelog, sent, message=record, producer=None, state=None)  # faust's own

    assert isinstance(record.exception(), RefusedByBroker)
    assert "_on_published error" in caplog.text  # a log line, and nothing else


async def test_a_changelog_record_the_broker_refused_calls_the_stop(undo_patches: None) -> None:
    failures: list[tuple[str, BaseException]] = []
    patches.install_faust_send_failure_stop(lambda topic, error: failures.append((topic, error)))
    app = faust.App("test-patches", broker="kafka://127.0.0.1:1")
    changelog, sent, record = refused_changelog_send(app)

    changelog._on_published(sent, message=record, producer=None, state=None)

    assert [(topic, type(error)) for topic, error in failures] == [("consent-state", RefusedByBroker)]


class RefusingChannel:
    """aiokafka refuses the record before it leaves (over the producer's max_request_size)."""

    def get_topic_name(self) -> str:
        return "consent-state"

    async def publish_message(self, fut, wait: bool = False) -> None:  # type: ignore[no-untyped-def]
        raise ProducerSendError("Error while sending: MessageSizeTooLargeError()")


async def buffer_with_a_refused_record() -> ProducerBuffer:
    """A producer buffer after a record its producer refused was put in it."""
    buffer = ProducerBuffer()
    buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))
    await buffer.start()
    buffer.put(SimpleNamespace(message=SimpleNamespace(channel=RefusingChannel())))

    async def handed_over() -> bool:
        return buffer.size == 0 and not getattr(buffer, "_handing_over", 0)

    await eventually_async(handed_over, timeout=10, what="the record handed over")
    return buffer


async def test_faust_crashes_its_producer_buffer_on_a_refused_record_and_flushes_as_if_sent(undo_patches: None) -> None:
    """The defect: the buffer's service crashes (in the worker, a stop that hangs) and a flush,
    what a commit waits for, returns as if the record had been sent."""
    buffer = await buffer_with_a_refused_record()

    async def crashed() -> bool:
        return buffer.state == "crashed"

    try:
        await eventually_async(crashed, timeout=10, what="the buffer crashed")
        await buffer.flush()  # returns: nothing is left to send
    finally:
        await buffer.stop()


async def test_a_record_the_producer_refused_calls_the_stop(undo_patches: None) -> None:
    failures: list[tuple[str, BaseException]] = []
    patches.install_faust_send_failure_stop(lambda topic, error: failures.append((topic, error)))
    buffer = await buffer_with_a_refused_record()
    try:
        assert [(topic, type(error)) for topic, error in failures] == [("consent-state", ProducerSendError)]
    finally:
        await buffer.stop()


# ------------------------------------------------------------------ faust's consumer on the embedded broker


def consumer_thread() -> AIOKafkaConsumerThread:
    app = faust.App("test-patches", broker="kafka://127.0.0.1:1")  # never connects
    return app.consumer._thread


async def test_faust_hard_codes_a_long_fetch_wait_and_the_workaround_shortens_it(undo_patches: None) -> None:
    thread = consumer_thread()
    unpatched = patches.unpatched(AIOKafkaConsumerThread, "_create_worker_consumer")(thread, thread.transport)
    await unpatched.stop()
    assert unpatched._fetch_max_wait_ms == 1500  # the defect: a multi-partition fetch waits this long on Tansu

    patches.install_faust_fetch_wait_workaround()
    patched = thread._create_worker_consumer(thread.transport)
    await patched.stop()
    assert patched._fetch_max_wait_ms == patches.FAUST_FETCH_MAX_WAIT_MS


async def test_faust_recovery_end_offsets_come_from_list_offsets_and_the_workaround_fetches_them(monkeypatch: pytest.MonkeyPatch, undo_patches: None) -> None:
    """On the broker, tests/integration/test_embedded_broker_patches.py shows what this costs;
    here, where each answer comes from. The workaround's probe connects as faust's consumer
    does, security included (before: the bootstrap servers only, PLAINTEXT on a TLS cluster)."""
    import ssl

    from aiokafka import AIOKafkaClient, TopicPartition

    tp = TopicPartition("changelog", 0)
    list_offsets_end, fetch_high_watermark = 1, 5  # Tansu's answers after one batch of 5 records
    context = ssl.create_default_context()
    client = AIOKafkaClient(bootstrap_servers="broker:9093", security_protocol="SASL_SSL", ssl_context=context,
                            sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="svc", sasl_plain_password="pw")

    class Consumer:
        _client = client

        async def end_offsets(self, partitions):  # type: ignore[no-untyped-def]
            return {p: list_offsets_end for p in partitions}

    async def fetched(connection, partitions):  # type: ignore[no-untyped-def]
        assert connection["bootstrap_servers"] == "broker:9093"
        assert (connection["security_protocol"], connection["ssl_context"]) == ("SASL_SSL", context)
        assert (connection["sasl_mechanism"], connection["sasl_plain_username"], connection["sasl_plain_password"]) == ("SCRAM-SHA-512", "svc", "pw")
        return {p: fetch_high_watermark for p in partitions}

    monkeypatch.setattr(patches, "true_end_offsets", fetched)
    thread = consumer_thread()
    thread._consumer = Consumer()

    assert await patches.unpatched(AIOKafkaConsumerThread, "_highwaters")(thread, [tp]) == {tp: list_offsets_end}
    patches.install_faust_end_offsets_workaround()
    assert await thread._highwaters([tp]) == {tp: fetch_high_watermark}


# ------------------------------------------------------------------ reads of faust's internals


async def test_the_aiokafka_connection_read_builds_the_same_client() -> None:
    from aiokafka import AIOKafkaClient

    original = AIOKafkaClient(bootstrap_servers="a:1,b:2", security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_plain_username="u", sasl_plain_password="p")
    again = AIOKafkaClient(**patches.client_connection(original))
    assert patches.client_connection(again) == patches.client_connection(original)


def consumer_at(tp: TP, committed: int, applied: list[int], last_read: int):  # type: ignore[no-untyped-def]
    """A faust worker consumer (not started) that committed `committed`, applied `applied` since
    and delivered records up to `last_read`."""
    consumer = faust.App("test-patches", broker="kafka://127.0.0.1:1").consumer
    consumer._committed_offset[tp] = committed
    consumer._acked[tp] = list(applied)
    consumer._acked_index[tp] = set(applied)
    consumer._read_offset[tp] = last_read
    return consumer


def seeking_consumer(tp: TP, committed: int, last_read: int):  # type: ignore[no-untyped-def]
    consumer = consumer_at(tp, committed=committed, applied=[], last_read=last_read)

    async def seek_to_committed() -> dict:
        return {tp: committed}

    consumer.seek_to_committed = seek_to_committed
    consumer.assignment = lambda: {tp}
    consumer._set_active_tps({tp})
    return consumer


async def test_faust_seeks_with_the_source_partitions_delivering_and_resets_the_read_offsets_below_them() -> None:
    tp = TP("objections", 0)
    # records 3..6 delivered since the source partition was resumed (not all applied yet):
    consumer = seeking_consumer(tp, committed=3, last_read=6)
    await patches.unpatched(Consumer, "perform_seek")(consumer)
    assert tp in consumer._get_active_partitions()  # delivering into the queue faust clears next
    assert consumer._read_offset[tp] == 3  # the defect: the record at 7 looks like a gap over 4..6


async def test_the_seek_holds_the_source_partitions_until_the_flow_resumes_and_forgets_the_read_offsets(undo_patches: None) -> None:
    patches.install_faust_seek_read_offset_fix()
    tp = TP("objections", 0)
    consumer = seeking_consumer(tp, committed=3, last_read=6)
    await consumer.perform_seek()
    assert tp not in consumer._get_active_partitions() and consumer._read_offset[tp] is None
    consumer.resume_flow()  # faust's queues are cleared just before
    assert tp in consumer._get_active_partitions() and consumer.flow_active


async def test_the_source_partitions_resumed_as_a_recovery_completes_wait_for_the_flow(undo_patches: None) -> None:
    patches.install_faust_seek_read_offset_fix()
    tp = TP("objections", 0)
    consumer = seeking_consumer(tp, committed=3, last_read=None)
    consumer.pause_partitions({tp})
    consumer._consentry_completing_recovery = True  # as `Recovery.on_recovery_completed` sets it
    consumer.resume_partitions({tp})
    await consumer.perform_seek()
    assert tp not in consumer._get_active_partitions()
    consumer.resume_flow()
    assert tp in consumer._get_active_partitions()


def test_the_faust_internals_read_are_there() -> None:
    app = faust.App("test-patches", broker="kafka://127.0.0.1:1")

    assert patches.committed_offsets(app.consumer) is app.consumer._committed_offset
    assert patches.committed_offsets(object()) == {}
    assert patches.table_recovery_completed(app) is False
    app.tables.recovery.completed.set()
    assert patches.table_recovery_completed(app) is True


def test_the_aiokafka_internals_the_group_fencing_wraps_are_there() -> None:
    """install_group_fencing wraps these; on another aiokafka they may be gone or renamed."""
    import inspect

    from aiokafka.consumer.group_coordinator import CoordinatorGroupRebalance, GroupCoordinator
    from aiokafka.producer.sender import SendProduceReqHandler
    from aiokafka.protocol.commit import OffsetCommitRequest

    for owner, name in ((GroupCoordinator, "_do_heartbeat"), (GroupCoordinator, "_maybe_leave_group"),
                        (CoordinatorGroupRebalance, "_send_sync_group_request")):
        assert inspect.iscoroutinefunction(patches.unpatched(owner, name)), (owner, name)
    assert callable(patches.unpatched(GroupCoordinator, "reset_generation"))
    assert callable(patches.unpatched(SendProduceReqHandler, "create_request"))
    assert OffsetCommitRequest.DEFAULT_GENERATION_ID == -1


# ------------------------------------------------------------------ faust's livelock detector and the table's changelog

CHANGELOG = TP("consentry.consent-state", 3)
SOURCE = TP("objections", 3)


class DetectorThread:
    """faust's consumer thread as its livelock detector sees it: partitions assigned and fetched
    (a fetch a second ago), 10 records behind their high watermark, no event streamed since the
    worker started 10 minutes ago (stream_processing_timeout: 5 min). Its methods are faust's."""

    _verify_aiokafka_event_path = AIOKafkaConsumerThread._verify_aiokafka_event_path
    verify_recovery_event_path = AIOKafkaConsumerThread.verify_recovery_event_path
    _log_slow_processing_stream = AIOKafkaConsumerThread._log_slow_processing_stream
    _log_slow_processing_commit = AIOKafkaConsumerThread._log_slow_processing_commit
    _log_slow_processing = AIOKafkaConsumerThread._log_slow_processing
    _make_slow_processing_error = AIOKafkaConsumerThread._make_slow_processing_error

    def __init__(self, now: float) -> None:
        self.errors: list[str] = []
        self.log = SimpleNamespace(error=lambda msg, *args: self.errors.append(msg % args))
        self.time_started = now - 600
        self.tp_stream_timeout_secs = self.tp_commit_timeout_secs = 300.0
        self.tp_fetch_request_timeout_secs = 120.0
        fetched = SimpleNamespace(timestamp=(now - 1) * 1000, highwater=110, position=100)
        assignment = SimpleNamespace(active=True, state_value=lambda tp: fetched)
        self._consumer = SimpleNamespace(_fetcher=SimpleNamespace(_subscriptions=SimpleNamespace(subscription=SimpleNamespace(assignment=assignment))))
        app = SimpleNamespace(
            monitor=SimpleNamespace(stream_inbound_time={}),
            topics=SimpleNamespace(acks_enabled_for=lambda topic: True),
            tables=SimpleNamespace(changelog_topics={CHANGELOG.topic}),
            conf=SimpleNamespace(stream_processing_timeout=300.0, broker_commit_livelock_soft_timeout=300.0),
        )
        self.consumer = SimpleNamespace(app=app)

    def _ensure_consumer(self):  # type: ignore[no-untyped-def]
        return self._consumer

    def verify(self, tp: TP) -> list[str]:
        """What faust's detector (as installed now) logs at ERROR for `tp`."""
        AIOKafkaConsumerThread.verify_event_path(self, self.time_started + 600, tp)
        return self.errors


def test_faust_calls_a_tables_own_changelog_a_stalled_stream() -> None:
    """The defect: the changelog partitions of an active table are paused after recovery and
    only written; faust logs them at ERROR every few seconds on a healthy worker."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(AIOKafkaConsumerThread, "verify_event_path", patches.unpatched(AIOKafkaConsumerThread, "verify_event_path"))
        errors = DetectorThread(now=1_000_000.0).verify(CHANGELOG)
    assert errors and errors[0].startswith("Stream has not started processing TP(topic='consentry.consent-state', partition=3)")


def test_the_table_changelog_gets_the_fetch_check_and_a_source_still_gets_every_check(undo_patches: None) -> None:
    patches.install_faust_patches(CommonSettings(kafka_bootstrap_servers="kafka:9092"))  # a consent worker's
    assert DetectorThread(now=1_000_000.0).verify(CHANGELOG) == [], "the table's own changelog was called a stalled stream"
    stalled = DetectorThread(now=1_000_000.0).verify(SOURCE)
    assert stalled and stalled[0].startswith("Stream has not started processing TP(topic='objections', partition=3)"), (
        "the detector no longer sees a source partition that no stream reads"
    )
    fetchless = DetectorThread(now=1_000_000.0)
    fetchless._consumer._fetcher._subscriptions.subscription.assignment.state_value = lambda tp: SimpleNamespace(timestamp=None)
    assert fetchless.verify(CHANGELOG) and "fetch" in fetchless.errors[0].lower(), "a changelog partition no longer fetched went unseen"
