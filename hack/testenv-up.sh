#!/usr/bin/env bash
# Starts the local stack (real software, never mocks) and writes $STATE_DIR/env.
#
# Idempotent: a part whose recorded process is alive and answers a real request is left
# alone; anything missing is installed or built into the cache first. Parts start in
# parallel. When a part fails, this names it, prints the tail of its log, stops what
# this run started, and exits non-zero.
#
# Kafka, Redis and RabbitMQ also get secure listeners next to the plain ones (TLS with a
# CA made once under $STATE_DIR/secure, SASL_SSL with SCRAM on Kafka, an ACL user on
# Redis): see gen_secure and README.md, "The local stack".
#
#   TESTENV_COMPONENTS  comma list, default kube,kafka,redis,rabbitmq,pubsub,sqs,nats
#   DUCTAPE_STATE_DIR   state folder (PIDs, logs, data), default .testenv
#   TESTENV_*_PORT      every port (see hack/lib.sh), to run a second stack beside one
#   TESTENV_PUBSUB_IMPL auto (the SDK's emulator when installed, else pstest) | pstest
. "$(dirname "$0")/lib.sh"

PUBSUB_PROJECT_ID="${PUBSUB_PROJECT_ID:-ductape-test}"
PUBSUB_EMULATOR="/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"
PROBE=(python3 "$HACK_DIR/probe.py")

IFS=, read -ra WANT <<<"${TESTENV_COMPONENTS:-$ALL_COMPONENTS}"
for c in "${WANT[@]}"; do
  [[ ",$ALL_COMPONENTS," == *",$c,"* ]] || die "unknown component '$c' (known: $ALL_COMPONENTS)"
done
wants() { [[ " ${WANT[*]} " == *" $1 "* ]]; }

mkdir -p "$STATE_DIR"
exec 9>"$STATE_DIR/.testenv.lock"
flock -w 600 9 || die "another testenv-up/down holds $STATE_DIR/.testenv.lock"
RUN_DIR="$(mktemp -d)"
trap 'rm -rf "$RUN_DIR"' EXIT

# --- helpers shared by the parts (each part runs in its own subshell) ----------------

started() { echo "$1" >>"$RUN_DIR/started"; }
fail() {
  log "ERROR: part '$1' failed: $2"
  if [ -s "$(log_of "$1")" ]; then
    log "last lines of $(log_of "$1"):"
    tail -n 40 "$(log_of "$1")" >&2
  fi
  exit 1
}
quietly() { "$@" >/dev/null 2>&1; }
# running NAME CMD...: NAME's recorded process is alive and CMD (a real request) answers.
# A live process gets 30 s to answer, so a busy broker that others are using is not
# restarted under them for one slow reply.
running() {
  local name="$1"; shift
  alive "$name" || return 1
  wait_until 30 quietly "$@" && return 0
  log "$name: alive but not answering for 30s; restarting it"
  return 1
}
# fresh NAME PORT...: clears what is left of an earlier NAME, checks its ports are free.
fresh() {
  local name="$1" p; shift
  stop_bg "$name"
  mkdir -p "$STATE_DIR/$name"
  printf '\n===== %s start %s\n' "$name" "$(date -u +%FT%TZ)" >>"$(log_of "$name")"
  for p in "$@"; do
    port_open "$p" && fail "$name" "port $p is taken by a process this stack did not start (move it with its TESTENV_*_PORT)"
  done
  rm -rf "$STATE_DIR/$name/data"; mkdir -p "$STATE_DIR/$name/data"
}
# ready NAME SECONDS CMD...: polls CMD; fails early when NAME's process has exited.
ready() {
  local name="$1" secs="$2"; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    alive "$name" || fail "$name" "exited during startup"
    [ "$SECONDS" -lt "$deadline" ] || fail "$name" "did not answer within ${secs}s"
    sleep 0.2
  done
  log "$name: ready"
}
# build NAME SCRIPT: runs a hack/build-*.sh, its output in NAME's log; prints its result.
build() {
  mkdir -p "$STATE_DIR/$1"
  "$HACK_DIR/$2" 2>>"$(log_of "$1")" || fail "$1" "$2 failed"
}

