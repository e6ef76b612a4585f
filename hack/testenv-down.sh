#!/usr/bin/env bash
# Stops what hack/testenv-up.sh started in this state folder, and only that: the
# process groups it recorded (TERM, then KILL after a deadline), the RabbitMQ node via
# rabbitmqctl and then its epmd. Removes data, keeps logs. Succeeds when nothing runs.
. "$(dirname "$0")/lib.sh"
[ -d "$STATE_DIR" ] || { log "nothing to stop ($STATE_DIR does not exist)"; exit 0; }
exec 9>"$STATE_DIR/.testenv.lock"
flock -w 600 9 || die "another testenv-up/down holds $STATE_DIR/.testenv.lock"

IFS=, read -ra parts <<<"$ALL_COMPONENTS"
pids=()
for c in "${parts[@]}"; do
  stop_component "$c" &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done

left=""
for name in etcd kube-apiserver kube-controller-manager kafka redis rabbitmq epmd pubsub sqs nats nats-tls; do
  if [ -s "$STATE_DIR/$name/pid" ]; then left="$left $name"; fi
  rm -rf "$STATE_DIR/$name/data"
done
rm -f "$STATE_DIR/env"
[ "$status" = 0 ] && [ -z "$left" ] || die "could not stop:$left"
log "local stack stopped (logs kept under $STATE_DIR)"
