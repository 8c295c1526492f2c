#!/usr/bin/env bash
# The container smoke run: build the images, start deploy/compose.yaml (+ deploy/smoke.yaml)
# from them alone, replay real events through the API while `docker kill`ing one Bytewax
# worker, check exactly-once and that recommendations were served throughout, print one
# summary line, then stop and remove every container, network and volume it started (the
# images stay, so the next run's build is a cache hit).
#
#   deploy/smoke.sh                        # run from anywhere; needs ./dev's .venv
#
# Environment (all optional):
#   BASE_IMAGE=freshrec-base:bookworm  base of both images; this one is built by
#                                      deploy/base-image.sh when missing (root + debootstrap)
#   BUILD_CA_FILE=path.pem             CA of a TLS-intercepting proxy, trusted by the builder
#   SMOKE_EVENTS=20000                 Taobao events to replay (FRESHREC_DATA_DIR: datasets)
#   SMOKE_SECONDS=40                   spread the replay over this long
#   SMOKE_KEEP=1                       leave the cluster running (prints how to remove it)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
started_s=$(date +%s)
log() { echo "smoke: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

BASE_IMAGE=${BASE_IMAGE:-freshrec-base:bookworm}
SMOKE_EVENTS=${SMOKE_EVENTS:-20000}
SMOKE_SECONDS=${SMOKE_SECONDS:-40}
PY=$ROOT/.venv/bin/python
[ -x "$PY" ] || die "run ./dev --help first (the checks use the project's .venv)"
command -v docker >/dev/null || die "no docker CLI"
command -v openssl >/dev/null || die "no openssl (for the throwaway Redis TLS certificates)"
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
export FRESHREC_DATA_DIR=${FRESHREC_DATA_DIR:-$(cd "$ROOT/.." && pwd)/shared/data}
[ -d "$FRESHREC_DATA_DIR/taobao-userbehavior" ] || die "no Taobao dataset under $FRESHREC_DATA_DIR"

# --- images ------------------------------------------------------------------------------
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  [ "$BASE_IMAGE" = freshrec-base:bookworm ] || die "base image $BASE_IMAGE not found"
  log "building $BASE_IMAGE from Debian packages (deploy/base-image.sh)"
  deploy/base-image.sh "$BASE_IMAGE" >&2
fi
ca_args=()
if [ -n "${BUILD_CA_FILE:-}" ]; then ca_args=(--build-arg "BUILD_CA_PEM=$(cat "$BUILD_CA_FILE")"); fi
build_started=$(date +%s)
DOCKER_BUILDKIT=0 docker build -q --force-rm --build-arg "BASE_IMAGE=$BASE_IMAGE" "${ca_args[@]}" \
  -t freshrec:0.1.0 . >&2 || die "docker build of freshrec:0.1.0"
app_build_s=$(( $(date +%s) - build_started ))
build_started=$(date +%s)
DOCKER_BUILDKIT=0 docker build -q --force-rm --build-arg "BASE_IMAGE=$BASE_IMAGE" \
  -f deploy/infra.Dockerfile -t freshrec-infra:0.1.0 deploy >&2 || die "docker build of freshrec-infra"
infra_build_s=$(( $(date +%s) - build_started ))
size_mb() { echo $(( $(docker image inspect -f '{{.Size}}' "$1") / 1000000 )); }
log "built freshrec:0.1.0 ($(size_mb freshrec:0.1.0) MB, ${app_build_s}s) and" \
  "freshrec-infra:0.1.0 ($(size_mb freshrec-infra:0.1.0) MB, ${infra_build_s}s)"

# --- the cluster -------------------------------------------------------------------------
work=$(mktemp -d /tmp/freshrec-smoke.XXXXXX)
project=freshrec-smoke-$(basename "$work" | cut -d. -f2 | tr 'A-Z' 'a-z')
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
api_port=$(free_port)
redis_port=$(free_port)
export TLS_DIR=$work/tls ENV_FILE=$work/freshrec.env BASE_IMAGE
export HTTP_PUBLISH=127.0.0.1:$api_port SMOKE_REDIS_PORT=$redis_port
compose() { "${COMPOSE[@]}" -p "$project" -f deploy/compose.yaml -f deploy/smoke.yaml "$@"; }
cleanup() {
  status=$?
  if [ "${SMOKE_KEEP:-}" = 1 ]; then
    log "kept: ENV_FILE=$ENV_FILE TLS_DIR=$TLS_DIR ${COMPOSE[*]} -p $project -f deploy/compose.yaml -f deploy/smoke.yaml down -v"
    exit "$status"
  fi
  if [ "$status" != 0 ]; then compose logs --no-color --tail 40 >"$work.log" 2>&1 || true; log "logs: $work.log"; fi
  compose down -v --remove-orphans -t 5 >/dev/null 2>&1 || log "compose down failed (project $project)"
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

deploy/tls.sh "$TLS_DIR" >/dev/null
password=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(24))')
admin_key=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(24))')
# The committed example, with its placeholders filled in: what a deployment would start from.
sed -e "s|change-me|$password|g" -e "s|^FRESHREC_ADMIN_API_KEY=.*|FRESHREC_ADMIN_API_KEY=$admin_key|" \
  deploy/freshrec.env.example >"$ENV_FILE"

up_started=$(date +%s)
compose up -d >&2 2>"$work/up.log" || { cat "$work/up.log" >&2; die "compose up"; }
services=(lb api-0 api-1 worker-0 worker-1 worker-ref)
deadline=$(( $(date +%s) + 240 ))
for service in "${services[@]}"; do
  id=$(compose ps -q "$service")
  until [ "$(docker inspect -f '{{.State.Health.Status}}' "$id")" = healthy ]; do
    [ "$(date +%s)" -lt "$deadline" ] || die "$service not healthy within 240 s"
    sleep 1
  done
done
up_s=$(( $(date +%s) - up_started ))
log "cluster healthy in ${up_s}s (project $project, API on 127.0.0.1:$api_port)"

# --- load, kill, checks ------------------------------------------------------------------
killed=$(compose ps -q worker-1)
redis_url="rediss://:$password@127.0.0.1:$redis_port/0?ssl_ca_certs=$TLS_DIR/ca.crt"
result=$("$PY" deploy/smoke_drive.py --api "http://127.0.0.1:$api_port" --redis-url "$redis_url" \
  --kill "$killed" --events "$SMOKE_EVENTS" --seconds "$SMOKE_SECONDS") \
  || die "checks: ${result:-no result}"
restarts=$(for s in worker-0 worker-1; do docker inspect -f '{{.RestartCount}}' "$(compose ps -q "$s")"; done | paste -sd/)
total_s=$(( $(date +%s) - started_s ))
echo "smoke OK in ${total_s}s: build ${app_build_s}s+${infra_build_s}s," \
  "images $(size_mb freshrec:0.1.0)+$(size_mb freshrec-infra:0.1.0) MB, cluster up ${up_s}s," \
  "worker restarts (policy) $restarts, $result"
