import sys

import uvicorn
from fastapi import FastAPI

from consentry import tracing
from consentry.logs import configure
from consentry.patches import check_versions
from consentry.runtime import tune_gc
from services.gateway.app import create_app, server_options
from services.gateway.security import InsecureConfiguration, check
from services.gateway.settings import GatewaySettings


def worker_app() -> FastAPI:
    """One gateway process's app (uvicorn calls it in each worker)."""
    tune_gc()
    settings = GatewaySettings()
    configure("gateway", settings.log_level, settings.log_format)  # each worker process (spawned) logs the same way
    tracing.setup("gateway", settings.otlp_endpoint, settings.trace_file)
    return create_app(settings)


def main() -> None:
    settings = GatewaySettings()
    configure("gateway", settings.log_level, settings.log_format)
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
