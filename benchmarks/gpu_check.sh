#!/usr/bin/env bash
# On a machine with a real NVIDIA GPU: test_kuberay_config.py against a local Ray cluster that
# owns the GPU, then a short CartPole sweep with --gpus_per_trial 0.25, sampling nvidia-smi to
# show four trials sharing the GPU, then rsl_rl's real runner as Isaac Lab trials on cuda (4 x 0.25 GPU),
# interrupted and resumed from their model_<it>.pt. Results go to $OUT (default /tmp/gpu_check).
#   bash benchmarks/gpu_check.sh
# ONLY=rsl_rl runs the last part alone.
# If .devbundle/site.tar.xz exists (Ray and the trainer's packages for a machine without them,
# built by benchmarks/make_device_bundle.sh), it is unpacked and put on PYTHONPATH first.
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-/tmp/gpu_check}"
mkdir -p "$OUT"
PY="${PY:-python3}"
export PYTHONUNBUFFERED=1

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

if [ "${ONLY:-}" != rsl_rl ]; then
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
fi

echo "== rsl_rl OnPolicyRunner on cuda as Isaac Lab trials: 4 x 0.25 GPU, driver killed, sweep resumed =="
export RSL_RL_CWD=/tmp/gpu_check_rsl_rl RSL_RL_MAX_ITERATIONS=300
rm -rf "$RSL_RL_CWD" /tmp/gpu_check_sweeps/rsl_rl  # this check's own folders, from an earlier run
mkdir -p "$RSL_RL_CWD"
nvidia-smi --query-compute-apps=timestamp,pid,process_name,used_memory --format=csv -l 1 > "$OUT/rsl_rl_gpu_apps.csv" &
sampler=$!
sweep=("$PY" benchmarks/rsl_rl_gpu_sweep.py --storage_path /tmp/gpu_check_sweeps --name rsl_rl --max_concurrent_trials 4)
"${sweep[@]}" > "$OUT/rsl_rl_interrupted.txt" 2>&1 &
driver=$!
"$PY" - <<'WAIT'
import time
from ray.tune import ExperimentAnalysis
deadline = time.monotonic() + 240
while time.monotonic() < deadline:
    try:
        trials = ExperimentAnalysis("/tmp/gpu_check_sweeps/rsl_rl").trials
        if [t for t in trials if t.status != "TERMINATED" and t.checkpoint]:
            print("Tune's saved state holds a checkpoint of a running trial: killing the sweep's driver")
            break
    except Exception:
        pass
    time.sleep(1)
WAIT
kill -9 "$driver"; wait "$driver" 2>/dev/null
"${sweep[@]}" --resume 2>&1 | grep -v "^\s*$" | tail -20 | tee "$OUT/rsl_rl_resumed.txt"
kill "$sampler"
cp /tmp/gpu_check_sweeps/rsl_rl/results.csv "$OUT/rsl_rl_results.csv" 2>/dev/null
echo "trials resumed from a model checkpoint: $(grep -l "Loading model checkpoint from: .*model_" /tmp/gpu_check_sweeps/rsl_rl/*/training_output.log | wc -l)" | tee "$OUT/rsl_rl_summary.txt"
grep -h "Training on" /tmp/gpu_check_sweeps/rsl_rl/*/training_output.log | sort | uniq -c | tee -a "$OUT/rsl_rl_summary.txt"
echo "most rsl_rl trainers on the GPU at once: $(awk -F', ' 'NR>1 {n[$1]++} END {m=0; for (t in n) if (n[t]>m) m=n[t]; print m}' "$OUT/rsl_rl_gpu_apps.csv")" | tee -a "$OUT/rsl_rl_summary.txt"
