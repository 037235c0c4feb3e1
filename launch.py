"""Start Ray clusters on Kubernetes through KubeRay (renders cluster_configs/<host>/kuberay.yaml.jinja).

    python launch.py --cluster_host google_cloud --namespace NS --image IMG \\
        --min_workers 4 --max_workers 16 --num_clusters 3
    python launch.py --dry_run --cluster_host local          # print the validated manifests, touch nothing
    python launch.py --down --name isaac-lab-hyperparameter-tuner
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ray_workflow.launch_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
