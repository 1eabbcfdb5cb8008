#!/usr/bin/env bash
# The local stack: an S3-compatible server (moto_server, in memory) with the mmp buckets, and a Prefect server,
# both on 127.0.0.1. PIDs and logs live in .run/ (gitignored); processes are stopped by PID only.
#
#   infra/local-stack.sh start [s3|prefect]   start (both by default), wait until healthy, print the env to export
#   infra/local-stack.sh stop [s3|prefect]    stop what this script started
#   infra/local-stack.sh status               running/stopped + health of each service (exit 3 if one is down)
#   infra/local-stack.sh env                  print the `export` lines only
#
#   eval "$(infra/local-stack.sh start)"      start and export in one go (messages go to stderr)
#
# Settings (environment): MMP_S3_PORT (5055), MMP_PREFECT_PORT (4200), MMP_ARTIFACT_BUCKET (mmp-artifacts),
# MMP_DVC_BUCKET (mmp-dvc), MMP_STORE_PREFIX (mmp), MMP_RUN_DIR (.run), MMP_PREFECT_HOME (.run/prefect-home).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="${MMP_RUN_DIR:-$ROOT/.run}"
S3_PORT="${MMP_S3_PORT:-5055}"
PREFECT_PORT="${MMP_PREFECT_PORT:-4200}"
ARTIFACT_BUCKET="${MMP_ARTIFACT_BUCKET:-mmp-artifacts}"
DVC_BUCKET="${MMP_DVC_BUCKET:-mmp-dvc}"
STORE_PREFIX="${MMP_STORE_PREFIX:-mmp}"
PREFECT_HOME_DIR="${MMP_PREFECT_HOME:-$RUN_DIR/prefect-home}"
S3_URL="http://127.0.0.1:${S3_PORT}"
PREFECT_URL="http://127.0.0.1:${PREFECT_PORT}"

# Prefer the project's virtual environment (moto_server, prefect, boto3 live there).
if [[ -x "$ROOT/.venv/bin/python" ]]; then
  export PATH="$ROOT/.venv/bin:$PATH"
fi
PY="$(command -v python3 || command -v python)"

log() { echo "local-stack: $*" >&2; }
die() { log "error: $*"; exit 1; }

pidfile() { echo "$RUN_DIR/$1.pid"; }

# The PID of a service this script started, if that process is still alive and is the right program.
service_pid() {
  local name=$1 pattern=$2 file pid
  file="$(pidfile "$name")"
  [[ -f "$file" ]] || return 1
  pid="$(cat "$file")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern" || return 1
  echo "$pid"
}

http_ok() {  # http_ok URL: 0 when the URL answers 2xx
  "$PY" - "$1" <<'EOF' 2>/dev/null
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        sys.exit(0 if 200 <= r.status < 300 else 1)
except Exception:
    sys.exit(1)
EOF
}

port_busy() {  # port_busy PORT: 0 when something listens on 127.0.0.1:PORT
  "$PY" - "$1" <<'EOF'
import socket, sys
with socket.socket() as s:
    s.settimeout(1)
    sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
EOF
}

wait_healthy() {  # wait_healthy NAME PATTERN URL TIMEOUT_S
  local name=$1 pattern=$2 url=$3 timeout=$4 start=$SECONDS
  while ((SECONDS - start < timeout)); do
    if ! service_pid "$name" "$pattern" >/dev/null; then
      log "$name exited during start-up; last lines of $RUN_DIR/$name.log:"
      tail -n 20 "$RUN_DIR/$name.log" >&2 || true
      rm -f "$(pidfile "$name")"
      return 1
    fi
    if http_ok "$url"; then
      log "$name healthy after $((SECONDS - start)) s ($url)"
      return 0
    fi
    sleep 0.5
  done
  log "$name not healthy after ${timeout} s; see $RUN_DIR/$name.log"
  return 1
}

# launch NAME CMD...: start CMD in its own session (PID = process group id), logs to .run/NAME.log.
launch() {
  local name=$1
  shift
  mkdir -p "$RUN_DIR"
  echo "=== $(date -u +%FT%TZ) $*" >>"$RUN_DIR/$name.log"
  setsid "$@" >>"$RUN_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$(pidfile "$name")"
}

create_buckets() {
  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 \
    "$PY" - "$S3_URL" "$ARTIFACT_BUCKET" "$DVC_BUCKET" <<'EOF'
import sys
import boto3
from botocore.exceptions import ClientError

endpoint, *buckets = sys.argv[1:]
client = boto3.client("s3", endpoint_url=endpoint)
for bucket in buckets:
    try:
        client.head_bucket(Bucket=bucket)
        print(f"local-stack: bucket s3://{bucket} exists", file=sys.stderr)
    except ClientError:
        client.create_bucket(Bucket=bucket)
        print(f"local-stack: created bucket s3://{bucket}", file=sys.stderr)
EOF
}

