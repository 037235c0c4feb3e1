"""Tune any sweep config.

python hyper_parameter_tuning/tuner.py --cfg_file hyper_parameter_tuning/config/cartpole_sweep.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ray_workflow.sweeps.cli import main

if __name__ == "__main__":
    sys.exit(main())
