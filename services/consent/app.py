"""The consent faust app: a table of ConsentState per user (RocksDB), keyed by user_id.

Its changelog (`consentry.consent-state`) is the consent state every other service reads:
ingest loads it for the partitions it owns. Table values are our own JSON
(consentry.wire.encode_consent_state), not faust records, so readers need no faust.
"""

from __future__ import annotations

import faust

from consentry import patches
from consentry.kafka import faust_credentials
from consentry.logs import logging_config
from consentry.wire import encode_consent_state
from services.consent import failclosed
from services.consent.agents import register_agents
from services.consent.monitoring import install_monitoring
from services.consent.rows import Changelog, KafkaChangelog, TableRows
from services.consent.settings import ConsentSettings
from services.consent.traced import ConsentTable
from services.consent.views import check_service_token, register_views

RAW = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


def create_app(settings: ConsentSettings, rows_changelog: Changelog | None = None) -> faust.App:
    """Raises services.consent.views.InsecureConfiguration when the views would be open beyond loopback.

    `rows_changelog`: where the table's rows go after the local store; the changelog topic through
    the worker's producer unless a test gives another (faust's test_context() has no broker)."""
    check_service_token(settings)
    patches.check_versions()  # refuses faust/aiokafka versions the patches were not written for
    # The flush fix and the fail-closed stop always; broker workarounds on Tansu only.
    patches.install_faust_patches(settings, on_send_failure=failclosed.on_send_failure)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=settings.faust_broker,
        broker_credentials=faust_credentials(settings),  # TLS / SASL, as every other client (docs/kafka-security.md)
        store=settings.consent_store,
        datadir=str(settings.state_dir),
        topic_partitions=settings.partitions,
        processing_guarantee="at_least_once",
        producer_acks=-1,
        producer_max_request_size=settings.consent_max_record_bytes,
        producer_linger=settings.consent_producer_linger_ms / 1000,  # changelog records batched per request
        producer_max_batch_size=min(settings.consent_record_batch_bytes, settings.consent_max_record_bytes),  # a changelog record batch (services/consent/rows.py)
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.heartbeat_interval_ms / 1000,
        table_standby_replicas=settings.consent_standby_replicas,
        web_enabled=True,
        web_bind=settings.consent_host,
        web_host=settings.consent_host,
        web_port=settings.consent_port,
        canonical_url=settings.canonical_url,
        web_in_thread=False,
        # faust's own views read any table key (/table) and show the cluster (/router): off.
        # Look-ups are routed between workers by app.router, which needs neither.
        web_tables_enabled=False,
        web_router_enabled=False,
        # The same log lines as every other service (CONSENTRY_LOG_FORMAT), not faust's own.
        logging_config=logging_config("consent", settings.log_level, settings.log_format),
        Table=ConsentTable,  # changelog records carry the trace context of the event that wrote them
    )
    topics = settings.topics
    changelog = app.topic(topics.consent_state, partitions=settings.partitions, compacting=True, internal=True, **RAW)
    table = app.Table("consent", partitions=settings.partitions, changelog_topic=changelog, key_type=bytes, value_type=bytes)
    watch = install_monitoring(app, table)
    if rows_changelog is None:
        rows_changelog = KafkaChangelog(topics.consent_state, lambda: patches.faust_inner_producer(app), settings.consent_max_record_bytes)
    register_agents(app, table, settings, watch, TableRows(table, rows_changelog, encode_consent_state))
    register_views(app, table, settings)
    return app
