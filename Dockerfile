# syntax=docker/dockerfile:1
#
# Operator image: runs `tablesync-operator` (package tablesync_operator, operator/).
# Build from the repository root (the build needs requirements/constraints.txt):
#
#   docker build -t tablesync/operator:0.1.0 -f Dockerfile .
#
# Stage "builder" turns the operator and every dependency into wheels, each pinned by
# requirements/constraints.txt, and installs them into a virtualenv without pip. The final
# stage is the same slim Python with only that virtualenv copied in: no compilers, no pip, no
# sources, no caches. It runs as UID/GID 65532 (the chart sets runAsNonRoot, a read-only root
# file system and an emptyDir on /tmp). Pin PYTHON_IMAGE by digest in release builds.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY requirements/constraints.txt requirements/constraints.txt
COPY operator/pyproject.toml operator/pyproject.toml
COPY operator/tablesync_operator operator/tablesync_operator
RUN pip wheel --wheel-dir /wheels --constraint requirements/constraints.txt ./operator \
 && python -m venv --without-pip /opt/venv \
 && pip --python /opt/venv/bin/python install --no-index --find-links /wheels \
        --constraint requirements/constraints.txt tablesync-operator

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="tablesync-operator" \
      org.opencontainers.image.description="Reconciles TableSync resources into CronJobs; reports lag, overrun and drift" \
      org.opencontainers.image.version="0.1.0"
# Nothing here builds or installs software at run time: drop the base image's packaging tools.
RUN python -m pip uninstall --yes --no-cache-dir pip setuptools wheel \
 && groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin nonroot
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
# /metrics and /healthz (TABLESYNC_OPERATOR_METRICS_PORT)
EXPOSE 8080
ENTRYPOINT ["tablesync-operator"]
