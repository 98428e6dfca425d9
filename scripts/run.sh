#!/usr/bin/env bash
# Runs the whole stack in the foreground: membership-server with an embedded
# etcd, and one gateway. Ctrl-C (or SIGTERM) stops both. cmd/devstack does
# the work (it takes the place of this shell, so nothing is left between make
# and it): its children die with it, however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${BIN:-.bin}/devstack" "$@"
