#!/usr/bin/env bash
# Builds membership-server and gateway as static binaries into $1: what the
# container image ships, and what make test checks.
set -euo pipefail
out=${1:?usage: build-static.sh OUTDIR}
mkdir -p "$out"
export CGO_ENABLED=0
go build -trimpath -ldflags='-s -w' -o "$out/" ./cmd/membership-server ./cmd/gateway
