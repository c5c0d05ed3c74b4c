import asyncio

from consentry.logs import configure
from consentry.patches import check_versions
from consentry.runner import serve
from consentry.runtime import tune_gc
from services.audit.settings import AuditSettings
from services.audit.worker import AuditWorker


def main() -> None:
    settings = AuditSettings()
    configure("audit", settings.log_level, settings.log_format)
    check_versions()  # refuses library versions consentry.patches was not written for
    tune_gc()
    asyncio.run(serve(AuditWorker(settings)))


if __name__ == "__main__":
    main()
