"""`make bench`: every measurement side by side, in one run, on one embedded broker.

    python -m bench [--posts 200000] [--only limit,peer,...] [--profile DIR] [--no-write]

Prints the table with ratios and writes docs/benchmarks.md (results, machine, command).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import report
from bench.common import ROOT, free_port, make_dataset
from consentry_cli.broker import EmbeddedBroker

STEPS = ("limit", "peer", "ingest", "full", "sinks", "latency", "gateway", "purge", "memory", "consent", "import", "import-enforced", "recovery", "audit")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=400_000, help="posts in the backlog (default 400,000)")
    parser.add_argument("--users", type=int, default=20_000, help="distinct users (10 %% of them objected)")
    parser.add_argument("--only", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    parser.add_argument("--repeat", type=int, default=2, help="runs of 1-3, the fastest kept (default 2)")
    parser.add_argument("--purge-rows", default="5000000,50000000", help="training table sizes, comma-separated (a sink's RSS on each, then a purge)")
    parser.add_argument("--purge-users", type=int, default=1_000)
    parser.add_argument("--memory-users", type=int, default=1_000_000)
    parser.add_argument("--consent-users", type=int, default=25_000, help="users of the consent rate step (1.3 events each)")
    parser.add_argument("--imports", type=int, default=25_000, help="objections of the import-to-enforced step (3 consent events each)")
    parser.add_argument("--recovery-users", type=int, default=30_000, help="users of the recovery step's table (bench/failover.py)")
    parser.add_argument("--profile", type=Path, help="record py-spy profiles of ingest and the gateway here")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--ingest-capacity", type=float, help="posts/s step 4 takes 55 %% of, when step 3 is not run (two runs at one load)")
    parser.add_argument("--scale", action="store_true", help="also the scale-out measurement (bench/scale.py; --only '' for it alone)")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(STEPS)
    if unknown:
        parser.error(f"unknown steps: {', '.join(sorted(unknown))}")

    command = "make bench" if argv is None and len(sys.argv) == 1 else "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv)
    work = Path(tempfile.mkdtemp(prefix="consentry-bench-"))
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {"load": {"start": os.getloadavg()[0]}}
    started = time.monotonic()
    print(f"working directory: {work}", flush=True)
    broker = EmbeddedBroker(free_port(), log_path=work / "broker.log")
    broker.start()
    try:
        data = make_dataset(args.posts, args.users)
        print(f"data set: {len(data.posts):,} posts of {data.mean_bytes:.0f} bytes, {len(data.users):,} users, "
              f"{len(data.objected):,} objected; {data.expected_accepted:,} eligible", flush=True)
        results["dataset"] = {"posts": len(data.posts), "users": len(data.users), "objected": len(data.objected),
                              "mean_bytes": data.mean_bytes, "eligible": data.expected_accepted}
        for step in only:
            step_started = time.monotonic()
            print(f"--- {step}", flush=True)
            try:
                results[step] = run_step(step, broker.bootstrap, data, work, args, results)
            except Exception as exc:  # one failed measurement must not hide the others
                traceback.print_exc()
                results[step] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            results[step]["wall_seconds"] = time.monotonic() - step_started
            print(f"    {results[step]}", flush=True)
        if args.scale:
            from bench import scale

            print("--- scale", flush=True)
            try:
                results["scale"] = scale.run(broker.bootstrap, work / "scale")
            except Exception as exc:  # as a step's
                traceback.print_exc()
                results["scale"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    finally:
        broker.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    results["total_seconds"] = {"seconds": time.monotonic() - started}
    results["load"]["end"] = os.getloadavg()[0]
    table = report.table(results)
    if "sinks" in results:  # row 3c, after 3b (bench/two_sinks.py)
        from bench import two_sinks

        table = two_sinks.with_rows(table, results)
    if "scale" in results:
        table += "\n\n" + report.scale_table(results["scale"])
    print()
    print(table)
    if not args.no_write:
        path = ROOT / "docs" / "benchmarks.md"
        report.write(path, results, table, command)
        print(f"\nwrote {path.relative_to(ROOT)}")
    return 0


def run_step(step: str, bootstrap: str, data, work: Path, args, results: dict) -> dict:  # type: ignore[no-untyped-def]
    from bench import throughput

    profile = args.profile
    if step == "limit":
        return best_of(args.repeat, lambda run: throughput.limit(bootstrap, data, work, run))
    if step == "peer":
        return best_of(args.repeat, lambda run: throughput.peer(bootstrap, data, work, run))
    if step == "ingest":
        return best_of(args.repeat, lambda run: throughput.ingest(bootstrap, data, work, profile / f"ingest{run}.txt" if profile else None, run))
    if step == "full":
        return throughput.full_path(bootstrap, data, work, profile / "sink.txt" if profile else None)
    if step == "sinks":
        from bench import two_sinks

        return two_sinks.run(bootstrap, data, work, args.repeat, profile=profile / "sinks" if profile else None)
    if step == "latency":
        from bench import latency

        capacity = results.get("ingest", {}).get("rate") or args.ingest_capacity
        return latency.run(bootstrap, data, work, capacity)
    if step == "gateway":
        from bench import gateway

        return gateway.run(bootstrap, work, profile / "gateway.txt" if profile else None)
    if step == "purge":
        from bench import purge

        return purge.run(work, [int(n) for n in str(args.purge_rows).split(",")], args.purge_users, bootstrap)
    if step == "memory":
        from bench import memory

        return memory.run_memory(bootstrap, work, args.memory_users)
    if step == "consent":
        from bench import consent_rate

        return consent_rate.measure(bootstrap, work, args.consent_users, args.repeat)
    if step == "import":
        return import_bench(bootstrap, work)
    if step == "import-enforced":
        from bench import import_enforced

        return import_enforced.run(bootstrap, work, args.imports)
    if step == "recovery":
        from bench import failover

        return failover.run_failover(bootstrap, work, args.recovery_users)
    if step == "audit":
        from bench import audit

        return audit.run(bootstrap, data, work, args.repeat)
    raise ValueError(step)


def best_of(repeat: int, measure) -> dict:  # type: ignore[no-untyped-def]
    """The fastest of `repeat` runs (the machine is shared: slower runs measure the neighbours)."""
    runs = [measure(run) for run in range(repeat)]
    if any("rate" not in r for r in runs):
        return runs[0]
    best = max(runs, key=lambda r: r["rate"])
    return {**best, "runs": [round(r["rate"]) for r in runs]}


def import_bench(bootstrap: str, work: Path) -> dict:
    """The 1M-line import micro-benchmark, when bench/import_bench.py exists (another issue's)."""
    import subprocess

    script = ROOT / "bench" / "import_bench.py"
    if not script.exists():
        return {"skipped": "bench/import_bench.py is not in this branch"}
    # It starts its own embedded broker (as when run alone) and says so in its output.
    out = subprocess.run([sys.executable, "-m", "bench.import_bench"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    lines = [line for line in (out.stdout + out.stderr).strip().splitlines() if line.startswith(("import:", "MISMATCH", "SLOW"))]
    return {"exit_code": out.returncode, "output": "\n".join(lines[-5:])}


if __name__ == "__main__":
    sys.exit(main())
