#!/usr/bin/env bash
# Builds the object-store emulator the bucket tests run for GCS (fake-gcs-server, a Go module) into a cache outside
# the repository, reused while this script is unchanged, and prints the folder of binaries. (S3's emulator, moto,
# is a Python package of the dev extra.)
#   emulators/build.sh           build if needed, print the folder
#   emulators/build.sh --where   print the folder only
set -euo pipefail

FAKE_GCS_SERVER_VERSION=v1.56.1

here=$(cd "$(dirname "$0")" && pwd)
key=$(sha256sum < "$here/build.sh" | cut -c1-16)
cache=${ISAACLAB_RAY_EMULATORS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/isaaclab_ray/emulators}
bin="$cache/$key/bin"
if [ "${1:-}" = --where ]; then echo "$bin"; exit 0; fi
if [ -x "$bin/fake-gcs-server" ]; then echo "$bin"; exit 0; fi
command -v go >/dev/null || { echo "emulators/build.sh: needs Go 1.26 (go is not on PATH)" >&2; exit 1; }

mkdir -p "$cache/$key"
staging=$(mktemp -d "$cache/$key/building.XXXXXX")
trap 'rm -rf "$staging"' EXIT
GOFLAGS="${GOFLAGS:-} -trimpath" GOBIN="$staging" go install -ldflags=-s "github.com/fsouza/fake-gcs-server@$FAKE_GCS_SERVER_VERSION"
# Two builds at once: the first to finish installs its folder, the other's is dropped.
mv -T "$staging" "$bin" 2>/dev/null || [ -x "$bin/fake-gcs-server" ]
echo "$bin"
