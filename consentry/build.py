"""`consentry_build_info{version,python}` = 1 in every service: which release each replica runs
(a mixed fleet during a rollout shows as two series). Imported by each service's metrics module."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import Gauge


def consentry_version() -> str:
    try:
        return version("consentry")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


# "max": in the gateway's multiprocess mode, one series whatever the number of workers.
BUILD_INFO = Gauge("consentry_build_info", "Always 1; the labels say which Consentry release and Python this process runs", ["version", "python"], multiprocess_mode="max")
BUILD_INFO.labels(consentry_version(), platform.python_version()).set(1)
