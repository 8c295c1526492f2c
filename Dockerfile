# syntax=docker/dockerfile:1
# freshrec: one image for the API (`freshrec serve`, the default command) and the dataflow
# (`freshrec worker ...`). Build from the repository root:
#
#   docker build -t freshrec:0.1.0 .
#
# No dataset is copied into the image: datasets are mounted at /data (FRESHREC_DATA_DIR).
# Run and scale: docs/deploy.md. Checked statically by tests/test_deploy_files.py; this file
# has not been built on the machine it was written on (no Docker engine there).

# Builder and runtime must use the same base: the venv links to /usr/local/bin/python3.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: the locked environment (uv.lock) in /opt/venv ------------------------------
FROM ${PYTHON_IMAGE} AS builder

# hnswlib is published as an sdist only: building it needs a C++ compiler.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# The native operators (operators/, a PyO3 crate) are built by maturin with a Rust toolchain;
# Debian's cargo is too old for the crate (edition 2024), so rustup installs a pinned one.
ARG RUST_VERSION=1.95.0
ENV RUSTUP_HOME=/opt/rustup CARGO_HOME=/opt/cargo PATH=/opt/cargo/bin:$PATH
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
    | sh -s -- -y --profile minimal --default-toolchain "${RUST_VERSION}" --no-modify-path

# The uv release the lock file was written with (see ./dev: uv comes from pip there too).
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"

# HNSWLIB_NO_NATIVE: without it hnswlib compiles with -march=native, and the image would die
# with SIGILL on a host whose CPU lacks an instruction set of the build machine.
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    HNSWLIB_NO_NATIVE=1

WORKDIR /src

# Dependencies first: this layer is rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project

# Then the project's packages (pyproject: [tool.maturin]: the crate and native module under
# operators/, and the python-packages), built by maturin into a wheel installed into the venv
# (--no-editable), so the runtime stage copies the venv and gets the packages with it;
# nothing under /src (nor the Rust toolchain) is needed at run time.
COPY README.md ./
COPY freshrec ./freshrec
COPY dataflows ./dataflows
COPY operators ./operators
COPY serving ./serving
COPY state ./state
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=cache,target=/opt/cargo/registry \
    uv sync --frozen --no-dev --no-editable

# --- runtime -------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# A fixed numeric uid/gid so orchestrators can check runAsNonRoot and volumes can be chowned.
RUN groupadd --system --gid 10001 freshrec \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/freshrec --shell /usr/sbin/nologin freshrec \
    && mkdir -p /var/lib/freshrec/recovery /data \
    && chown -R 10001:10001 /var/lib/freshrec

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FRESHREC_API_HOST=0.0.0.0 \
    FRESHREC_API_PORT=8000 \
    FRESHREC_RUN_DIR=/var/lib/freshrec/run \
    FRESHREC_DATA_DIR=/data

WORKDIR /var/lib/freshrec

# The worker's Bytewax recovery store lives in /var/lib/freshrec/recovery (`-r`): keep it on a
# volume or every restart replays the events topic from the beginning.
VOLUME ["/var/lib/freshrec"]

USER 10001:10001

# 8000: the API. 3030: the worker's /metrics (Bytewax API server; process i uses 3030 + i).
EXPOSE 8000 3030

# Bytewax and granian both shut down cleanly on SIGINT (Bytewax dies on SIGTERM and resumes
# from its last snapshot next time, repeating up to one snapshot interval of output).
STOPSIGNAL SIGINT

# For the API (the default command). The worker serves no /health: compose overrides this
# check for the worker services with a probe of Bytewax's API server (GET :3030+i/dataflow).
# python:slim has no curl, hence urllib; urlopen raises (exit 1) on anything but 2xx/3xx.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('FRESHREC_API_PORT', '8000') + '/health', timeout=2)"]

ENTRYPOINT ["freshrec"]
CMD ["serve"]
