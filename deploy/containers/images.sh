#!/usr/bin/env bash
# Build the MasterX images with whichever engine exists: docker with BuildKit when a daemon
# answers, else podman (buildah underneath). Builds the base image first when it is missing and no
# registry answers (deploy/containers/base.sh).
#
#   deploy/containers/images.sh                       the cheap targets + the test kit
#   deploy/containers/images.sh router-local emotion-gpu   named targets only
#   MASTERX_IMAGES_ALL=1 deploy/containers/images.sh  every target (router-local compiles
#                                                     llama.cpp, ~8 min on 2 cores; emotion-gpu
#                                                     downloads ~3 GB of CUDA wheels)
#
# Tags: masterx/<target>:${MASTERX_TAG:-dev} (the names deploy/k8s and deploy/compose.yaml use).
# Every target's build time is printed; image sizes with `$ENGINE images masterx/*`.
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/containers/engine.sh

CHEAP=(gateway router reasoning benchmark emotion testkit)
HEAVY=(router-local emotion-gpu)
TAG="${MASTERX_TAG:-dev}"
if [ $# -gt 0 ]; then
  targets=("$@")
elif [ "${MASTERX_IMAGES_ALL:-0}" = 1 ]; then
  targets=("${CHEAP[@]}" "${HEAVY[@]}")
else
  targets=("${CHEAP[@]}")
fi

if [ "$ENGINE" = none ]; then
  echo "make images: no container engine here (install Docker with BuildKit, or podman: apt-get install podman runc)" >&2
  exit 1
fi
deploy/containers/base.sh

build() {  # build <dockerfile> <context> <tag> [target]
  local file=$1 ctx=$2 tag=$3 target=${4:-}
  local args=(-f "$file" -t "$tag" --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE")
  [ -n "$target" ] && args+=(--target "$target")
  if [ "$ENGINE" = docker ]; then
    DOCKER_BUILDKIT=1 docker build -q "${args[@]}" "$ctx" >/dev/null
  else
    # --pull=never: the base is local (a registry may not be reachable); layers are cached.
    podman build -q --pull=never --layers "${args[@]}" "$ctx" >/dev/null
  fi
}

for t in "${targets[@]}"; do
  start=$(date +%s)
  if [ "$t" = testkit ]; then
    ctx="$(mktemp -d)"
    cp deploy/testkit/Dockerfile masterx_runtime/testing/fake_llm.py "$ctx/"
    build "$ctx/Dockerfile" "$ctx" "masterx/testkit:$TAG"
    rm -rf "$ctx"
  else
    build deploy/docker/Dockerfile . "masterx/$t:$TAG" "$t"
  fi
  echo "built masterx/$t:$TAG in $(( $(date +%s) - start )) s ($ENGINE)"
done
