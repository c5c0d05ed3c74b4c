# One image for every Consentry service; each runs as `consentry <command>`:
#   consentry topics | consent | ingest | sink | gateway | vacuum | import FILE | token USER
# See docker-compose.yml and deploy/k8s/ for how they are wired to Apache Kafka.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/consentry
WORKDIR /src
# Exactly the runtime lock (pyproject.toml's pins and everything they pull in, each file checked
# against its hash; no dev extras, so no embedded broker), then the project without resolving.
COPY requirements/runtime.txt ./requirements/runtime.txt
RUN /opt/consentry/bin/pip install --no-compile --require-hashes -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY consentry ./consentry
COPY consentry_cli ./consentry_cli
COPY services ./services
RUN /opt/consentry/bin/pip install --no-compile --no-deps --no-build-isolation .

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 consentry \
    && useradd --system --uid 10001 --gid consentry --home-dir /var/lib/consentry --shell /usr/sbin/nologin consentry \
    && mkdir -p /var/lib/consentry \
    && chown consentry:consentry /var/lib/consentry
COPY --from=build /opt/consentry /opt/consentry
# Inside a container the services listen on every interface; the data directory holds the
# consent service's RocksDB state and, unless TRAINING_STORE_URI says otherwise, the Delta table.
ENV PATH=/opt/consentry/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CONSENTRY_DATA_DIR=/var/lib/consentry \
    CONSENTRY_CONSENT_HOST=0.0.0.0 \
    CONSENTRY_INGEST_HOST=0.0.0.0 \
    CONSENTRY_SINK_HOST=0.0.0.0 \
    GATEWAY_HOST=0.0.0.0
WORKDIR /var/lib/consentry
USER 10001:10001
# gateway, consent, ingest, sink
EXPOSE 8080 6066 9101 9102
CMD ["consentry", "--help"]
