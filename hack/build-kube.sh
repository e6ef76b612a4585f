#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager and kubectl from k8s.io/kubernetes
# on the Go module proxy, once per version. The module pins every k8s.io staging
# module at v0.0.0 with local replaces that do not apply to a consumer, so a
# wrapper module replaces each of them with its published v0.<minor>.<patch> tag.
. "$(dirname "$0")/lib.sh"
out="$CACHE_DIR/kubernetes-$KUBE_VERSION"
bins=(kube-apiserver kube-controller-manager kubectl)
if [ -x "$out/kube-apiserver" ] && [ -x "$out/kube-controller-manager" ] && [ -x "$out/kubectl" ]; then
  echo "$out"; exit 0
fi
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
log "building Kubernetes v$KUBE_VERSION (first run only, 10-25 minutes on 2 cores)"
cd "$work"
go mod init ductape.local/kube-build >/dev/null 2>&1
moddir="$(go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
staging_tag="v0.${KUBE_VERSION#1.}"
# Every "k8s.io/X => ./staging/src/k8s.io/X" line of the upstream go.mod.
for mod in $(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/src/.*#\1#p' "$moddir/go.mod"); do
  go mod edit -replace "$mod=$mod@$staging_tag"
done
go mod edit -require "k8s.io/kubernetes@v$KUBE_VERSION"
go get "k8s.io/kubernetes/cmd/kube-apiserver@v$KUBE_VERSION" \
       "k8s.io/kubernetes/cmd/kube-controller-manager@v$KUBE_VERSION" \
       "k8s.io/kubernetes/cmd/kubectl@v$KUBE_VERSION" >&2
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION -X k8s.io/client-go/pkg/version.gitVersion=v$KUBE_VERSION"
ldflags="$ldflags -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2)"
mkdir -p "$out.tmp"
for b in "${bins[@]}"; do
  log "go build $b"
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out.tmp/$b" "k8s.io/kubernetes/cmd/$b"
done
rm -rf "$out"; mv "$out.tmp" "$out"
echo "$out"
