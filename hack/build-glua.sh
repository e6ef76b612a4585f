#!/usr/bin/env bash
# Builds glua, the command-line interpreter of gopher-lua (the Lua VM Argo CD runs health
# checks in), into the cache, once per version. Prints its path.
. "$(dirname "$0")/lib.sh"
# v1.1.1 is the version Argo CD itself links.
GOPHER_LUA_VERSION="${GOPHER_LUA_VERSION:-1.1.1}"
out="$CACHE_DIR/gopher-lua-$GOPHER_LUA_VERSION"
[ -x "$out/glua" ] && { echo "$out/glua"; exit 0; }
log "building glua (gopher-lua v$GOPHER_LUA_VERSION, first run only)"
rm -rf "$out.tmp"; mkdir -p "$out.tmp"
CGO_ENABLED=0 GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w" \
  "github.com/yuin/gopher-lua/cmd/glua@v$GOPHER_LUA_VERSION"
rm -rf "$out"; mv "$out.tmp" "$out"
echo "$out/glua"
