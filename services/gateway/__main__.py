# prometheus_client is imported (through the app) only after prepare_multiprocess_metrics: it
# reads PROMETHEUS_MULTIPROC_DIR when imported.
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from consentry import tracing
from consentry.logs import configure
from services.gateway.settings import GatewaySettings

if TYPE_CHECKING:
    from fastapi import FastAPI


def worker_app() -> "FastAPI":
    """One gateway process's app (uvicorn calls it in each worker)."""
    from consentry.runtime import tune_gc
    from services.gateway.app import create_app

    tune_gc()
    settings = GatewaySettings()
    configure("gateway", settings.log_level, settings.log_format)  # each worker process (spawned) logs the same way
    tracing.setup("gateway", settings.otlp_endpoint, settings.trace_file)
    return create_app(settings)


def prepare_multiprocess_metrics(workers: int) -> Path | None:
    """With several worker processes, each answering /metrics in turn, every answer must be the sum
    over all of them: prometheus-client's multiprocess mode, in PROMETHEUS_MULTIPROC_DIR (the
    operator's, or a new private directory) that the workers inherit. Emptied first: files of an
    earlier run would count twice. Runs before prometheus_client is imported in this process."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if workers <= 1 and not given:
        return None
    assert "prometheus_client" not in sys.modules, "PROMETHEUS_MULTIPROC_DIR must be ready before prometheus_client is imported"
    directory = Path(given) if given else Path(tempfile.mkdtemp(prefix="consentry-gateway-metrics-"))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return directory


def main() -> None:
    settings = GatewaySettings()
    configure("gateway", settings.log_level, settings.log_format)
    prepare_multiprocess_metrics(settings.gateway_workers)

    import uvicorn

    from consentry.patches import check_versions
    from services.gateway.app import server_options
    from services.gateway.security import InsecureConfiguration, check

    check_versions()  # refuses library versions consentry.patches was not written for
    try:
        check(settings)  # refuses keys anyone could sign with, before listening anywhere
    except InsecureConfiguration as exc:
        print(f"consentry gateway: refusing to start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    options = server_options(settings)
    if settings.gateway_workers > 1:
        # Each worker process builds its app (and its Kafka producer) from the environment.
        uvicorn.run("services.gateway.__main__:worker_app", factory=True, workers=settings.gateway_workers, **options)
    else:
        uvicorn.run(worker_app(), **options)


if __name__ == "__main__":
    main()
