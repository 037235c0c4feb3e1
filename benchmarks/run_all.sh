#!/usr/bin/env bash
# Every benchmark in turn (about 30 minutes on 2 cores), each printing its own figures.
set -euo pipefail
cd "$(dirname "$0")"
PY=../.venv/bin/python
$PY metric_reader_scaling.py
$PY metric_latency.py
$PY tuner_overhead.py --trials 8 --seconds 10 --concurrency 2 --repeats 3
$PY tuner_overhead.py --trials 8 --seconds 2 --concurrency 2 --repeats 3
$PY multicluster_submit.py --job_seconds 5 --repeats 3
$PY cartpole_sweep.py --repeats 3
[ -f ../.venv-isaaclab/.installed ] && $PY isaaclab_sweep.py --trials 4 || echo "isaaclab_sweep.py skipped: run make isaaclab first"
$PY slurm_launch.py --repeats 3
$PY bucket_storage.py --parts sweep state lost_head
