"""The `consentry` command (the console script; `python -m consentry_cli` runs it too)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Consentry: keeps the data of people who object out of AI training.")
console = Console(stderr=True)


def _show_version(value: bool) -> None:
    if value:
        from consentry import __version__

        print(f"consentry {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Consentry: keeps the data of people who object out of AI training."""


@app.command()
def up(demo: Annotated[bool, typer.Option("--demo", help="Add a synthetic load of posts and objections.")] = False) -> None:
    """Start the broker (unless KAFKA_BOOTSTRAP_SERVERS is set), the topics and every service."""
    from consentry.kafka import ensure_topics
    from consentry.logs import configure
    from consentry.settings import CommonSettings
    from consentry_cli.broker import EmbeddedBroker
    from consentry_cli.supervisor import Supervisor, wait_ready
    from services.consent.settings import ConsentSettings
    from services.gateway.settings import GatewaySettings
    from services.ingest.settings import IngestSettings
    from services.sink.settings import SinkSettings

    from services.gateway.auth import make_token
    from services.gateway.security import InsecureConfiguration, check

    settings = CommonSettings()
    configure("up", settings.log_level)
    # The demo may listen beyond loopback with the development secret: say so to the gateway.
    demo_env = {"CONSENTRY_DEMO": "true"} if demo else {}
    try:
        keys = check(GatewaySettings(**({"demo": True} if demo else {})))  # before anything starts
    except InsecureConfiguration as exc:
        console.print(f"[bold red]error:[/] the gateway would refuse to start: {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    data_dir = settings.data_dir.resolve()
    log_dir = data_dir / "logs"
    env = {**os.environ, **demo_env}
    broker = None
    if settings.kafka_bootstrap_servers is None:
        broker = EmbeddedBroker(settings.broker_port, log_path=log_dir / "broker.log")
        broker.start()
        env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
        env["CONSENTRY_BROKER_FLAVOR"] = "tansu"
        console.print(f"embedded broker (Tansu) on [bold]{broker.bootstrap}[/]")
    env["CONSENTRY_DATA_DIR"] = str(data_dir)
    counts = asyncio.run(ensure_topics(settings))
    console.print(f"topics ready: {len(counts)} ({settings.partitions} partitions per user-keyed topic)")

    gateway, consent, ingest, sink = GatewaySettings(**({"demo": True} if demo else {})), ConsentSettings(), IngestSettings(), SinkSettings()
    from services.audit.settings import AuditSettings

    audit = AuditSettings()
    gateway_url = f"http://{gateway.gateway_host}:{gateway.gateway_port}"
    urls = {
        "consent": f"http://{consent.consent_host}:{consent.consent_port}",
        "ingest": f"http://{ingest.ingest_host}:{ingest.ingest_port}",
        "sink": f"http://{sink.sink_host}:{sink.sink_port}",
        "gateway": gateway_url,
        "audit-writer": f"http://{audit.audit_host}:{audit.audit_port}",
    }
    # The gateway finds the others (objection status, dashboard) where they were told to listen.
    for name in ("consent", "ingest", "sink"):
        env.setdefault(f"CONSENTRY_{name.upper()}_URL", urls[name])
    if demo:  # users told during the demo see their posts released within it
        env.setdefault("CONSENTRY_NOTICE_GRACE", "60s")
    supervisor = Supervisor(env, log_dir)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    supervisor.start()
    demo_thread = None
    try:
        wait_ready({name: f"{url}/readyz" for name, url in urls.items()}, supervisor=supervisor, stop=stop)
        # The dashboard is for operators: its address carries an operator's token in the
        # fragment (never sent to a server); the page keeps it in the tab.
        dashboard = f"{gateway_url}/dashboard"
        if keys.admin is not None:
            operator = make_token(keys.admin, "operator", admin=True, ttl_seconds=12 * 3600, audience=gateway.jwt_audience, issuer=gateway.jwt_issuer)
            dashboard += f"#token={operator}"
        console.print(f"[bold green]Consentry is up.[/] gateway: [bold]{gateway_url}[/]  API docs: {gateway_url}/docs", soft_wrap=True)
        console.print(f"dashboard (operators; the link holds a 12-hour operator token): [bold]{dashboard}[/]", soft_wrap=True)
        console.print(f"logs: {log_dir}   training store: {sink.store_uri}")
        console.print(f"try: TOKEN=$(consentry token alice) && curl -X POST -H \"Authorization: Bearer $TOKEN\" {gateway_url}/v1/objections")
        if demo and keys.user is None:
            console.print("demo load skipped: people's tokens come from the identity provider (CONSENTRY_JWKS_URL), the demo cannot sign any")
        elif demo:
            console.print(f"demo: users told during the demo have their posts released after {env['CONSENTRY_NOTICE_GRACE']} (CONSENTRY_NOTICE_GRACE)")
            demo_thread = threading.Thread(target=_run_demo, args=(settings, env, gateway_url, urls, keys.user, stop), daemon=True)
            demo_thread.start()
        while not stop.is_set():
            supervisor.check()
            stop.wait(0.5)
    finally:
        console.print("stopping...")
        stop.set()
        if demo_thread is not None:
            demo_thread.join(timeout=10)
        supervisor.stop()
        if broker is not None:
            broker.stop()
        console.print("stopped.")


def _run_demo(settings, env, gateway_url, urls, user_keys, stop: threading.Event) -> None:  # type: ignore[no-untyped-def]
    from consentry.settings import CommonSettings
    from consentry_cli.demo import Demo

    demo_settings = CommonSettings(kafka_bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS"), topic_prefix=settings.topic_prefix, partitions=settings.partitions)

    async def main() -> None:
        done = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.2)
            done.set()

        watcher = asyncio.create_task(watch())
        # The demo signs its people's tokens with the user keys (a KeySet serves where a secret did).
        await Demo(demo_settings, gateway_url, {k: f"{v}/metrics" for k, v in urls.items()}, user_keys).run(done)
        watcher.cancel()

    asyncio.run(main())


def _signing_keys(settings, setting: str):  # type: ignore[no-untyped-def]
    """The key set a command signs with, or a clear exit (2)."""
    from services.gateway.security import InsecureConfiguration, SINGLE, purpose_keys

    try:
        keys = purpose_keys(settings, setting)
    except InsecureConfiguration as exc:
        console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    if keys is None:
        console.print(
            f"[bold red]error:[/] {setting} is not set: these tokens come from your identity provider (CONSENTRY_JWKS_URL or "
            "CONSENTRY_JWKS_FILE), this command signs HS256 ones only", soft_wrap=True,
        )
        raise typer.Exit(2)
    if keys.setting == SINGLE:
        what = "the development secret" if settings.insecure_secret else "CONSENTRY_JWT_SECRET"
        console.print(f"[yellow]signed with {what}: only a gateway on loopback (or the demo) accepts it; set {setting} for a real deployment[/]")
    return keys


@app.command()
def token(
    user: Annotated[str, typer.Argument(help="The user_id (the token's `sub`).")],
    admin: Annotated[bool, typer.Option("--admin", help="An operator's token: signed with CONSENTRY_ADMIN_KEYS, scope consentry:admin.")] = False,
    scope: Annotated[list[str] | None, typer.Option("--scope", help="Another scope of an operator's token (with --admin): consentry:import-withdrawals.")] = None,
    ttl: Annotated[int, typer.Option(help="Lifetime in seconds.")] = 24 * 3600,
) -> None:
    """Print a bearer token for trying the API: a person's (CONSENTRY_USER_KEYS) or, with
    --admin, an operator's (CONSENTRY_ADMIN_KEYS), signed with the newest key of the set."""
    from consentry.domain.model import identifier_problem
    from services.gateway.auth import SCOPES, make_token
    from services.gateway.security import ADMIN, USER
    from services.gateway.settings import GatewaySettings

    scopes = tuple(scope or ())
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or (scopes and not admin):
        console.print(f"[bold red]error:[/] scopes are {', '.join(SCOPES)}, in an operator's token only (--admin)")
        raise typer.Exit(2)
    problem = identifier_problem(user)
    if problem is not None:
        console.print(f"[bold red]error:[/] the user id {problem} (docs: canonical identifiers)")
        raise typer.Exit(2)
    settings = GatewaySettings()
    keys = _signing_keys(settings, ADMIN if admin else USER)
    print(make_token(keys, user, admin=admin, scopes=scopes, ttl_seconds=ttl, audience=settings.jwt_audience, issuer=settings.jwt_issuer))


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON Lines of objection events, with their original received_at.")],
    show: Annotated[int, typer.Option(help="How many rejected lines to list.")] = 20,
) -> None:
    """Bulk import of historical objections, with a progress bar. Safe to run again: an
    objection_id is recorded once."""
    from consentry.importer import OBJECTIONS

    _import_file(file, show, OBJECTIONS)


