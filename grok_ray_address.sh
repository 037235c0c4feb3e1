#!/usr/bin/env bash
# Write ~/.ray_address for Ray clusters not on Kubernetes: the given heads, else the local ones.
#   ./grok_ray_address.sh --address 10.0.0.5:6379 --cluster_name lab-box [--output F]
#   ./grok_ray_address.sh                      # clusters of local_clusters.py, else the running local head
# A thin wrapper: ray_workflow/grok.py over ray_workflow/hosts/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -n "${PYTHON:-}" ]; then python="$PYTHON"
elif [ -x "$here/.venv/bin/python" ]; then python="$here/.venv/bin/python"
else python=python3
fi
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m ray_workflow.grok ray "$@"
