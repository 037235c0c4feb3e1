"""Check a Ray cluster (sent as a Ray job): GPUs, nvidia-smi, CUDA in torch, Ray, Python packages.

    ray job submit --working-dir . --address=$(awk '!/^#/{print $0}' ~/.ray_address | head -n 1) \\
        -- python test_kuberay_config.py --num_jobs 4
    python multicluster_submit.py "test_kuberay_config.py --num_jobs 4"
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ray_workflow.cluster_check_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
