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
