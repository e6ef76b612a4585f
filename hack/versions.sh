# Pinned versions of every component of the local stack. Sourced by hack/*.sh.
# Bumping one here invalidates only that component's cache folder.
ETCD_VERSION="${ETCD_VERSION:-3.6.16}"
KUBE_VERSION="${KUBE_VERSION:-1.34.4}"
HELM_VERSION="${HELM_VERSION:-3.22.0}"
KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
LOG4J_VERSION="${LOG4J_VERSION:-2.25.3}"
MOTO_VERSION="${MOTO_VERSION:-5.2.5}"
SLF4J_VERSION="${SLF4J_VERSION:-2.0.17}"
PUBSUB_GO_VERSION="${PUBSUB_GO_VERSION:-2.9.0}"
KEDA_VERSION="${KEDA_VERSION:-2.18.0}"
