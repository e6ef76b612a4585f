# syntax=docker/dockerfile:1
# The operator's container image: `python -m ductape_operator` as a non-root user.
# Not built in CI (no Docker engine runs there). Build and push it yourself:
#   docker build -t <your-registry>/ductape-operator:0.1.0 .
# then install the chart with --set image.repository=<your-registry>/ductape-operator.
#
# Dependencies are pinned by requirements.lock (used as a constraints file: the lock also
# holds the dev tools, which the image does not need). The lock carries no hashes, so
# --require-hashes cannot be used; pin the base image by digest in your build if you need
# byte-for-byte reproducible images.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY operator ./operator
# Wheels only for dependencies (no compiler in this image either); the project itself is
# pure Python, built by hatchling in pip's isolated build environment.
RUN /opt/venv/bin/pip install --prefer-binary --constraint requirements.lock ".[operator]" \
 && /opt/venv/bin/pip uninstall -y pip setuptools wheel \
 && /opt/venv/bin/python -c "import ductape_operator.__main__"

FROM ${PYTHON_IMAGE}
# Same numeric ids as the Helm chart's securityContext (runAsUser/runAsGroup 65532).
RUN groupadd --gid 65532 ductape \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin ductape
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DUCTAPE_BIND_ADDRESS=0.0.0.0
USER 65532:65532
# Health (/healthz) and metrics ports as the chart sets them.
EXPOSE 8080 9090
ENTRYPOINT ["ductape-operator"]
