#!/usr/bin/env bash
# The technician's first check on a new box: build every model's TensorRT engine afresh
# (in a temporary folder, never the live engines), compare each with ONNX Runtime on the
# shipped check images, time both at batch 1, and print one table.
#
#   jetson/selftest.sh [--json] [--prefix DIR]
#
# A thin wrapper around `appliance doctor --gpu-selftest`, run as the service user with
# the service's data directory (/etc/appliance/appliance.env). Exit 0: every engine
# matches; 1: one does not (the table says which and why); 2: TensorRT, pycuda or the
# GPU is missing (the message names it). Takes minutes on a Jetson: the engines are built.
set -euo pipefail

PREFIX=/opt/appliance
SERVICE_USER=appliance
ARGS=(doctor --gpu-selftest)

usage() {
  echo "usage: jetson/selftest.sh [--json] [--prefix DIR]" >&2
  exit 2
}

while [ "$#" -gt 0 ]; do
  case "$1" in
    --json) ARGS+=(--json) ;;
    --prefix) [ "$#" -ge 2 ] || usage; PREFIX="$2"; shift ;;
    *) usage ;;
  esac
  shift
done

APPLIANCE="$PREFIX/venv/bin/appliance"
if [ ! -x "$APPLIANCE" ]; then
  echo "error: $APPLIANCE not found: install the appliance first (sudo ./jetson/install.sh)" >&2
  exit 2
fi

if [ -f /etc/appliance/appliance.env ]; then
  set -a
  # shellcheck source=/dev/null
  . /etc/appliance/appliance.env
  set +a
fi

# As root, run as the service user: its GPU groups (video, render) and its data directory.
if [ "$(id -u)" -eq 0 ] && id "$SERVICE_USER" >/dev/null 2>&1; then
  exec runuser -u "$SERVICE_USER" -- "$APPLIANCE" "${ARGS[@]}"
fi
exec "$APPLIANCE" "${ARGS[@]}"
