#!/usr/bin/env bash
# On a machine with a real NVIDIA GPU: test_kuberay_config.py against a local Ray cluster that
# owns the GPU, then a short CartPole sweep with --gpus_per_trial 0.25, sampling nvidia-smi to
# show four trials sharing the GPU. Results go to $OUT (default /tmp/gpu_check).
#   bash benchmarks/gpu_check.sh
# If .devbundle/site.tar.xz exists (Ray and the trainer's packages for a machine without them,
# built by benchmarks/make_device_bundle.sh), it is unpacked and put on PYTHONPATH first.
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-/tmp/gpu_check}"
mkdir -p "$OUT"
PY="${PY:-python3}"
export RAY_AUTH_MODE=disabled PYTHONUNBUFFERED=1

if [ "${1:-}" != "inner" ]; then
  if [ -f .devbundle/site.tar.xz ]; then
    tar xJf .devbundle/site.tar.xz -C /tmp && export PYTHONPATH="/tmp/devsite${PYTHONPATH:+:$PYTHONPATH}"
    mkdir -p /tmp/devbin
    printf '#!/bin/sh\nexec %s -m ray.scripts.scripts "$@"\n' "$(command -v "$PY")" > /tmp/devbin/ray
    chmod +x /tmp/devbin/ray
    export PATH="/tmp/devbin:$PATH"
  fi
  nvidia-smi -L | tee "$OUT/nvidia_smi.txt"
  "$PY" -c "import ray, torch; print('ray', ray.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  exec "$PY" local_clusters.py --state_dir /tmp/gpu_check_clusters run --name gpu --num_cpus 12 -- \
    bash benchmarks/gpu_check.sh inner
fi

echo "== test_kuberay_config.py: 1 task x 1 GPU =="
"$PY" test_kuberay_config.py --num_jobs 1 2>&1 | tee "$OUT/check_1x1.txt"
echo "== test_kuberay_config.py: 4 tasks x 0.25 GPU =="
"$PY" test_kuberay_config.py --num_jobs 4 --gpus_per_job 0.25 2>&1 | tee "$OUT/check_4x025.txt"
echo "== test_kuberay_config.py: 2 tasks x 1 GPU on a 1-GPU cluster (must fail fast) =="
"$PY" test_kuberay_config.py --num_jobs 2 2>&1 | tee "$OUT/check_2x1.txt"

echo "== CartPole sweep, 4 trials x 0.25 GPU =="
nvidia-smi --query-compute-apps=timestamp,pid,process_name,used_memory --format=csv -l 1 > "$OUT/gpu_apps.csv" &
sampler=$!
CARTPOLE_MAX_ITERATIONS=60 CARTPOLE_DEVICE=cuda "$PY" hyper_parameter_tuning/config/cartpole_sweep.py \
  --num_samples 4 --gpus_per_trial 0.25 --cpus_per_trial 2 --searcher random --scheduler fifo \
  --storage_path /tmp/gpu_check_sweeps --name gpu_share 2>&1 | grep -v "^\s*$" | tail -30 | tee "$OUT/sweep.txt"
kill "$sampler"
cp /tmp/gpu_check_sweeps/gpu_share/results.csv /tmp/gpu_check_sweeps/gpu_share/learning_curves.png "$OUT/" 2>/dev/null
grep -h "Training on" /tmp/gpu_check_sweeps/gpu_share/*/training_output.log | sort | uniq -c | tee "$OUT/trial_devices.txt"
echo "most trainers on the GPU at once: $(awk -F', ' 'NR>1 {n[$1]++} END {m=0; for (t in n) if (n[t]>m) m=n[t]; print m}' "$OUT/gpu_apps.csv")"
