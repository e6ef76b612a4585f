#!/usr/bin/env bash
# Builds nats-server from the Go module proxy into the cache, once per version
# (its module has no replace directives, so plain `go install` works).
. "$(dirname "$0")/lib.sh"
out="$CACHE_DIR/nats-server-$NATS_SERVER_VERSION"
[ -x "$out/nats-server" ] && { echo "$out/nats-server"; exit 0; }
log "building nats-server v$NATS_SERVER_VERSION (first run only)"
rm -rf "$out.tmp"; mkdir -p "$out.tmp"
CGO_ENABLED=0 GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w" \
  "github.com/nats-io/nats-server/v2@v$NATS_SERVER_VERSION"
rm -rf "$out"; mv "$out.tmp" "$out"
echo "$out/nats-server"