start_s3() {
  local pid
  if pid="$(service_pid s3 moto_server)"; then
    log "s3 already running (pid $pid, $S3_URL)"
  else
    port_busy "$S3_PORT" && die "port $S3_PORT is in use by another program (set MMP_S3_PORT)"
    command -v moto_server >/dev/null || die "moto_server not found: install the dev extras (pip install -e '.[dev]')"
    launch s3 moto_server -H 127.0.0.1 -p "$S3_PORT"
    wait_healthy s3 moto_server "$S3_URL/moto-api/" 30 || die "s3 failed to start"
  fi
  create_buckets
}

start_prefect() {
  local pid
  if pid="$(service_pid prefect prefect)"; then
    log "prefect already running (pid $pid, $PREFECT_URL)"
    return 0
  fi
  port_busy "$PREFECT_PORT" && die "port $PREFECT_PORT is in use by another program (set MMP_PREFECT_PORT)"
  command -v prefect >/dev/null || die "prefect not found: install the project (make install)"
  mkdir -p "$PREFECT_HOME_DIR"
  # The server gets its own PREFECT_HOME (its SQLite database survives restarts) and no client API URL.
  launch prefect env -u PREFECT_API_URL PREFECT_HOME="$PREFECT_HOME_DIR" PREFECT_SERVER_ANALYTICS_ENABLED=false \
    prefect server start --host 127.0.0.1 --port "$PREFECT_PORT"
  # A fresh database runs its migrations first (about 10 s; more on a busy machine).
  wait_healthy prefect prefect "$PREFECT_URL/api/health" 120 || die "prefect failed to start"
}

stop_service() {  # stop_service NAME PATTERN
  local name=$1 pattern=$2 pid waited=0
  if ! pid="$(service_pid "$name" "$pattern")"; then
    [[ -f "$(pidfile "$name")" ]] && log "$name: removing stale pid file"
    rm -f "$(pidfile "$name")"
    log "$name not running"
    return 0
  fi
  # The process leads its own process group (setsid): signal the group, so children (uvicorn) stop too.
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null && ((waited < 40)); do
    sleep 0.5
    waited=$((waited + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name (pid $pid) ignored SIGTERM for 20 s: sending SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$(pidfile "$name")"
  log "$name stopped (pid $pid)"
}

print_env() {
  cat <<EOF
export MMP_S3_ENDPOINT_URL=$S3_URL
export AWS_ENDPOINT_URL=$S3_URL
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_DEFAULT_REGION=us-east-1
export MMP_ARTIFACT_BUCKET=$ARTIFACT_BUCKET
export MMP_DVC_BUCKET=$DVC_BUCKET
export MMP_STORE=s3://$ARTIFACT_BUCKET/$STORE_PREFIX
export MMP_DVC_REMOTE=s3://$DVC_BUCKET/$STORE_PREFIX
export PREFECT_API_URL=$PREFECT_URL/api
export PREFECT_SERVER_ANALYTICS_ENABLED=false
EOF
}

status() {
  local rc=0 pid
  if pid="$(service_pid s3 moto_server)" && http_ok "$S3_URL/moto-api/"; then
    echo "s3:      running (pid $pid) $S3_URL  buckets: $ARTIFACT_BUCKET, $DVC_BUCKET"
  elif [[ -n "${pid:-}" ]]; then
    echo "s3:      process $pid alive but not answering on $S3_URL"; rc=3
  else
    echo "s3:      stopped"; rc=3
  fi
  pid=""
  if pid="$(service_pid prefect prefect)" && http_ok "$PREFECT_URL/api/health"; then
    echo "prefect: running (pid $pid) $PREFECT_URL  (UI $PREFECT_URL, API $PREFECT_URL/api)"
  elif [[ -n "${pid:-}" ]]; then
    echo "prefect: process $pid alive but not answering on $PREFECT_URL"; rc=3
  else
    echo "prefect: stopped"; rc=3
  fi
  return $rc
}

command="${1:-}"
what="${2:-all}"
case "$what" in all | s3 | prefect) ;; *) die "unknown service '$what' (s3 or prefect)" ;; esac
case "$command" in
  start)
    [[ "$what" == prefect ]] || start_s3
    [[ "$what" == s3 ]] || start_prefect
    log "logs and PIDs in $RUN_DIR; stop with: infra/local-stack.sh stop"
    log "export these (or run: eval \"\$(infra/local-stack.sh env)\"):"
    print_env
    ;;
  stop)
    [[ "$what" == s3 ]] || stop_service prefect prefect
    [[ "$what" == prefect ]] || stop_service s3 moto_server
    ;;
  status) status ;;
  env) print_env ;;
  *)
    sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