@app.command("import-notices")
def import_notices(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON Lines of notices, with their original sent_at.")],
    show: Annotated[int, typer.Option(help="How many rejected lines to list.")] = 20,
) -> None:
    """Bulk import of notices already sent to users, with a progress bar. Safe to run again:
    a notice_id is recorded once."""
    from consentry.importer import NOTICES

    _import_file(file, show, NOTICES)


def _import_file(file: Path, show: int, kind) -> None:  # type: ignore[no-untyped-def]
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    from consentry.importer import ImportFailed, import_file
    from consentry.settings import CommonSettings
    from consentry.timeutil import now_us

    settings = CommonSettings()
    columns = (TextColumn(f"importing {kind.name}: {{task.fields[lines]:,}} lines"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    started = time.monotonic()
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("import", total=file.stat().st_size, lines=0)
        try:
            report = asyncio.run(
                import_file(settings, file, now_us(), lambda read, lines: progress.update(task, completed=read, lines=lines), kind=kind)
            )
        except ImportFailed as exc:
            console.print(f"[red]{exc}[/]; {kind.name} already sent are kept: running the same import again is safe")
            raise typer.Exit(1) from exc
    console.print(
        f"{report.lines:,} lines: accepted {report.accepted:,}, duplicates skipped {report.duplicates:,}, "
        f"rejected {report.rejected_count:,} in {time.monotonic() - started:.1f}s"
    )
    for line, reason in report.rejected[:show]:
        console.print(f"  line {line}: {reason}")
    if report.rejected_count > show:
        console.print(f"  ... and {report.rejected_count - show:,} more")


@app.command()
def link(
    user: Annotated[str, typer.Argument(help="The user_id the link objects for.")],
    channel: Annotated[str, typer.Option(help="Recorded on the objection: email (notice e-mail) or app (in-app notice).")] = "email",
    ttl_days: Annotated[float | None, typer.Option(help="Days until the link expires (default: CONSENTRY_LINK_TTL_SECONDS, 30 days).")] = None,
    base_url: Annotated[str | None, typer.Option(help="The gateway's public address (default: CONSENTRY_PUBLIC_URL).")] = None,
) -> None:
    """Print a signed, expiring one-click objection link for USER (what a notice carries),
    signed with the newest key of CONSENTRY_LINK_KEYS."""
    from consentry.links import objection_link
    from services.gateway.security import LINK
    from services.gateway.settings import GatewaySettings

    settings = GatewaySettings()
    keys = _signing_keys(settings, LINK)
    try:
        url = objection_link(keys, base_url or settings.public_base_url, user, channel=channel, ttl_seconds=int(ttl_days * 86400) if ttl_days is not None else settings.link_ttl_seconds)
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    print(url)


@app.command()
def vacuum() -> None:
    """Physically remove purged files from the training store (and the log that named them)."""
    from services.sink.settings import SinkSettings
    from services.sink.store import DeltaTrainingStore

    settings = SinkSettings()
    result = DeltaTrainingStore(settings.store_uri, settings.storage_options).vacuum()
    console.print(f"vacuumed {settings.store_uri}: {result.files_removed} files removed, table at version {result.version}")


@app.command("migrate-store")
def migrate_store(buckets: Annotated[int | None, typer.Option(help="Bucket count (default: CONSENTRY_TRAINING_STORE_BUCKETS, 64).")] = None) -> None:
    """Rewrite a training store written before the bucket layout, or before its cluster column,
    into it (every sink stopped); the next `consentry vacuum` removes the old files."""
    from services.sink.settings import SinkSettings
    from services.sink.store import migrate_to_buckets

    settings = SinkSettings()
    rows = migrate_to_buckets(settings.store_uri, settings.storage_options, buckets=buckets or settings.training_store_buckets,
                              file_bytes=settings.training_store_file_kib << 10)
    console.print(f"{settings.store_uri} is in the bucket layout: {rows} rows, sorted by cluster")


@app.command()
def reconcile(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report what would be deleted: delete and record nothing.")] = False,
    show: Annotated[int, typer.Option(help="How many users with rows to delete to list.")] = 20,
) -> None:
    """Check every objected user against the training store and delete what must not be there:
    the safety net behind purge markers (safe while the sink runs). The figures go to the
    table's reconciliation record, which the sink shows as consentry_reconcile_* metrics."""
    from consentry.logs import configure
    from services.sink.reconcile import run_pass
    from services.sink.settings import SinkSettings
    from services.sink.store import DeltaTrainingStore

    settings = SinkSettings()
    configure("reconcile", settings.log_level)
    store = DeltaTrainingStore(settings.store_uri, settings.storage_options)
    result = asyncio.run(run_pass(settings, store, dry_run=dry_run))
    figures = result.figures
    console.print(
        f"reconciled {settings.store_uri} with {figures.users:,} objected users (consent state read in "
        f"{result.users_seconds:.1f}s): {figures.rows_scanned:,} rows scanned in {result.scan_seconds:.1f}s, "
        f"{figures.rows_purged:,} rows of {figures.users_purged:,} users {'to delete (dry run)' if dry_run else 'deleted'} "
        f"in {figures.seconds:.1f}s",
        soft_wrap=True,
    )
    if result.unreadable:
        console.print(f"[red]{result.unreadable} consent state records could not be read: their users counted as objected[/]")
    if figures.rows_purged:
        console.print("[bold red]a leak was caught:[/] these rows should not have been in the training store "
                      "(docs/operations.md, ConsentryReconcileFoundLeak)", soft_wrap=True)
        for user in result.offending_users[:show]:
            console.print(f"  {user}", soft_wrap=True)
        if len(result.offending_users) > show:
            console.print(f"  ... and {len(result.offending_users) - show:,} more")


@app.command()
def topics(
    replication: Annotated[int, typer.Option(min=1, help="Replication factor of the topics it creates (3 on a production cluster).")] = 1,
) -> None:
    """Create the topics on KAFKA_BOOTSTRAP_SERVERS (partitions, retention, compaction); check existing ones."""
    from consentry.kafka import TopicLayoutError, ensure_topics
    from consentry.settings import CommonSettings

    settings = CommonSettings()
    try:
        counts = asyncio.run(ensure_topics(settings, replication=replication))
    except TopicLayoutError as exc:
        console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(1) from exc
    for name in sorted(counts):
        console.print(f"{name}: {counts[name]} partitions", soft_wrap=True)


@app.command("dead-letters")
def dead_letters(
    write: Annotated[
        Path | None,
        typer.Option(help="Also write each event, whole, to DIR/<topic>.jsonl: fix it, then re-drive it with `consentry import` (objections) or `consentry import-notices` (notices)."),
    ] = None,
) -> None:
    """List the events the consent service could not apply (consentry.consent-dead-letters), with the reason."""
    from consentry.deadletters import read_dead_letters, write_events
    from consentry.settings import CommonSettings

    settings = CommonSettings()
    letters = asyncio.run(read_dead_letters(settings))
    for letter in letters:
        key = letter.key.decode("utf-8", "replace") if letter.key is not None else "-"
        typer.echo(f"{letter.received_at}  {letter.where}  key={key}  {letter.reason}")
    console.print(f"{len(letters)} dead letters")
    if write is not None and letters:
        written = asyncio.run(write_events(settings, letters, write))
        for name, count in sorted(written.items()):
            console.print(f"{write / (name + '.jsonl') if name != 'gone' else 'no longer in their topic'}: {count}", soft_wrap=True)


@app.command()
def schemas(
    directory: Annotated[Path, typer.Option("--dir", help="Where to write them.")] = Path("schemas"),
    check: Annotated[bool, typer.Option("--check", help="Write nothing: exit 1 when a file differs from what the code declares.")] = False,
) -> None:
    """Write the JSON Schemas of the contract's messages (generated from consentry/contract.py,
    the declarations the code validates with) to schemas/."""
    from consentry.contract import schema_files

    stale = []
    for name, text in schema_files().items():
        path = directory / name
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not check:
            directory.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if check and stale:
        console.print(f"[bold red]stale:[/] {', '.join(map(str, stale))}: run `consentry schemas`", soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"{len(schema_files())} schemas in {directory}" + (f" ({len(stale)} written)" if stale and not check else " (up to date)"))


@app.command()
def produce(
    topic: Annotated[str, typer.Argument(help="The topic (posts, notices, objections, ...; CONSENTRY_TOPIC_PREFIX is prepended).")],
    file: Annotated[Path | None, typer.Argument(exists=True, dir_okay=False, help="JSON Lines to send (default: standard input).")] = None,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Check posts, notices and objections against the contract first; skip and list the invalid lines.")] = True,
    schema_id: Annotated[int | None, typer.Option(help="Frame each value as a Schema Registry JSON serializer does, with this schema id (CONSENTRY_POSTS_FRAMING=schema-registry).")] = None,
    show: Annotated[int, typer.Option(help="How many skipped lines to list.")] = 20,
) -> None:
    """Publish JSON Lines to TOPIC, each keyed by its user_id, acknowledged by the broker (acks=all),
    with progress on stderr."""
    from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn

    from consentry.settings import CommonSettings
    from consentry_cli.tools import produce as run, read_lines, stdin_lines, topic_name

    settings = CommonSettings()
    name = topic_name(settings, topic)
    source = file.open("rb") if file is not None else None
    started = time.monotonic()
    columns = (TextColumn(f"{name}: {{task.fields[sent]:,}} sent"), BarColumn(), DownloadColumn()) if file else (SpinnerColumn(), TextColumn(f"{name}: {{task.fields[sent]:,}} sent"))
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("produce", total=file.stat().st_size if file else None, sent=0)

            def update(report) -> None:  # type: ignore[no-untyped-def]
                progress.update(task, completed=source.tell() if source else None, sent=report.sent)

            report = asyncio.run(run(settings, name, read_lines(source) if source else stdin_lines(), check=check, schema_id=schema_id, progress=update))
    finally:
        if source is not None:
            source.close()
    console.print(f"{report.lines:,} lines: sent {report.sent:,}, skipped {len(report.skipped):,} in {time.monotonic() - started:.1f}s")
    for line, reason in report.skipped[:show]:
        console.print(f"  line {line}: {reason}", soft_wrap=True, markup=False)
    if len(report.skipped) > show:
        console.print(f"  ... and {len(report.skipped) - show:,} more")
    if report.skipped:
        raise typer.Exit(1)


@app.command()
def tail(
    topic: Annotated[str, typer.Argument(help="The topic (CONSENTRY_TOPIC_PREFIX is prepended).")],
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="Start at the oldest record (default: only new ones).")] = False,
    user: Annotated[str | None, typer.Option(help="Only the records of this user (their key, or their user_id).")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Each value as it is, one per line (default: where, when, key and the JSON indented).")] = False,
    max_records: Annotated[int | None, typer.Option("--max", min=1, help="Stop after this many records.")] = None,
    idle: Annotated[float | None, typer.Option(help="Stop after this many seconds without a record.")] = None,
) -> None:
    """Print the records of TOPIC as they arrive (every partition; no consumer group, nothing committed)."""
    from consentry.settings import CommonSettings
    from consentry_cli.tools import tail as run, topic_name

    settings = CommonSettings()
    name = topic_name(settings, topic)
    try:
        shown = asyncio.run(
            run(
                settings, name, from_beginning=from_beginning, user=user, raw=raw, limit=max_records, idle=idle, out=sys.stdout,
                ready=lambda n: console.print(f"tailing {name} ({n} partitions) from the {'beginning' if from_beginning else 'end'}" + (f", user {user}" if user else "")),
            )
        )
    except LookupError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        return
    console.print(f"{shown:,} records")


@app.command()
def snapshot(run_id: Annotated[str, typer.Argument(help="The training run's id (a canonical identifier).")]) -> None:
    """Pin the training store's latest version for a training run, record it on the lineage
    topic, and print JSON (version, rows, the Parquet files to read): the reader API for
    trainers in other languages. Read exactly those files; nothing else of the table."""
    import orjson

    from consentry.training import LineageNotRecorded, open_snapshot

    try:
        opened = open_snapshot(run_id)
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    except LineageNotRecorded as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    typer.echo(orjson.dumps(opened.describe(), option=orjson.OPT_INDENT_2).decode())


@app.command("log-ref")
def log_ref(user: Annotated[str, typer.Argument(help="The user_id.")]) -> None:
    """The pseudonym that stands for a user in every service's log lines (`user=`): logs never
    hold the id itself, so this is how an operator finds one person's lines."""
    from consentry.logs import user_ref

    typer.echo(user_ref(user))


@app.command()
def status(
    user: Annotated[str, typer.Argument(help="The user_id.")],
    rows: Annotated[bool, typer.Option("--rows", help="Also count the user's rows in the training store (TRAINING_STORE_URI; counts only).")] = False,
    store_only: Annotated[bool, typer.Option("--store-only", help="Ask the training store only (where the consent service is out of reach, as from the sink): the home partition and the rows.")] = False,
    raw: Annotated[bool, typer.Option("--raw", help="Print the consent service's JSON document only.")] = False,
) -> None:
    """A person's state for an operator: the consent service's document (status, history with
    the time of each step, notices; CONSENTRY_CONSENT_URL with CONSENTRY_SERVICE_TOKEN), their
    home partition and, with --rows, their rows in the training store."""
    import json

    from consentry.domain.model import identifier_problem
    from consentry.partitioning import home_partition
    from consentry_cli.tools import consent_status, stored_rows
    from services.gateway.settings import GatewaySettings

    problem = identifier_problem(user)
    if problem is not None:
        console.print(f"[bold red]error:[/] the user id {problem} (docs: canonical identifiers)")
        raise typer.Exit(2)
    if store_only:
        from consentry.settings import CommonSettings
        from services.sink.settings import SinkSettings

        partitions = CommonSettings().partitions
        store = SinkSettings().store_uri
        print(f"home partition: {home_partition(user, partitions)} of {partitions}")
        print(f"rows in the training store ({store}): {stored_rows(str(store), user)}")
        return
    settings = GatewaySettings()
    try:
        code, document = consent_status(settings.consent_url, settings.service_token, user)
    except OSError as exc:
        console.print(f"[bold red]error:[/] the consent service at {settings.consent_url} did not answer ({exc})", soft_wrap=True)
        raise typer.Exit(1) from exc
    if code != 200:
        console.print(f"[bold red]error:[/] the consent service answered {code}: {document.get('detail', document)}", soft_wrap=True)
        raise typer.Exit(1)
    if raw:
        print(json.dumps(document, ensure_ascii=False))
        return
    print(f"user {user}: {document['status']}" + (" (objected)" if document["objected"] else ""))
    print(f"home partition: {home_partition(user, settings.partitions)} of {settings.partitions}")
    for entry in document["history"]:
        steps = "  ".join(f"{name} {entry[name]}" for name in ("received_at", "enforced_at", "purged_at") if entry.get(name))
        purged = f"  rows_purged {entry['rows_purged']}" if entry.get("rows_purged") is not None else ""
        print(f"  {entry['kind']:<8} {entry['objection_id']}  ({entry['channel']})  {steps}{purged}")
    for notice in document.get("notices", []):
        print(f"  notice   {notice['notice_id']}  ({notice['channel']}, {notice['country']}, version {notice['notice_version']})  sent_at {notice['sent_at']}")
    if rows:
        from services.sink.settings import SinkSettings

        store = SinkSettings().store_uri
        print(f"rows in the training store ({store}): {stored_rows(str(store), user)}")


@app.command()
def audit(
    target: Annotated[str, typer.Argument(help="A user_id: their evidence; or `verify`: check the chain.")],
    user: Annotated[bool, typer.Option("--user", help="TARGET is a user_id even if it reads `verify`.")] = False,
    topic: Annotated[bool, typer.Option("--topic/--no-topic", help="verify: check the consentry.audit topic.")] = True,
    table: Annotated[bool, typer.Option("--table/--no-table", help="verify: check the Delta audit table.")] = True,
) -> None:
    """One person's evidence (every step with its time and proof, and the training runs that read
    their posts) as JSON; or `consentry audit verify`: the hash chain, naming the first broken link."""
    import orjson

    from consentry.audit import AuditTable, evidence, read_topic, verify_topic
    from consentry.domain.audit import RUN_READ, TABLE_KEY
    from consentry.kafka import client_options
    from services.audit.settings import AuditSettings

    settings = AuditSettings()
    if target == "verify" and not user:
        broken = False
        if topic:
            result = verify_topic(asyncio.run(read_topic(client_options(settings), settings.topics.audit)))
            console.print(f"topic {settings.topics.audit}: {result.summary()}", soft_wrap=True)
            broken |= not result.ok
        if table:
            result = AuditTable(settings.table_uri, create=False).verify()
            console.print(f"table {settings.table_uri}: {result.summary()}", soft_wrap=True)
            broken |= not result.ok
        raise typer.Exit(1 if broken else 0)
    try:
        store = AuditTable(settings.table_uri, create=False)
    except Exception as exc:  # deltalake's TableNotFoundError
        console.print(f"[red]no audit table at {settings.table_uri} ({type(exc).__name__}): is the audit writer running?[/]", soft_wrap=True)
        raise typer.Exit(2) from exc
    runs = {r["run_id"]: {"run_id": r["run_id"], "version": r["version"], "read_at_us": r["at_us"]} for r in store.records(TABLE_KEY) if r["fact"] == RUN_READ}
    print(orjson.dumps({"user_id": target, **evidence(store.records(target), runs)}, option=orjson.OPT_INDENT_2).decode())


@app.command()
def report(
    from_: Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD, UTC), included.")],
    to: Annotated[str, typer.Option("--to", help="Last day (YYYY-MM-DD, UTC), included.")],
    out: Annotated[Path, typer.Option("--out", help="Where report.html and report.json go.")] = Path("."),
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Verify the audit chain (topic and table) into the report.")] = True,
) -> None:
    """The compliance report for objections received between two days: report.html (self-contained)
    and report.json (the same figures), from the audit table."""
    import datetime as dt

    from consentry.audit import AuditTable, read_topic, verify_topic
    from consentry.domain.audit import Window, report_figures
    from consentry.kafka import client_options
    from consentry.timeutil import now_us
    from consentry_cli.report import render_html, render_json
    from services.audit.settings import AuditSettings

    def day(text: str) -> int:
        return int(dt.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=dt.UTC).timestamp() * 1_000_000)

    settings = AuditSettings()
    store = AuditTable(settings.table_uri, create=False)
    verification = None
    if verify:
        verification = store.verify()
        try:
            topic = verify_topic(asyncio.run(read_topic(client_options(settings), settings.topics.audit)))
            verification.breaks += topic.breaks
        except Exception as exc:  # the table alone still says something; say what was not checked
            console.print(f"[yellow]the audit topic could not be read ({type(exc).__name__}): only the table is verified[/]")
    figures = report_figures(store.records(), Window(day(from_), day(to) + 86_400_000_000), now_us(), verification)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.html").write_text(render_html(figures))
    (out / "report.json").write_bytes(render_json(figures))
    console.print(f"report: {out / 'report.html'} and {out / 'report.json'} ({figures['objections_received']} objections)")


@app.command("audit-writer")
def audit_writer() -> None:
    """Run the audit writer alone (one replica)."""
    from services.audit.__main__ import main as run

    run()


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def consent() -> None:
    """Run the consent service alone (faust worker)."""
    from services.consent.__main__ import main as run

    sys.argv = [sys.argv[0]]
    run()


@app.command()
def ingest() -> None:
    """Run the ingest service alone."""
    from services.ingest.__main__ import main as run

    run()


@app.command()
def sink() -> None:
    """Run the training sink alone."""
    from services.sink.__main__ import main as run

    run()


@app.command()
def gateway(
    demo: Annotated[bool, typer.Option("--demo", help="Allow the development secret beyond loopback (a demo, never production).")] = False,
) -> None:
    """Run the HTTP gateway alone."""
    from services.gateway.__main__ import main as run

    if demo:
        os.environ["CONSENTRY_DEMO"] = "true"
    run()


def main() -> None:
    app()
