#!/usr/bin/env bash
# `make container-test`: build what is missing (deploy/containers/images.sh), then run the system
# from the images on one host and check it (deploy/containers/container_test.py; it removes
# everything it started). Exit 0 pass, 1 fail, 3 no engine that can run containers here.
#   MASTERX_CT_BUILD=0   do not build: use the images present
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/containers/engine.sh
PY="${PYTHON:-.venv/bin/python}"

if [ "$ENGINE" = none ] || ! engine_can_run; then
  echo "container-test: SKIPPED: no container engine can run containers here (docker daemon or podman)" >&2
  exit 3
fi
if [ "${MASTERX_CT_BUILD:-1}" = 1 ]; then
  deploy/containers/images.sh gateway router reasoning benchmark emotion testkit
fi
exec "$PY" deploy/containers/container_test.py --engine "$ENGINE" "$@"
