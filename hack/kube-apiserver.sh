#!/usr/bin/env bash
# Stops or starts the local stack's kube-apiserver alone, to rehearse an API server
# outage while the operator runs (tests/e2e/test_outages.py).
#
#   hack/kube-apiserver.sh kill    SIGKILL its process group, as a crash would
#   hack/kube-apiserver.sh start   start it again (hack/testenv-up.sh, kube only: same
#                                  certificates, flags and etcd; etcd keeps the data)
#
# Same environment as hack/testenv-up.sh (DUCTAPE_STATE_DIR, TESTENV_*_PORT).
. "$(dirname "$0")/lib.sh"

case "${1:-}" in
  kill)
    p="$(pid_of kube-apiserver)" || die "no kube-apiserver recorded under $STATE_DIR"
    alive kube-apiserver || die "kube-apiserver (pid $p) is not running"
    log "killing kube-apiserver (pgid $p)"
    kill -KILL -- "-$p"
    wait_until 20 eval "! group_alive $p" || die "kube-apiserver (pgid $p) survived KILL"
    rm -f "$STATE_DIR/kube-apiserver/pid"
    ;;
  start)
    # testenv-up leaves a running etcd alone and starts what is missing; it restarts
    # kube-controller-manager too, which holds a client of the old API server.
    TESTENV_COMPONENTS=kube exec "$HACK_DIR/testenv-up.sh"
    ;;
  *) die "usage: $0 kill|start" ;;
esac
