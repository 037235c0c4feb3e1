#!/usr/bin/env bash
# Write ~/.ray_address for our KubeRay clusters: waits for each head pod, then one block per cluster.
#   ./grok_cluster_address_with_kubectl.sh --namespace NS [--name NAME] [--timeout_s 600] [--port_forward] [--output F]
# A thin wrapper: ray_workflow/grok.py over ray_workflow/hosts/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -n "${PYTHON:-}" ]; then python="$PYTHON"
elif [ -x "$here/.venv/bin/python" ]; then python="$here/.venv/bin/python"
else python=python3
fi
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m ray_workflow.grok kubectl "$@"
