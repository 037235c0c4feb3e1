"""rsl_rl's real ``OnPolicyRunner`` on a CartPole written in torch, run as Isaac Lab 3's rsl_rl trainer is.

For the GPU check on a machine that has PyTorch but no Isaac Lab (Isaac Lab's wheels do not fit
the 64 MiB a lent machine may receive; rsl-rl-lib's do). The command line, the printed lines, the
run folder, the TensorBoard tags, ``model_<it>.pt`` and ``--checkpoint`` resume are Isaac Lab's;
the environment is the classic cart-pole dynamics, vectorised on ``--device``.

    python benchmarks/rsl_rl_cartpole.py --device cuda:0 --num_envs 512 --max_iterations 50 \
        agent.algorithm.learning_rate=0.001
"""

import argparse
import math
import os
from datetime import datetime

import torch
from rsl_rl.env import VecEnv
from rsl_rl.runners import OnPolicyRunner
from tensordict import TensorDict

AGENT = {
    "seed": 42,
    "num_steps_per_env": 16,
    "save_interval": 10,
    "obs_groups": {"actor": ["policy"], "critic": ["policy"]},
    "logger": "tensorboard",
    "class_name": "OnPolicyRunner",
    "actor": {
        "class_name": "MLPModel",
        "hidden_dims": [32, 32],
        "activation": "elu",
        "obs_normalization": False,
        "distribution_cfg": {"class_name": "GaussianDistribution", "init_std": 1.0},
    },
    "critic": {"class_name": "MLPModel", "hidden_dims": [32, 32], "activation": "elu", "obs_normalization": False},
    "algorithm": {
        "class_name": "PPO",
        "num_learning_epochs": 5,
        "num_mini_batches": 4,
        "learning_rate": 1e-3,
        "schedule": "adaptive",
        "gamma": 0.99,
        "lam": 0.95,
        "entropy_coef": 0.005,
        "desired_kl": 0.01,
        "max_grad_norm": 1.0,
        "value_loss_coef": 1.0,
        "use_clipped_value_loss": True,
        "clip_param": 0.2,
    },
}


class CartPole(VecEnv):
    """Gymnasium's CartPole-v1 dynamics with a continuous force, for ``num_envs`` carts at once."""

    def __init__(self, num_envs: int, device: str) -> None:
        self.num_envs, self.num_actions, self.device, self.cfg = num_envs, 1, device, {}
        self.max_episode_length = 500
        self.episode_length_buf = torch.zeros(num_envs, dtype=torch.long, device=device)
        self.state = torch.zeros(num_envs, 4, device=device)
        self._reset(torch.ones(num_envs, dtype=torch.bool, device=device))

    def _reset(self, which: torch.Tensor) -> None:
        self.state[which] = (torch.rand(int(which.sum()), 4, device=self.device) - 0.5) * 0.1
        self.episode_length_buf[which] = 0

    def get_observations(self) -> TensorDict:
        return TensorDict({"policy": self.state.clone()}, batch_size=[self.num_envs])

    def step(self, actions: torch.Tensor):
        x, x_dot, theta, theta_dot = self.state.unbind(1)
        force = 10.0 * actions.clamp(-1, 1).squeeze(1)
        cos, sin = torch.cos(theta), torch.sin(theta)
        temp = (force + 0.05 * theta_dot**2 * sin) / 1.1
        theta_acc = (9.8 * sin - cos * temp) / (0.5 * (4.0 / 3.0 - 0.1 * cos**2 / 1.1))
        x_acc = temp - 0.05 * theta_acc * cos / 1.1
        self.state = torch.stack(
            [x + 0.02 * x_dot, x_dot + 0.02 * x_acc, theta + 0.02 * theta_dot, theta_dot + 0.02 * theta_acc], 1
        )
        self.episode_length_buf += 1
        failed = (self.state[:, 0].abs() > 2.4) | (self.state[:, 2].abs() > 12 * 2 * math.pi / 360)
        timed_out = self.episode_length_buf >= self.max_episode_length
        rewards = (~failed).float()
        dones = failed | timed_out
        extras = {"time_outs": timed_out & ~failed}
        self._reset(dones)
        return self.get_observations(), rewards, dones.long(), extras


def apply_override(agent: dict, override: str) -> None:
    path, _, text = override.partition("=")
    keys = path.removeprefix("agent.").split(".")
    node = agent
    for key in keys[:-1]:
        node = node[key]
    if keys[-1] not in node:
        raise SystemExit(f"error: unknown override {override!r}")
    node[keys[-1]] = type(node[keys[-1]])(text) if not isinstance(node[keys[-1]], bool) else text == "true"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_envs", type=int, default=256)
    parser.add_argument("--max_iterations", type=int, default=50)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--run_timestamp")
    parser.add_argument("--checkpoint")
    parser.add_argument("--ray-proc-id", "-rid", type=int)
    # Like Isaac Lab's train scripts: what argparse does not know are Hydra overrides, wherever they stand.
    args, overrides = parser.parse_known_args()
    agent = {**AGENT, "algorithm": dict(AGENT["algorithm"])}
    for override in overrides:
        apply_override(agent, override)
    log_root = os.path.abspath(os.path.join("logs", "rsl_rl", "cartpole_gpu"))
    print(f"[INFO] Logging experiment in directory: {log_root}", flush=True)
    run_name = args.run_timestamp or datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    print(f"Exact experiment name requested from command line: {run_name}", flush=True)
    print(f"[INFO] Training on {args.device} (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')})")
    runner = OnPolicyRunner(CartPole(args.num_envs, args.device), agent, os.path.join(log_root, run_name), args.device)
    if args.checkpoint:
        print(f"[INFO]: Loading model checkpoint from: {args.checkpoint}", flush=True)
        runner.load(args.checkpoint)
    runner.learn(num_learning_iterations=args.max_iterations, init_at_random_ep_len=True)


if __name__ == "__main__":
    main()
