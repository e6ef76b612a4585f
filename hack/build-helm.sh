#!/usr/bin/env bash
# Builds helm from the Go module proxy into the cache, once per version
# (helm.sh/helm/v3 has no replace directives, so plain `go install` works).
. "$(dirname "$0")/lib.sh"
out="$CACHE_DIR/helm-$HELM_VERSION"
[ -x "$out/helm" ] && { echo "$out/helm"; exit 0; }
log "building helm v$HELM_VERSION (first run only)"
rm -rf "$out.tmp"; mkdir -p "$out.tmp"
CGO_ENABLED=0 GOBIN="$out.tmp" go install -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION" \
  "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
rm -rf "$out"; mv "$out.tmp" "$out"
echo "$out/helm"
