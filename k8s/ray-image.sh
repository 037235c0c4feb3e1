#!/usr/bin/env bash
# Builds the Ray image the tests' real Kubernetes node runs (it pulls nothing): Debian bookworm by debootstrap,
# whose python3.11 is the project's, with the project's pinned Ray and runtime dependencies (pyproject.toml)
# from PyPI in /opt/ray, packed as an OCI archive for `ctr images import`. Cached outside the repository,
# keyed by this script, the packer and the pins; prints the archive's path.
#   k8s/ray-image.sh           build if needed, print the archive
#   k8s/ray-image.sh --where   print the archive's path only
set -euo pipefail

DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
here=$(cd "$(dirname "$0")" && pwd)
requirements=$(python3 -c 'import sys, tomllib; p = tomllib.load(open(sys.argv[1], "rb"))["project"]
print("\n".join(p["dependencies"] + p["optional-dependencies"]["buckets"]))' "$here/../pyproject.toml")
key=$( (cat "$here/ray-image.sh" "$here/oci_image.py"; echo "$requirements") | sha256sum | cut -c1-16)
cache=${ISAACLAB_RAY_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/isaaclab_ray/k8s}
archive="$cache/images/ray-$key.tar"
if [ "${1:-}" = --where ] || [ -f "$archive" ]; then echo "$archive"; exit 0; fi
[ "$(id -u)" = 0 ] || { echo "k8s/ray-image.sh: debootstrap and chroot need root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "k8s/ray-image.sh: needs debootstrap (apt-get install debootstrap)" >&2; exit 1; }

mkdir -p "$cache/images"
staging=$(mktemp -d "$cache/images/building.XXXXXX")
rootfs="$staging/rootfs"
# The chroot's mounts live in a mount namespace of this script's own and go with it.
cleanup() { rm -rf --one-file-system "$staging"; }
trap cleanup EXIT
started=$(date +%s)
step() { echo "k8s/ray-image.sh: $* ($(( $(date +%s) - started )) s)" >&2; }
step "Debian $DEBIAN_SUITE by debootstrap"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,wget,procps \
	"$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" >"$staging/debootstrap.log" 2>&1 \
	|| { tail -20 "$staging/debootstrap.log" >&2; exit 1; }
step "Ray and the project's runtime dependencies from PyPI"
echo "$requirements" > "$rootfs/requirements.txt"
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
# This machine's certificate authorities reach PyPI (through a proxy, on some machines); the image keeps Debian's.
cp "${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}" "$rootfs/build-ca.crt"
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root PIP_CERT=/build-ca.crt REQUESTS_CA_BUNDLE=/build-ca.crt \
	${HTTPS_PROXY:+HTTPS_PROXY=$HTTPS_PROXY} ${https_proxy:+https_proxy=$https_proxy} unshare --mount --propagation private chroot "$rootfs" /bin/sh -ec '
	mount -t proc proc /proc
	python3 -m venv /opt/ray
	/opt/ray/bin/pip install --quiet --no-cache-dir --disable-pip-version-check -r /requirements.txt
	umount /proc'
# KubeRay runs `ray start` in a login shell, which takes its PATH from /etc/profile: the venv goes first there too.
echo 'PATH=/opt/ray/bin:$PATH' > "$rootfs/etc/profile.d/ray.sh"
rm -rf "$rootfs/requirements.txt" "$rootfs/build-ca.crt" "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"* \
	"$rootfs/etc/resolv.conf"
step "packing"
python3 "$here/oci_image.py" "$rootfs" "isaaclab-ray.local/ray:$key" "$staging/ray.tar" \
	--env PATH=/opt/ray/bin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 --cmd /bin/bash
mv "$staging/ray.tar" "$archive"
step "done: $(du -sh "$archive" | cut -f1) in $archive"
echo "$archive"
