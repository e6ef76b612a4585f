# Shared helpers for the hack/ scripts. Source it; do not run it.
set -euo pipefail
HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT_DIR="$(cd "$HACK_DIR/.." && pwd)"
# shellcheck source=versions.sh
. "$HACK_DIR/versions.sh"
CACHE_DIR="${DUCTAPE_CACHE_DIR:-$HOME/.cache/ductape-operator}"
STATE_DIR="${DUCTAPE_STATE_DIR:-$ROOT_DIR/.testenv}"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Ports of the local stack. Each has a TESTENV_*_PORT twin, so that a second stack
# (with its own DUCTAPE_STATE_DIR) can run beside the first.
P_ETCD="${TESTENV_ETCD_PORT:-23790}"
P_ETCD_PEER="${TESTENV_ETCD_PEER_PORT:-23800}"
P_KUBE="${TESTENV_KUBE_PORT:-26443}"
P_KAFKA="${TESTENV_KAFKA_PORT:-29092}"
P_KAFKA_CONTROLLER="${TESTENV_KAFKA_CONTROLLER_PORT:-29093}"
P_REDIS="${TESTENV_REDIS_PORT:-26379}"
P_RABBITMQ="${TESTENV_RABBITMQ_PORT:-25672}"
P_RABBITMQ_DIST="${TESTENV_RABBITMQ_DIST_PORT:-25673}"
P_EPMD="${TESTENV_EPMD_PORT:-24369}"
P_PUBSUB="${TESTENV_PUBSUB_PORT:-28085}"
P_SQS="${TESTENV_SQS_PORT:-29324}"
P_NATS="${TESTENV_NATS_PORT:-24222}"
P_NATS_MONITOR="${TESTENV_NATS_MONITOR_PORT:-28222}"
# The secure listeners, next to the plain ones (README.md, "Secure connections").
P_KAFKA_SASL="${TESTENV_KAFKA_SASL_PORT:-29094}"
P_REDIS_TLS="${TESTENV_REDIS_TLS_PORT:-26380}"
P_RABBITMQ_TLS="${TESTENV_RABBITMQ_TLS_PORT:-25671}"
P_NATS_TLS="${TESTENV_NATS_TLS_PORT:-24223}"
P_NATS_TLS_MONITOR="${TESTENV_NATS_TLS_MONITOR_PORT:-28223}"
# Certificates and the secure listeners' test user, made once per state folder.
SECURE_DIR="$STATE_DIR/secure"
SECURE_USER="ductape"
RABBITMQ_NODE="ductape${P_RABBITMQ}@localhost"
RABBITMQ_BIN="/usr/lib/rabbitmq/bin"

# Every process of the stack runs in its own session (see start_bg): its PID is its
# process-group id, recorded in $STATE_DIR/<name>/pid, and its output goes to
# $STATE_DIR/<name>/<name>.log.
pid_of() { [ -s "$STATE_DIR/$1/pid" ] && cat "$STATE_DIR/$1/pid"; }
group_alive() { pgrep -g "$1" >/dev/null 2>&1; }
# alive NAME: the recorded process still runs and still leads its own group (a reused
# PID of some unrelated process does not).
alive() {
  local p; p="$(pid_of "$1")" || return 1
  kill -0 "$p" 2>/dev/null && [ "$(ps -o pgid= -p "$p" | tr -d ' ')" = "$p" ]
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
log_of() { echo "$STATE_DIR/$1/$1.log"; }

# start_bg NAME CMD...: starts CMD detached in a new session. A non-interactive bash
# does not make its children group leaders, so setsid needs no fork and $! is CMD's PID.
start_bg() {
  local name="$1"; shift
  mkdir -p "$STATE_DIR/$name"
  # 9>&-: the daemon must not inherit the state folder's lock (see testenv-up.sh).
  setsid "$@" >>"$(log_of "$name")" 2>&1 </dev/null 9>&- &
  echo $! >"$STATE_DIR/$name/pid"
}

# wait_until SECONDS CMD...: polls CMD until it succeeds; returns 1 at the deadline.
wait_until() {
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# stop_bg NAME: TERM the recorded process group, KILL what is left after 20 s.
stop_bg() {
  local name="$1" p
  p="$(pid_of "$name")" || return 0
  if group_alive "$p"; then
    log "stopping $name (pgid $p)"
    kill -TERM -- "-$p" 2>/dev/null || true
    if ! wait_until 20 eval "! group_alive $p"; then
      log "$name ignored TERM, killing it"
      kill -KILL -- "-$p" 2>/dev/null || true
      wait_until 10 eval "! group_alive $p" || log "WARNING: $name (pgid $p) survived KILL"
    fi
  fi
  rm -f "$STATE_DIR/$name/pid"
}

# The environment every rabbitmq command of one stack runs with: its own node, ports,
# epmd on loopback, and files under the state folder only (never /etc or /var).
rabbitmq_env() {
  local d="$STATE_DIR/rabbitmq"
  export ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT="$P_EPMD"
  export RABBITMQ_NODENAME="$RABBITMQ_NODE" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT="$P_RABBITMQ" RABBITMQ_DIST_PORT="$P_RABBITMQ_DIST"
  export RABBITMQ_CONF_ENV_FILE="$d/rabbitmq-env.conf" RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf"
  export RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins"
  export RABBITMQ_MNESIA_BASE="$d/data" RABBITMQ_LOG_BASE="$d/log"
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  # No Erlang VM of ours starts an epmd by itself, only up_rabbitmq does. A CLI command
  # run while ours is not listening (rabbitmqctl makes sure of an epmd through a helper VM,
  # so its own emulator flags are not enough) would otherwise leave a daemonized epmd on
  # our port that belongs to no recorded process group: testenv-down would not stop it
  # and the next testenv-up would fail on it ("epmd: exited during startup").
  export ERL_FLAGS="-start_epmd false"
}

# stop_component NAME: stops one part of the stack, whatever state it is in.
stop_component() {
  case "$1" in
    rabbitmq)
      if alive rabbitmq; then
        log "stopping rabbitmq node $RABBITMQ_NODE"
        ( rabbitmq_env; timeout 60 "$RABBITMQ_BIN/rabbitmqctl" -q -n "$RABBITMQ_NODE" stop ) \
          >>"$(log_of rabbitmq)" 2>&1 || log "rabbitmqctl stop failed; signalling instead"
      fi
      stop_bg rabbitmq
      stop_bg epmd ;;
    kube) stop_bg kube-controller-manager; stop_bg kube-apiserver; stop_bg etcd ;;
    nats) stop_bg nats-tls; stop_bg nats ;;
    *) stop_bg "$1" ;;
  esac
}
ALL_COMPONENTS="kube,kafka,redis,rabbitmq,pubsub,sqs,nats"
