#!/usr/bin/env bash
# `make run`: the operator against the current cluster (KUBECONFIG or ~/.kube/config);
# when none answers, against the local stack, which it starts first. Installs the CRD,
# applies examples/ (into RUN_NAMESPACE, default "default"), then runs the operator in
# the foreground with any arguments given.
. "$(dirname "$0")/lib.sh"
cd "$ROOT_DIR"
if ! kubectl version --request-timeout=5s >/dev/null 2>&1; then
  log "no cluster answers at ${KUBECONFIG:-~/.kube/config}: using the local stack"
  "$HACK_DIR/testenv-up.sh"
  # shellcheck source=/dev/null
  . "$STATE_DIR/env"
fi
log "cluster: $(kubectl config current-context 2>/dev/null || echo '?') ($(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}'))"
if compgen -G "crds/*.yaml" >/dev/null; then
  kubectl apply --server-side --force-conflicts -f crds/
  kubectl wait --for condition=Established --timeout 60s -f crds/
fi
if compgen -G "examples/*.yaml" >/dev/null; then
  kubectl apply -n "${RUN_NAMESPACE:-default}" -f examples/
fi
exec "$ROOT_DIR/.venv/bin/python" -m ductape_operator "$@"
