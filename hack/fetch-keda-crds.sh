#!/usr/bin/env bash
# Fetches KEDA's CRDs (ScaledObject, TriggerAuthentication, ...) into the cache, once per
# version, for the autoscaling recipe's tests (docs/autoscaling.md). The Go module proxy
# serves KEDA's repository as a module, CRDs included; only the CRD files are kept.
# Prints the folder holding them.
. "$(dirname "$0")/lib.sh"
out="$CACHE_DIR/keda-$KEDA_VERSION/crds"
[ -s "$out/keda.sh_scaledobjects.yaml" ] && { echo "$out"; exit 0; }
log "fetching the KEDA v$KEDA_VERSION CRDs (first run only)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
# `go mod download` outside a module needs a throwaway one, else it refuses.
(cd "$scratch" && go mod init fetch-keda >/dev/null 2>&1)
dir="$(cd "$scratch" && go mod download -json "github.com/kedacore/keda/v2@v$KEDA_VERSION" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')"
[ -d "$dir/config/crd/bases" ] || die "no config/crd/bases in $dir"
rm -rf "$out.tmp"; mkdir -p "$out.tmp"
cp "$dir"/config/crd/bases/*.yaml "$out.tmp/"
rm -rf "$out"; mv "$out.tmp" "$out"
echo "$out"
