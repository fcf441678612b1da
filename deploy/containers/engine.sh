# Sourced by the deploy/containers scripts: picks the container engine and configures podman.
#
#   ENGINE   docker (when `docker info` answers: a daemon runs) else podman; set it to force one.
#   CONTAINERS_CONF  podman's config; when unset, a private one is written (below) so nothing in
#            /etc or ~/.config changes. Its settings are what podman needs on hosts with hybrid
#            cgroups (v1 controllers plus a v2 mount): crun fails there, runc works; no systemd,
#            so cgroupfs and a file events log; explicit ulimits (the default nofile of some
#            hosts is below what the services open).
# shellcheck shell=bash

masterx_engine() {
  if [ -n "${ENGINE:-}" ]; then
    echo "$ENGINE"
  elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    echo docker
  elif command -v podman >/dev/null 2>&1; then
    echo podman
  else
    echo none
  fi
}

ENGINE="$(masterx_engine)"
export ENGINE

if [ "$ENGINE" = podman ] && [ -z "${CONTAINERS_CONF:-}" ]; then
  _conf_dir="${MASTERX_CONTAINERS_CONF_DIR:-${XDG_RUNTIME_DIR:-/tmp}/masterx-containers}"
  mkdir -p "$_conf_dir"
  _runtime=runc
  command -v runc >/dev/null 2>&1 || _runtime=crun
  cat >"$_conf_dir/containers.conf" <<CONF
# Written by deploy/containers/engine.sh (MasterX image builds and container check).
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "$_runtime"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
  export CONTAINERS_CONF="$_conf_dir/containers.conf"
fi

# `engine_can_run` is true when the engine can start a container (not just talk to a daemon).
engine_can_run() {
  case "$ENGINE" in
    docker) docker info >/dev/null 2>&1 ;;
    podman) podman info >/dev/null 2>&1 ;;
    *) return 1 ;;
  esac
}

# The base every Dockerfile target starts from (ARG PYTHON_IMAGE in deploy/docker/Dockerfile).
PYTHON_IMAGE="${PYTHON_IMAGE:-python:3.11-slim-bookworm}"
export PYTHON_IMAGE

image_exists() {
  "$ENGINE" image inspect "$1" >/dev/null 2>&1
}
