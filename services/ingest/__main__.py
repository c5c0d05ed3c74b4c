import asyncio

from consentry import tracing
from consentry.logs import configure
from consentry.patches import check_versions, install_group_fencing
from consentry.runner import serve
from consentry.runtime import tune_gc
from services.ingest.settings import IngestSettings
from services.ingest.worker import IngestWorker


def main() -> None:
    settings = IngestSettings()
    configure("ingest", settings.log_level, settings.log_format)
    tracing.setup("ingest", settings.otlp_endpoint, settings.trace_file)
    check_versions()  # refuses library versions consentry.patches was not written for
    install_group_fencing(settings.session_timeout_ms / 1000)  # a worker expelled from its group writes nothing more
    tune_gc()
    asyncio.run(serve(IngestWorker(settings)))


if __name__ == "__main__":
    main()
