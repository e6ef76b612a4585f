#!/usr/bin/env bash
# Installs moto's server (the SQS-compatible endpoint of the local stack) into its
# own virtualenv in the cache, once per version: moto pins botocore/boto3 versions
# that would fight aiobotocore's pins in the project's .venv.
. "$(dirname "$0")/lib.sh"
out="$CACHE_DIR/moto-$MOTO_VERSION"
[ -f "$out/.complete" ] && { echo "$out/bin/moto_server"; exit 0; }
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null || py=python3
log "installing moto[server]==$MOTO_VERSION (first run only)"
# A venv is not relocatable (its scripts name the interpreter by absolute path), so it
# is built in place and marked complete only at the end.
rm -rf "$out"
"$py" -m venv "$out"
"$out/bin/pip" install -q "moto[server]==$MOTO_VERSION" >&2
touch "$out/.complete"
echo "$out/bin/moto_server"
