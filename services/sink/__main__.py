import asyncio

from consentry import tracing
from consentry.logs import configure
from consentry.patches import check_versions, install_group_fencing
from consentry.runner import serve
from consentry.runtime import tune_gc
from services.sink.settings import SinkSettings
from services.sink.worker import SinkWorker


def main() -> None:
    settings = SinkSettings()
    configure("sink", settings.log_level, settings.log_format)
    tracing.setup("sink", settings.otlp_endpoint, settings.trace_file)
    check_versions()  # refuses library versions consentry.patches was not written for
    install_group_fencing(settings.session_timeout_ms / 1000)  # a worker expelled from its group writes nothing more
    tune_gc()
    asyncio.run(serve(SinkWorker(settings)))


if __name__ == "__main__":
    main()
