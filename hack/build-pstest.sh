#!/usr/bin/env bash
# Builds hack/pstest (Google's in-memory Pub/Sub fake behind a tiny main) into the
# cache, once per version: the fallback where the Cloud SDK's emulator is absent.
# The module file is generated in a throwaway folder, so the repository carries no
# Go module of its own.
. "$(dirname "$0")/lib.sh"
out="$CACHE_DIR/pstest-$PUBSUB_GO_VERSION"
[ -x "$out/pstest" ] && { echo "$out/pstest"; exit 0; }
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
log "building pstest (cloud.google.com/go/pubsub/v2 v$PUBSUB_GO_VERSION, first run only)"
cp "$HACK_DIR/pstest/main.go" "$work/"
cd "$work"
go mod init ductape.local/pstest >/dev/null 2>&1
go get "cloud.google.com/go/pubsub/v2@v$PUBSUB_GO_VERSION" >&2
go mod tidy >&2
rm -rf "$out.tmp"; mkdir -p "$out.tmp"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out.tmp/pstest" .
rm -rf "$out"; mv "$out.tmp" "$out"
echo "$out/pstest"
