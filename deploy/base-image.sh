#!/usr/bin/env bash
# Build a local base image from Debian's packages, for hosts that cannot pull from a registry:
# debootstrap a minimal bookworm rootfs with Python 3.11, then `docker import` it.
#
#   sudo deploy/base-image.sh [TAG]          # default tag: freshrec-base:bookworm
#   docker build --build-arg BASE_IMAGE=freshrec-base:bookworm -t freshrec:0.1.0 .
#
# The image holds Debian's python3 (3.11, as python:3.11-slim-bookworm) and CA certificates,
# nothing else; the Dockerfile's builder stage adds compilers with apt (from the same mirror).
# Needs root and debootstrap (apt-get install debootstrap). MIRROR overrides the Debian mirror.
set -euo pipefail

TAG=${1:-freshrec-base:bookworm}
SUITE=bookworm
MIRROR=${MIRROR:-http://deb.debian.org/debian}
# The rootfs is kept between runs (debootstrap takes minutes); BASE_ROOTFS_DIR moves it.
ROOTFS=${BASE_ROOTFS_DIR:-/var/tmp/freshrec-base-rootfs}

if [ "$(id -u)" != 0 ]; then
  echo "base-image.sh: debootstrap needs root" >&2
  exit 1
fi
command -v debootstrap >/dev/null || { echo "base-image.sh: apt-get install debootstrap" >&2; exit 1; }

if [ ! -x "$ROOTFS/usr/bin/python3" ]; then
  rm -rf "$ROOTFS"
  # minbase: essential packages and apt only (no init system, no man pages pulled in).
  debootstrap --variant=minbase --include=python3,ca-certificates "$SUITE" "$ROOTFS" "$MIRROR"
  # What an image needs no copy of: package caches and lists, docs, man pages, locales.
  chroot "$ROOTFS" apt-get clean
  rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
    "$ROOTFS"/usr/share/locale/* "$ROOTFS"/var/log/*.log "$ROOTFS"/tmp/*
  # The same source list the official debian images carry (the builder stage uses apt).
  echo "deb $MIRROR $SUITE main" > "$ROOTFS/etc/apt/sources.list"
  echo "deb $MIRROR $SUITE-updates main" >> "$ROOTFS/etc/apt/sources.list"
  echo "deb http://deb.debian.org/debian-security $SUITE-security main" >> "$ROOTFS/etc/apt/sources.list"
fi

# The Dockerfile's builder and runtime expect python3 where python:slim has it.
ln -sf /usr/bin/python3 "$ROOTFS/usr/local/bin/python3"

# --change sets what `docker import` would otherwise leave empty (no ENV, no CMD).
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
  --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  - "$TAG" >/dev/null
docker image inspect --format "{{.RepoTags}} {{.Size}} bytes" "$TAG"
