#!/usr/bin/env bash
# Builds etcd from the Go module proxy into the cache, once per version.
# `go install` refuses the server module (relative replace directives), so build
# it from a throwaway wrapper module instead.
. "$(dirname "$0")/lib.sh"
out="$CACHE_DIR/etcd-$ETCD_VERSION"
[ -x "$out/etcd" ] && { echo "$out/etcd"; exit 0; }
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
log "building etcd v$ETCD_VERSION (first run only)"
cd "$work"
go mod init ductape.local/etcd-build >/dev/null 2>&1
go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >&2
mkdir -p "$out.tmp"
CGO_ENABLED=0 go build -trimpath -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3
rm -rf "$out"; mv "$out.tmp" "$out"
echo "$out/etcd"