# --- packages ------------------------------------------------------------------------

ensure_packages() {
  local pkgs=()
  if wants redis && ! command -v redis-server >/dev/null; then pkgs+=(redis-server); fi
  if wants rabbitmq && ! [ -x "$RABBITMQ_BIN/rabbitmq-server" ]; then pkgs+=(rabbitmq-server); fi
  [ "${#pkgs[@]}" -gt 0 ] || return 0
  [ "$(id -u)" = 0 ] || die "need root to apt-get install ${pkgs[*]} (or install them first)"
  log "apt-get install ${pkgs[*]} (first run only)"
  apt-get update -q >&2 || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}" >&2 || die "apt-get install ${pkgs[*]} failed"
  # Where no policy-rc.d forbids it, postinst starts system-wide daemons on the default
  # ports: stop them (by their pidfiles) and keep them from starting at boot.
  local f pid
  for f in /run/redis/redis-server.pid /run/rabbitmq/pid; do
    pid="$(cat "$f" 2>/dev/null)" || continue
    kill "$pid" 2>/dev/null && log "stopped the packaged daemon $pid ($f)"
  done
  for f in redis-server rabbitmq-server; do update-rc.d "$f" disable >/dev/null 2>&1 || true; done
}

# --- secure listeners ----------------------------------------------------------------

