#!/usr/bin/env bash
# Build the base image `python:3.11-slim-bookworm` locally when no registry can be reached.
#
#   deploy/containers/base.sh            build it unless an image of that name exists (or pulls)
#   deploy/containers/base.sh --force    rebuild it
#
# What it builds matches what deploy/docker/Dockerfile relies on in the official image: Debian
# bookworm (debootstrap --variant=minbase from DEBIAN_MIRROR), Python 3.11 with pip and venv, and
# `python`, `pip` in /usr/local/bin with packages in /usr/local/lib/python3.11/site-packages (here
# a venv at /usr/local over Debian's python3.11, so `pip install --prefix=/install` + COPY into
# /usr/local works unchanged), groupadd/useradd, apt-get, CA certificates.
# The host's extra CAs (MASTERX_BASE_CA_DIR, default /usr/local/share/ca-certificates) are
# trusted in the base, for hosts behind a TLS-intercepting proxy; set it empty to skip.
# Needs root and debootstrap (apt-get install debootstrap). About 2-3 minutes, ~90 MB download.
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/containers/engine.sh

force=0
[ "${1:-}" = --force ] && force=1
if [ "$ENGINE" = none ]; then
  echo "no container engine (docker with a daemon, or podman)" >&2
  exit 1
fi
if [ $force = 0 ] && image_exists "$PYTHON_IMAGE"; then
  echo "base image $PYTHON_IMAGE present"
  exit 0
fi
if [ $force = 0 ] && [ "${MASTERX_BASE_PULL:-1}" = 1 ] && timeout 60 "$ENGINE" pull -q "docker.io/library/$PYTHON_IMAGE" >/dev/null 2>&1; then
  echo "base image $PYTHON_IMAGE pulled"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap not found (apt-get install debootstrap)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "building the base image with debootstrap needs root" >&2; exit 1; }

mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
root="$(mktemp -d /var/tmp/masterx-base.XXXXXX)"
log="$root.log"
trap 'rm -rf "$root"' EXIT
trap 'echo "base image build failed; log: $log" >&2; tail -20 "$log" >&2' ERR
echo "debootstrap bookworm from $mirror into $root (log: $log)"
start=$(date +%s)
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$log" 2>&1
cat >"$root/etc/apt/sources.list" <<SRC
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SRC
cp /etc/resolv.conf "$root/etc/resolv.conf"
# A host behind a TLS-intercepting proxy trusts extra CAs: the local base trusts the same ones,
# so pip and apt-get inside builds work (MASTERX_BASE_CA_DIR= empty to skip).
ca_dir="${MASTERX_BASE_CA_DIR-/usr/local/share/ca-certificates}"
if [ -n "$ca_dir" ] && compgen -G "$ca_dir/*.crt" >/dev/null; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp "$ca_dir"/*.crt "$root/usr/local/share/ca-certificates/"
fi
chroot "$root" /bin/sh -exc '
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3.11 python3.11-venv ca-certificates
  update-ca-certificates >/dev/null
  python3.11 -m venv /usr/local
  ln -sf python3.11 /usr/local/bin/python3 2>/dev/null || true
  test -x /usr/local/bin/python && test -x /usr/local/bin/pip
  apt-get clean
  : >/etc/resolv.conf
  rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc/* /usr/share/man/* /usr/share/locale/*
' >>"$log" 2>&1
tar -C "$root" -c . | "$ENGINE" import \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "docker.io/library/$PYTHON_IMAGE" >/dev/null
[ "$ENGINE" = docker ] || "$ENGINE" tag "docker.io/library/$PYTHON_IMAGE" "$PYTHON_IMAGE" 2>/dev/null || true
"$ENGINE" run --rm "$PYTHON_IMAGE" python -c 'import sys, venv, ensurepip; print("base:", sys.version.split()[0], sys.prefix)'
echo "base image $PYTHON_IMAGE built in $(( $(date +%s) - start )) s"
