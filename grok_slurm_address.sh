#!/usr/bin/env bash
# Write ~/.ray_address for our SLURM clusters (launch.py --cluster_host slurm): waits until every node has joined.
#   ./grok_slurm_address.sh [--name NAME] [--timeout_s 600] [--state_dir DIR] [--output F]
# A thin wrapper: ray_workflow/grok.py over ray_workflow/hosts/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -n "${PYTHON:-}" ]; then python="$PYTHON"
elif [ -x "$here/.venv/bin/python" ]; then python="$here/.venv/bin/python"
else python=python3
fi
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m ray_workflow.grok slurm "$@"
