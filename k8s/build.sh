#!/usr/bin/env bash
# Builds the real Kubernetes control plane and node the tests run, from pinned Go module versions, into a cache
# outside the repository (reused while this folder is unchanged), and prints the folder of binaries.
# The node's Ray image is k8s/ray-image.sh's.
#   k8s/build.sh           build if needed, print the folder
#   k8s/build.sh --where   print the folder only
# Nothing is downloaded but Go modules (GOPROXY); no kind, no release tarballs, no registry.
set -euo pipefail

KWOK_VERSION=v0.8.0
# The newest KubeRay operator the Go module proxy serves: v1.7.0 (the bundled CRD's version) is refused
# there (403, "not available"). v1.6.1 reads everything our manifests use (authOptions.secretName included);
# the tests install the bundled v1.7.0 CRD, as a user who upgrades the CRD first has.
KUBERAY_VERSION=v1.6.1
# The tests' real node (tests/k8s_node.py): containerd 2 (Debian's 1.6 is too old for kubelet 1.36), runc with
# seccomp (needs libseccomp-dev), the CNI plugins it wires Pods with, and crictl.
CONTAINERD_VERSION=v2.4.2
RUNC_VERSION=v1.5.3
CNI_PLUGINS_VERSION=v1.10.0
CRI_TOOLS_VERSION=v1.37.0

here=$(cd "$(dirname "$0")" && pwd)
key=$(cd "$here" && cat build.sh control-plane/go.mod control-plane/go.sum etcd/go.mod etcd/go.sum etcd/main.go \
	coredns/go.mod coredns/go.sum coredns/main.go pause/go.mod pause/main.go | sha256sum | cut -c1-16)
cache=${ISAACLAB_RAY_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/isaaclab_ray/k8s}
bin="$cache/$key/bin"
if [ "${1:-}" = --where ]; then echo "$bin"; exit 0; fi
if [ -f "$bin/.complete" ]; then echo "$bin"; exit 0; fi
command -v go >/dev/null || { echo "k8s/build.sh: needs Go 1.26 (go is not on PATH)" >&2; exit 1; }

mkdir -p "$cache/$key"
staging=$(mktemp -d "$cache/$key/building.XXXXXX")
chmod 755 "$staging"
trap 'rm -rf "$staging"' EXIT
started=$(date +%s)
step() { echo "k8s/build.sh: $* ($(( $(date +%s) - started )) s)" >&2; }
export GOFLAGS="${GOFLAGS:-} -trimpath"
step "etcd v3.6 from go.etcd.io/etcd/server/v3"
(cd "$here/etcd" && go build -ldflags=-s -o "$staging/etcd" .)
step "kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet, kube-proxy from k8s.io/kubernetes"
kubernetes_version=$(sed -n 's/^\tk8s.io\/kubernetes \(v[0-9.]*\).*/\1/p' "$here/control-plane/go.mod")
(cd "$here/control-plane" && go build -o "$staging/" \
	-ldflags="-s -X k8s.io/component-base/version.gitVersion=$kubernetes_version -X k8s.io/component-base/version.gitTreeState=clean" \
	k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
	k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
step "containerd $CONTAINERD_VERSION, runc $RUNC_VERSION, CNI plugins $CNI_PLUGINS_VERSION, crictl $CRI_TOOLS_VERSION"
CGO_ENABLED=0 GOBIN="$staging" go install -ldflags=-s -tags "no_btrfs no_devmapper no_zfs" \
	"github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
	"github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION"
CGO_ENABLED=1 GOBIN="$staging" go install -ldflags=-s -tags seccomp "github.com/opencontainers/runc@$RUNC_VERSION"
mkdir "$staging/cni"
CGO_ENABLED=0 GOBIN="$staging/cni" go install -ldflags=-s \
	"github.com/containernetworking/plugins/plugins/main/bridge@$CNI_PLUGINS_VERSION" \
	"github.com/containernetworking/plugins/plugins/main/loopback@$CNI_PLUGINS_VERSION" \
	"github.com/containernetworking/plugins/plugins/ipam/host-local@$CNI_PLUGINS_VERSION" \
	"github.com/containernetworking/plugins/plugins/meta/portmap@$CNI_PLUGINS_VERSION"
CGO_ENABLED=0 GOBIN="$staging" go install -ldflags=-s "sigs.k8s.io/cri-tools/cmd/crictl@$CRI_TOOLS_VERSION"
step "CoreDNS (k8s/coredns) and the Pod sandbox's pause (k8s/pause)"
(cd "$here/coredns" && CGO_ENABLED=0 go build -ldflags=-s -o "$staging/coredns" .)
(cd "$here/pause" && CGO_ENABLED=0 go build -ldflags=-s -o "$staging/pause" .)
step "kwok $KWOK_VERSION"
GOBIN="$staging" go install -ldflags=-s "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
# kwok runs only the stages it is given: kwokctl's defaults (nodes Ready with heartbeats and leases,
# Pods Running and Ready, deleted Pods gone), from the same module.
kwok_dir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
for stage in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
	pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
	cat "$kwok_dir/kustomize/stage/$stage.yaml"
	echo "---"
done > "$staging/kwok-stages.yaml"
# kubectl port-forward to a KWOK pod reaches the address a PortForward object names.
cp "$kwok_dir/kustomize/crd/bases/kwok.x-k8s.io_portforwards.yaml" "$staging/"
step "KubeRay operator $KUBERAY_VERSION"
GOBIN="$staging" go install -ldflags=-s "github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION"
# The operator watches RayJobs, RayServices and RayCronJobs too: their CRDs, as its Helm chart installs them.
kuberay_dir=$(go mod download -json "github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION" \
	| sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
mkdir "$staging/kuberay-crds"
cp "$kuberay_dir"/config/crd/bases/ray.io_*.yaml "$staging/kuberay-crds/"
# KubeRay's own RayCluster samples: the tests check that the API server and our offline check agree on them.
mkdir "$staging/kuberay-samples"
cp "$kuberay_dir"/config/samples/ray-cluster*.yaml "$staging/kuberay-samples/"
touch "$staging/.complete"
# Two builds at once: the first to finish installs its folder, the other's is dropped.
mv -T "$staging" "$bin" 2>/dev/null || [ -f "$bin/.complete" ]
trap - EXIT
rm -rf "$staging"
step "done: $(du -sh "$bin" | cut -f1) in $bin"
echo "$bin"
