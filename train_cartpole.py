"""Train PPO on CartPole-v1 like Isaac Lab's train.py.

python train_cartpole.py --max_iterations 100 agent.ent_coef=0.01
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ray_workflow.cartpole_trainer import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
