#!/usr/bin/env bash
# The local stack: rclone S3 server, a standing Prefect server, a process work pool and a worker.
#   infra/stack.sh up      # start everything, deploy prefect.yaml (audit-nightly, explain-cohort)
#   infra/stack.sh down    # stop everything
# State lives in .local-stack/ (git-ignored). Needs `make venv` first.
# The worker runs in its own folder (WORKER_DIR, default .local-stack/worker), not in the
# checkout: its flow runs find the code through prefect.yaml's pull step and MEDXGAN_CODE_DIR,
# as a worker on another machine does (docs/deployment.md).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/.venv/bin
STATE=$PWD/.local-stack
S3_PORT=${S3_PORT:-9000}
PREFECT_PORT=${PREFECT_PORT:-4200}
POOL=${POOL:-medxgan-process}
WORKER_DIR=${WORKER_DIR:-$STATE/worker}
ROOT=$PWD
mkdir -p "$STATE"
export PREFECT_HOME=${PREFECT_HOME:-$STATE/prefect}
export PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api

up() {
  $BIN/python infra/s3server.py start --data "$STATE/s3" --port "$S3_PORT" --bucket medxgan
  eval "$($BIN/python infra/s3server.py env --port "$S3_PORT")"
  export MEDXGAN_STORE=s3://medxgan/store
  nohup $BIN/prefect server start --host 127.0.0.1 --port "$PREFECT_PORT" >"$STATE/server.log" 2>&1 &
  echo $! >"$STATE/server.pid"
  for _ in $(seq 1 120); do
    curl -fs "$PREFECT_API_URL/health" >/dev/null 2>&1 && break
    sleep 1
  done
  curl -fs "$PREFECT_API_URL/health" >/dev/null || { echo "prefect server did not start"; exit 1; }
  $BIN/prefect work-pool inspect "$POOL" >/dev/null 2>&1 || $BIN/prefect work-pool create "$POOL" --type process
  mkdir -p "$WORKER_DIR"
  # exec: the recorded pid is the worker's own, and no shell holds our stdout open
  (cd "$WORKER_DIR" && exec env MEDXGAN_CODE_DIR="$ROOT" \
    nohup "$BIN/prefect" worker start --pool "$POOL" >"$STATE/worker.log" 2>&1) &
  echo $! >"$STATE/worker.pid"
  $BIN/prefect --no-prompt deploy --all
  echo "stack up: Prefect UI http://127.0.0.1:$PREFECT_PORT, S3 http://127.0.0.1:$S3_PORT (bucket medxgan)"
  echo "export PREFECT_API_URL=$PREFECT_API_URL MEDXGAN_STORE=$MEDXGAN_STORE"
  $BIN/python infra/s3server.py env --port "$S3_PORT"
}

down() {
  for p in worker server; do
    if [ -f "$STATE/$p.pid" ]; then kill "$(cat "$STATE/$p.pid")" 2>/dev/null || true; rm -f "$STATE/$p.pid"; fi
  done
  $BIN/python infra/s3server.py stop --data "$STATE/s3" || true
  echo "stack down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down"; exit 2 ;;
esac
