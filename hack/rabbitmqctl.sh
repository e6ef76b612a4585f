#!/usr/bin/env bash
# rabbitmqctl against the local stack's node, with the stack's environment
# (its node name, ports and files under the state folder). Tests use it to act
# as the broker would: `hack/rabbitmqctl.sh close_all_connections "reason"`.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
rabbitmq_env
exec timeout 60 "$RABBITMQ_BIN/rabbitmqctl" -q -n "$RABBITMQ_NODE" "$@"
