# The README's two commands: `make demo` (a CartPole sweep on a local Ray cluster) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# Isaac Lab 3, kit-less on the CPU, in its own environment (its trainers run as separate processes).
ISAACLAB_VENV := .venv-isaaclab
ISAACLAB_INSTALLED := $(ISAACLAB_VENV)/.installed
ISAACLAB_ENV := ISAACLAB=$(abspath $(ISAACLAB_VENV))/bin/isaaclab ISAACSIM_ASSET_ROOT=$(abspath $(ISAACLAB_VENV))/assets

.PHONY: demo demo-isaaclab isaaclab slurm k8s emulators test lint clean

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet '.[trainer,tracking,buckets,dev]'
	touch $(INSTALLED)

$(ISAACLAB_INSTALLED): isaaclab3_cpu/requirements.txt isaaclab3_cpu/install.sh isaaclab3_cpu/prepare_assets.py
	PYTHON=$(PYTHON) isaaclab3_cpu/install.sh $(ISAACLAB_VENV)

isaaclab: $(ISAACLAB_INSTALLED)

# Each demo is a new sweep (the same sweep command run again would continue, or reprint, the last one).
DEMO_NAME = cartpole_demo_$(shell date +%Y-%m-%d_%H-%M-%S)
demo: $(INSTALLED)
	$(PY) local_clusters.py run --name demo --num_cpus 2 -- \
		$(PY) hyper_parameter_tuning/config/cartpole_sweep.py --ray_address auto --storage_path results \
		--name $(DEMO_NAME)

demo-isaaclab: $(INSTALLED) $(ISAACLAB_INSTALLED)
	$(ISAACLAB_ENV) ISAACLAB_NUM_ENVS=256 ISAACLAB_MAX_ITERATIONS=60 \
	$(PY) local_clusters.py run --name demo-isaaclab --num_cpus 2 -- \
		$(PY) hyper_parameter_tuning/config/isaaclab3_cartpole.py --ray_address auto --storage_path results \
		--num_samples 4 --name isaaclab_$(DEMO_NAME)

lint: $(INSTALLED)
	$(PY) -m ruff check .

# Debian packages $(1), as root: the package lists are refreshed only if the first try fails.
apt_install = export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q $(1) >/dev/null || \
	{ apt-get update -q >/dev/null && apt-get install -y -q $(1) >/dev/null; }

# A real SLURM for the tests: Debian's packages (CI runs as root). The tests start its daemons themselves.
SLURM_PACKAGES := slurmctld slurmd slurm-client munge
slurm:
	@if [ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/slurmd ] && [ -x /usr/sbin/munged ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then $(call apt_install,$(SLURM_PACKAGES)); \
	else echo "make slurm: needs root to install $(SLURM_PACKAGES); the SLURM tests will be skipped"; fi

# A real Kubernetes control plane for the tests (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, KWOK, the KubeRay operator) and a real node (containerd, runc, kubelet, kube-proxy, CNI, CoreDNS), built
# from pinned Go modules into ~/.cache/isaaclab_ray/k8s (k8s/build.sh), and the node's Ray image (k8s/ray-image.sh).
# The node needs Debian's iptables, and its builds debootstrap and libseccomp-dev (installed as root, like SLURM).
NODE_PACKAGES := iptables debootstrap libseccomp-dev
k8s:
	@if ! dpkg -s $(NODE_PACKAGES) >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then $(call apt_install,$(NODE_PACKAGES)); fi
	@if command -v go >/dev/null; then k8s/build.sh >/dev/null && { [ "$$(id -u)" != 0 ] || k8s/ray-image.sh >/dev/null; }; \
	elif [ -n "$$CI" ]; then echo "make k8s: CI must run the Kubernetes tests, and Go 1.26 is not on PATH" >&2; exit 1; \
	else echo "make k8s: needs Go 1.26 and the Go module proxy; the Kubernetes tests will be skipped"; fi

# A GCS emulator for the bucket tests (fake-gcs-server, from its Go module: emulators/build.sh); S3's is moto (dev extra).
emulators:
	@if command -v go >/dev/null; then emulators/build.sh >/dev/null; \
	elif [ -n "$$CI" ]; then echo "make emulators: CI must run the bucket tests, and Go 1.26 is not on PATH" >&2; exit 1; \
	else echo "make emulators: needs Go 1.26 and the Go module proxy; the GCS bucket tests will be skipped"; fi

test: lint slurm k8s emulators $(ISAACLAB_INSTALLED)
	$(PY) -m pytest

clean:
	rm -rf $(VENV) $(ISAACLAB_VENV) results build *.egg-info