# gen_secure: once per state folder, a CA, a server certificate for IP 127.0.0.1 only
# (so `localhost` is a host name mismatch, on purpose), a client certificate for mutual
# TLS, and the password of the secure listeners' user. EC keys: made in milliseconds.
gen_secure() {
  local d="$SECURE_DIR"
  [ -f "$d/.complete" ] && return 0
  rm -rf "$d"; mkdir -p "$d"
  (
    cd "$d"
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.crt -days 3650 \
      -subj "/CN=ductape-testenv-broker-ca" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
    printf '%s\n' "subjectAltName=IP:127.0.0.1" "extendedKeyUsage=serverAuth" \
      "keyUsage=critical,digitalSignature,keyEncipherment" >server.ext
    printf '%s\n' "extendedKeyUsage=clientAuth" \
      "keyUsage=critical,digitalSignature,keyEncipherment" >client.ext
    local who
    for who in server client; do
      openssl req "${ec[@]}" -keyout "$who.key" -out "$who.csr" -subj "/CN=ductape-testenv-$who"
      openssl x509 -req -in "$who.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile "$who.ext" -out "$who.crt"
    done
    # Kafka's PEM key store: a PKCS#8 key and its certificate in one file.
    cat server.key server.crt >server.pem
    rm -f ./*.csr ./*.ext
    openssl rand -hex 16 >password
    chmod 600 ./*.key server.pem password
  ) >>"$STATE_DIR/secure.log" 2>&1 || die "openssl failed (see $STATE_DIR/secure.log)"
  touch "$d/.complete"
}
secure_password() { cat "$SECURE_DIR/password"; }

# --- parts ---------------------------------------------------------------------------

redis_answers() { "${PROBE[@]}" redis "$P_REDIS" && port_open "$P_REDIS_TLS"; }
up_redis() {
  local s="$SECURE_DIR"
  running redis redis_answers && { log "redis: already running"; return 0; }
  fresh redis "$P_REDIS" "$P_REDIS_TLS"
  # The plain port keeps Redis's passwordless default user; the ACL user is for the TLS
  # port's tests (it works on both). Client certificates are checked when presented.
  start_bg redis redis-server --bind 127.0.0.1 --port "$P_REDIS" --daemonize no \
    --save "" --appendonly no --dir "$STATE_DIR/redis/data" \
    --tls-port "$P_REDIS_TLS" --tls-cert-file "$s/server.crt" --tls-key-file "$s/server.key" \
    --tls-ca-cert-file "$s/ca.crt" --tls-auth-clients optional \
    --user "$SECURE_USER" on ">$(secure_password)" '~*' '&*' '+@all'
  started redis
  ready redis 30 redis_answers
}

up_rabbitmq() {
  rabbitmq_env
  local d="$STATE_DIR/rabbitmq"
  running rabbitmq rabbitmq_answers && { log "rabbitmq: already running"; return 0; }
  stop_component rabbitmq
  # Our own epmd on loopback and on our port, started first so the node does not spawn
  # a daemonized one that nothing would stop.
  fresh epmd "$P_EPMD"
  start_bg epmd epmd -address 127.0.0.1 -port "$P_EPMD"
  started epmd
  ready epmd 15 port_open "$P_EPMD"
  fresh rabbitmq "$P_RABBITMQ" "$P_RABBITMQ_DIST" "$P_RABBITMQ_TLS"
  mkdir -p "$d/log"
  : >"$RABBITMQ_CONF_ENV_FILE"
  echo '[].' >"$RABBITMQ_ENABLED_PLUGINS_FILE"
  rabbitmq_definitions >"$d/definitions.json"
  local s="$SECURE_DIR"
  cat >"$RABBITMQ_CONFIG_FILE" <<EOF
listeners.tcp.default = 127.0.0.1:$P_RABBITMQ
listeners.ssl.default = 127.0.0.1:$P_RABBITMQ_TLS
ssl_options.cacertfile = $s/ca.crt
ssl_options.certfile = $s/server.crt
ssl_options.keyfile = $s/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
load_definitions = $d/definitions.json
distribution.listener.interface = 127.0.0.1
distribution.listener.port_range.min = $P_RABBITMQ_DIST
distribution.listener.port_range.max = $P_RABBITMQ_DIST
disk_free_limit.absolute = 50MB
log.console = false
log.file.level = info
EOF
  # Run as root straight from /usr/lib/rabbitmq/bin: Debian's /usr/sbin wrapper would
  # switch to the rabbitmq user, who cannot write into this state folder.
  start_bg rabbitmq "$RABBITMQ_BIN/rabbitmq-server"
  started rabbitmq
  # `rabbitmqctl await_startup` fails at once before the node registers: poll the port.
  ready rabbitmq 90 rabbitmq_answers
}
rabbitmq_answers() { "${PROBE[@]}" amqp "$P_RABBITMQ" && port_open "$P_RABBITMQ_TLS"; }

# rabbitmq_definitions: the users, imported at boot (no rabbitmqctl round trips, each
# an Erlang VM start): guest as before, and the secure listener's user. A node that
# imports definitions at boot creates no default user, so guest is listed here.
rabbitmq_definitions() {
  SECURE_USER="$SECURE_USER" SECURE_PASSWORD="$(secure_password)" python3 - <<'PY'
import base64, hashlib, json, os

def hashed(password):
    # RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password)).
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()

users = {"guest": "guest", os.environ["SECURE_USER"]: os.environ["SECURE_PASSWORD"]}
print(json.dumps({
    "vhosts": [{"name": "/"}],
    "users": [
        {"name": name, "password_hash": hashed(password), "tags": "administrator",
         "hashing_algorithm": "rabbit_password_hashing_sha256"}
        for name, password in users.items()
    ],
    "permissions": [
        {"user": name, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
        for name in users
    ],
}))
PY
}

up_kafka() {
  local home d="$STATE_DIR/kafka"
  home="$(build kafka build-kafka.sh)"
  running kafka kafka_answers && { log "kafka: already running"; return 0; }
  fresh kafka "$P_KAFKA" "$P_KAFKA_CONTROLLER" "$P_KAFKA_SASL"
  local s="$SECURE_DIR"
  cat >"$d/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$P_KAFKA_CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$P_KAFKA,CONTROLLER://127.0.0.1:$P_KAFKA_CONTROLLER,SASL_SSL://127.0.0.1:$P_KAFKA_SASL
advertised.listeners=PLAINTEXT://127.0.0.1:$P_KAFKA,SASL_SSL://127.0.0.1:$P_KAFKA_SASL
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=$s/server.pem
ssl.truststore.type=PEM
ssl.truststore.location=$s/ca.crt
ssl.client.auth=requested
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$d/data
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
# The operator creates topics; a typo in a test must not create one silently.
auto.create.topics.enable=false
EOF
  cat >"$d/log4j2.properties" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
  local java=(java -Xms256m -Xmx512m -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$d/log4j2.properties" -cp "$home/libs/*")
  local cluster_id
  cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
  # The one-shot format tool starts faster with the client compiler and serial GC.
  # The SCRAM user is written into the metadata log at format time (Kafka's own tool),
  # so the SASL listener accepts it from the first second.
  "${java[@]}" -XX:TieredStopAtLevel=1 -XX:+UseSerialGC kafka.tools.StorageTool format "--cluster-id=$cluster_id" \
    -c "$d/server.properties" \
    --add-scram "SCRAM-SHA-512=[name=$SECURE_USER,password=$(secure_password)]" \
    >>"$(log_of kafka)" 2>&1 || fail kafka "storage format failed"
  start_bg kafka "${java[@]}" kafka.Kafka "$d/server.properties"
  started kafka
  ready kafka 90 kafka_answers
}
kafka_answers() { "${PROBE[@]}" kafka "$P_KAFKA" && port_open "$P_KAFKA_SASL"; }

up_pubsub() {
  local cmd probe
  if [ "${TESTENV_PUBSUB_IMPL:-auto}" = auto ] && [ -x "$PUBSUB_EMULATOR" ]; then
    cmd=(env "JAVA_OPTS=-Xmx256m" "$PUBSUB_EMULATOR" --host=127.0.0.1 "--port=$P_PUBSUB")
    probe=("${PROBE[@]}" http "http://127.0.0.1:$P_PUBSUB/v1/projects/$PUBSUB_PROJECT_ID/topics")
  else
    cmd=("$(build pubsub build-pstest.sh)" -addr "127.0.0.1:$P_PUBSUB")
    probe=(port_open "$P_PUBSUB")  # pstest speaks gRPC only
  fi
  running pubsub "${probe[@]}" && { log "pubsub: already running"; return 0; }
  fresh pubsub "$P_PUBSUB"
  start_bg pubsub "${cmd[@]}"
  started pubsub
  ready pubsub 60 "${probe[@]}"
}

# moto rather than ElasticMQ: one pip install, no JVM (the stack already runs three),
# and the same botocore model of SQS the operator's SDK speaks, FIFO and redrive included.
up_sqs() {
  local bin
  bin="$(build sqs build-moto.sh)"
  running sqs "${PROBE[@]}" http "http://127.0.0.1:$P_SQS/" --sqs && { log "sqs: already running"; return 0; }
  fresh sqs "$P_SQS"
  start_bg sqs "$bin" -H 127.0.0.1 -p "$P_SQS"
  started sqs
  ready sqs 60 "${PROBE[@]}" http "http://127.0.0.1:$P_SQS/" --sqs
}

# nats-server with JetStream, its stream data under the state folder; the monitoring
# port answers /healthz only once JetStream is up. One account holds the secure
# listeners' user (for the credential tests) and an anonymous user that connections
# without credentials are bound to, so plain clients need none.
nats_answers() {
  "${PROBE[@]}" http "http://127.0.0.1:$P_NATS_MONITOR/healthz?js-enabled-only=true" --expect ok
}
up_nats() {
  local bin
  bin="$(build nats build-nats.sh)"
  up_nats_plain "$bin"
  up_nats_tls "$bin"
}
up_nats_plain() {
  local bin="$1" d="$STATE_DIR/nats"
  running nats nats_answers && { log "nats: already running"; return 0; }
  fresh nats "$P_NATS" "$P_NATS_MONITOR"
  cat >"$d/nats.conf" <<EOF
server_name: ductape-testenv-$P_NATS
host: 127.0.0.1
port: $P_NATS
http: 127.0.0.1:$P_NATS_MONITOR
jetstream { store_dir: "$d/data" }
accounts {
  APP {
    jetstream: enabled
    users: [
      {user: "$SECURE_USER", password: "$(secure_password)"}
      {user: "anonymous", password: "$(openssl rand -hex 16)"}
    ]
  }
}
no_auth_user: anonymous
EOF
  start_bg nats "$bin" -c "$d/nats.conf"
  started nats
  ready nats 60 nats_answers
}

# The secure listener: a second server (a NATS server has one client port, and with TLS
# on it every client must use TLS), requiring TLS and the secure user. Client
# certificates are not requested: NATS has no "verify when presented" mode.
nats_tls_answers() {
  "${PROBE[@]}" http "http://127.0.0.1:$P_NATS_TLS_MONITOR/healthz?js-enabled-only=true" --expect ok
}
up_nats_tls() {
  local bin="$1" d="$STATE_DIR/nats-tls" s="$SECURE_DIR"
  running nats-tls nats_tls_answers && { log "nats-tls: already running"; return 0; }
  fresh nats-tls "$P_NATS_TLS" "$P_NATS_TLS_MONITOR"
  cat >"$d/nats.conf" <<EOF
server_name: ductape-testenv-$P_NATS_TLS
host: 127.0.0.1
port: $P_NATS_TLS
http: 127.0.0.1:$P_NATS_TLS_MONITOR
jetstream { store_dir: "$d/data" }
tls { cert_file: "$s/server.crt", key_file: "$s/server.key", ca_file: "$s/ca.crt" }
authorization { user: "$SECURE_USER", password: "$(secure_password)" }
EOF
  start_bg nats-tls "$bin" -c "$d/nats.conf"
  started nats-tls
  ready nats-tls 60 nats_tls_answers
}

up_helm() { build helm build-helm.sh >/dev/null; }

# Kubernetes: etcd, kube-apiserver (RBAC on, client-certificate admin) and the
# kube-controller-manager controllers that need no kubelet (garbage collector,
# namespace deletion, ServiceAccounts and their tokens).

# gen_certs DIR: a CA, the apiserver's serving certificate, the admin's client
# certificate (O=system:masters) and the ServiceAccount signing key pair.
gen_certs() {
  local p="$1"
  rm -rf "$p"; mkdir -p "$p"
  (
    cd "$p"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
      -subj "/CN=ductape-testenv-ca" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
    printf '%s\n' "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" \
      "extendedKeyUsage=serverAuth" "keyUsage=critical,digitalSignature,keyEncipherment" >serving.ext
    printf '%s\n' "extendedKeyUsage=clientAuth" "keyUsage=critical,digitalSignature,keyEncipherment" >client.ext
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver"
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile serving.ext -out apiserver.crt
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=admin"
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile client.ext -out admin.crt
    openssl genrsa -out sa.key 2048
    openssl rsa -in sa.key -pubout -out sa.pub
    rm -f ./*.csr
  ) >>"$(log_of kube)" 2>&1 || fail kube "openssl failed"
  touch "$p/.complete"
}

# gen_pki: certificates once per state folder; the admin kubeconfig every time (ports
# may have moved).
gen_pki() {
  local p="$STATE_DIR/kube/pki"
  [ -f "$p/.complete" ] || gen_certs "$p"
  b64() { base64 -w0 <"$p/$1"; }
  cat >"$STATE_DIR/kubeconfig.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: https://127.0.0.1:$P_KUBE
    certificate-authority-data: $(b64 ca.crt)
users:
- name: admin
  user:
    client-certificate-data: $(b64 admin.crt)
    client-key-data: $(b64 admin.key)
contexts:
- name: testenv
  context: {cluster: testenv, user: admin, namespace: default}
current-context: testenv
EOF
  mv "$STATE_DIR/kubeconfig.tmp" "$STATE_DIR/kubeconfig"
}

up_kube() {
  mkdir -p "$STATE_DIR/kube"
  local etcd kdir p="$STATE_DIR/kube/pki" restarted=0
  etcd="$(build kube build-etcd.sh)"
  kdir="$(build kube build-kube.sh)"
  gen_pki
  local kubectl=("$kdir/kubectl" --kubeconfig "$STATE_DIR/kubeconfig" --request-timeout=5s)
  local readyz=("${PROBE[@]}" http "https://127.0.0.1:$P_KUBE/readyz" --expect ok
    --ca "$p/ca.crt" --cert "$p/admin.crt" --key "$p/admin.key")

  if running etcd "${PROBE[@]}" http "http://127.0.0.1:$P_ETCD/health" --expect '"true"'; then
    log "etcd: already running"
  else
    stop_bg kube-controller-manager; stop_bg kube-apiserver
    fresh etcd "$P_ETCD" "$P_ETCD_PEER"
    local peer="http://127.0.0.1:$P_ETCD_PEER" client="http://127.0.0.1:$P_ETCD"
    start_bg etcd "$etcd" --name testenv --data-dir "$STATE_DIR/etcd/data" \
      --listen-client-urls "$client" --advertise-client-urls "$client" \
      --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
      --initial-cluster "testenv=$peer" --unsafe-no-fsync=true --log-level warn
    started etcd; restarted=1
    ready etcd 30 "${PROBE[@]}" http "$client/health" --expect '"true"'
  fi

  if [ "$restarted" = 0 ] && running kube-apiserver "${readyz[@]}"; then
    log "kube-apiserver: already running"
  else
    # No kubelet, so no Service traffic: the endpoint reconciler would only log that
    # 127.0.0.1 is not a valid endpoint address, every 10 s.
    stop_bg kube-controller-manager
    fresh kube-apiserver "$P_KUBE"
    start_bg kube-apiserver "$kdir/kube-apiserver" \
      --etcd-servers "http://127.0.0.1:$P_ETCD" \
      --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$P_KUBE" \
      --cert-dir "$STATE_DIR/kube-apiserver/data" \
      --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
      --client-ca-file "$p/ca.crt" --authorization-mode RBAC \
      --service-cluster-ip-range 10.0.0.0/24 --allow-privileged=true \
      --service-account-issuer "https://127.0.0.1:$P_KUBE/" \
      --service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key" \
      --endpoint-reconciler-type none --profiling=false
    started kube-apiserver; restarted=1
    ready kube-apiserver 90 "${readyz[@]}"
  fi

  # kube-controller-manager serves nothing (--secure-port=0): its proof of life is the
  # default ServiceAccount it creates, checked below.
  if [ "$restarted" = 0 ] && alive kube-controller-manager; then
    log "kube-controller-manager: already running"
  else
    fresh kube-controller-manager
    start_bg kube-controller-manager "$kdir/kube-controller-manager" \
      --kubeconfig "$STATE_DIR/kubeconfig" --leader-elect=false --secure-port 0 \
      --controllers garbage-collector-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller \
      --service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt"
    started kube-controller-manager
  fi
  ready kube-controller-manager 60 "${kubectl[@]}" get serviceaccount default -n default -o name
}

# --- main ----------------------------------------------------------------------------

write_env() {
  local f="$STATE_DIR/env" kdir="$CACHE_DIR/kubernetes-$KUBE_VERSION" path=""
  {
    echo "# Written by hack/testenv-up.sh at $(date -u +%FT%TZ). Source it: . $f"
    echo "export DUCTAPE_STATE_DIR='$STATE_DIR'"
    if alive kube-apiserver; then
      echo "export KUBECONFIG='$STATE_DIR/kubeconfig'"
      path="$kdir:"
      [ -x "$CACHE_DIR/helm-$HELM_VERSION/helm" ] && path="$path$CACHE_DIR/helm-$HELM_VERSION:"
    fi
    if [ -f "$SECURE_DIR/.complete" ]; then
      echo "# The secure listeners: TLS with this CA, user $SECURE_USER (test values)."
      echo "export TESTENV_CA_FILE='$SECURE_DIR/ca.crt'"
    fi
    local pw=""; [ -f "$SECURE_DIR/.complete" ] && pw="$(secure_password)"
    if alive kafka; then
      echo "export KAFKA_BOOTSTRAP_SERVERS='127.0.0.1:$P_KAFKA'"
      echo "export KAFKA_SASL_BOOTSTRAP_SERVERS='127.0.0.1:$P_KAFKA_SASL'"
      echo "export KAFKA_SASL_USERNAME='$SECURE_USER' KAFKA_SASL_PASSWORD='$pw'"
    fi
    if alive redis; then
      echo "export REDIS_URL='redis://127.0.0.1:$P_REDIS/0'"
      echo "export REDIS_TLS_URL='rediss://$SECURE_USER:$pw@127.0.0.1:$P_REDIS_TLS/0'"
    fi
    if alive rabbitmq; then
      echo "export AMQP_URL='amqp://guest:guest@127.0.0.1:$P_RABBITMQ/'"
      echo "export AMQPS_URL='amqps://$SECURE_USER:$pw@127.0.0.1:$P_RABBITMQ_TLS/'"
    fi
    if alive pubsub; then
      echo "export PUBSUB_EMULATOR_HOST='127.0.0.1:$P_PUBSUB'"
      echo "export PUBSUB_PROJECT_ID='$PUBSUB_PROJECT_ID'"
    fi
    if alive sqs; then
      echo "export SQS_ENDPOINT='http://127.0.0.1:$P_SQS'"
      echo "export AWS_REGION='us-east-1' AWS_DEFAULT_REGION='us-east-1'"
      echo "# Test values: moto accepts any credentials."
      echo "export AWS_ACCESS_KEY_ID='testing' AWS_SECRET_ACCESS_KEY='testing'"
    fi
    if alive nats; then
      echo "export NATS_URL='nats://127.0.0.1:$P_NATS'"
      echo "export NATS_MONITOR_URL='http://127.0.0.1:$P_NATS_MONITOR'"
      echo "export NATS_USERNAME='$SECURE_USER' NATS_PASSWORD='$pw'"
    fi
    if alive nats-tls; then
      echo "export NATS_TLS_URL='tls://$SECURE_USER:$pw@127.0.0.1:$P_NATS_TLS'"
    fi
    echo "export PATH='$path'\"\$PATH\""
  } >"$f.tmp"
  mv "$f.tmp" "$f"
}

ensure_packages
if wants kafka || wants redis || wants rabbitmq || wants nats; then gen_secure; fi
declare -A parts=()
# helm is only built (when missing), beside the others; nothing of it runs.
if wants kube && ! [ -x "$CACHE_DIR/helm-$HELM_VERSION/helm" ]; then WANT+=(helm); fi
for c in "${WANT[@]}"; do
  ( set -E; trap "log \"ERROR: part '$c' failed (line \$LINENO)\"" ERR; "up_$c" ) &
  parts[$c]=$!
done
failed=()
for c in "${!parts[@]}"; do
  wait "${parts[$c]}" || failed+=("$c")
done
if [ "${#failed[@]}" -gt 0 ]; then
  log "ERROR: testenv-up failed: ${failed[*]}; stopping what this run started"
  if [ -s "$RUN_DIR/started" ]; then
    for name in $(tac "$RUN_DIR/started"); do
      case "$name" in rabbitmq) stop_component rabbitmq ;; *) stop_bg "$name" ;; esac
    done
  fi
  exit 1
fi
write_env
log "local stack ready in ${SECONDS}s (${WANT[*]}): . $STATE_DIR/env"
