# syntax=docker/dockerfile:1
# The gocluster image: `gocluster run` by default; the same image runs `db upgrade`,
# `serve`, `tick`, `show`... (docker run IMAGE COMMAND ...). See deploy/README.md.
#
# Stage 1 builds wheels of the project and of every dependency; stage 2 installs them
# into a virtualenv on a slim base without compilers or build tools, and runs as an
# unprivileged user. Pin the base image by digest where you build for production
# (docker buildx imagetools inspect python:3.11.14-slim-bookworm).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY workflows ./workflows
COPY consumers ./consumers
COPY schemas ./schemas
COPY office ./office
# The otlp extra: OTEL_TRACES_EXPORTER=otlp works in the image without another build.
RUN python -m pip wheel --wheel-dir /wheels '.[otlp]'

FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/gocluster/bin:$PATH \
    GOCLUSTER_HTTP_PORT=8080
# The wheels come in through a bind mount, so no layer of the image keeps them.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/gocluster \
    && /opt/gocluster/bin/pip install --no-index --find-links=/wheels 'gocluster[otlp]' \
    && groupadd --system --gid 10001 gocluster \
    && useradd --system --uid 10001 --gid gocluster --home-dir /var/lib/gocluster \
       --create-home --shell /usr/sbin/nologin gocluster
WORKDIR /var/lib/gocluster
USER 10001:10001
EXPOSE 8080
# Liveness of `gocluster run`: its /healthz on GOCLUSTER_HTTP_PORT (python, no curl here).
# Other commands override or disable it (deploy/compose.yaml does).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['GOCLUSTER_HTTP_PORT'], timeout=4)"]
ENTRYPOINT ["gocluster"]
CMD ["run", "--clock", "wall"]
