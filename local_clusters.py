"""Start several independent Ray clusters on this machine, each on its own ports and temp dir.

python local_clusters.py up 3 --num_gpus 2     # writes ~/.ray_address
python local_clusters.py status
python local_clusters.py down                  # stops only the clusters this script started
python local_clusters.py run -- python hyper_parameter_tuning/config/cartpole_sweep.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ray_workflow.local_cluster_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
