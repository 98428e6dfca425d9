#!/usr/bin/env bash
# Runs the whole stack in the foreground: membership-server with an embedded
# etcd, and one gateway. Ctrl-C (or SIGTERM) stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.bin}
DATA=${DATA_DIR:-.data}
mkdir -p "$DATA"

# The children run in their own sessions so that Ctrl-C reaches only this
# script, which stops them in order: the gateway first (it revokes its lease in
# etcd, which lives in the membership-server), then the membership-server.
server= gateway=
stop() {
  trap - INT TERM EXIT
  # Each step tolerates failure (set -e would otherwise end the script when
  # the gateway exits non-zero, leaving the membership-server running).
  if [ -n "$gateway" ]; then kill -TERM "$gateway" 2>/dev/null || true; wait "$gateway" 2>/dev/null || true; fi
  if [ -n "$server" ]; then kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  return 0
}
trap stop INT TERM EXIT

setsid "$BIN/membership-server" --data-dir "$DATA/etcd" "$@" &
server=$!
# The gateway retries until the embedded etcd answers. The demo page is off by
# default in the binary; for a local stack it is the point.
setsid "$BIN/gateway" --gateway-id "${GATEWAY_ID:-gw-local}" --demo-page &
gateway=$!

cat <<MSG
membership API:  127.0.0.1:50051 (grpcurl -plaintext 127.0.0.1:50051 list)
WebSocket:       ws://127.0.0.1:8080/ws
demo page:       http://127.0.0.1:8080/ (browser library: http://127.0.0.1:8080/membership.js)
etcd:            127.0.0.1:2379 (data in $DATA/etcd)
Ctrl-C stops everything.
MSG
# Stop everything as soon as either process exits.
wait -n
