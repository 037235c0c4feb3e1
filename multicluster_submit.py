"""Send jobs to the Ray clusters listed in ~/.ray_address, job i to cluster i, all at once.

python multicluster_submit.py "test_kuberay_config.py --num_jobs 4"      # the same job on every cluster
python multicluster_submit.py "<JOB_0>" "<JOB_1>"                        # one job per cluster
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ray_workflow.multicluster_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
