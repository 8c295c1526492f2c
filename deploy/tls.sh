#!/usr/bin/env bash
# Throwaway TLS material for deploy/compose.yaml's Redis: a CA and a server certificate for
# the names the containers and the host use (redis, localhost, 127.0.0.1), valid 30 days.
# For a real deployment bring certificates from your own CA instead; same file names.
#
#   deploy/tls.sh DIR      # writes DIR/ca.crt, DIR/redis.crt, DIR/redis.key
set -euo pipefail
dir=${1:?usage: deploy/tls.sh DIR}
mkdir -p "$dir"
cd "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=freshrec test CA" \
  -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=redis" -keyout redis.key -out redis.csr 2>/dev/null
printf 'subjectAltName=DNS:redis,DNS:localhost,IP:127.0.0.1\n' > redis.ext
openssl x509 -req -in redis.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
  -extfile redis.ext -out redis.crt 2>/dev/null
rm -f redis.csr redis.ext ca.srl ca.key   # the CA key is not needed again: nothing else is signed
# redis-server runs as the image's `redis` user, not as the owner of these files.
chmod 0644 redis.key
echo "TLS material in $dir: ca.crt redis.crt redis.key"
