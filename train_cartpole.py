"""The embedded CartPole trainer: PPO on gymnasium's CartPole-v1, shaped like Isaac Lab's train.py.

    python train_cartpole.py --max_iterations 100 agent.ent_coef=0.01

It exists so that the tuner is exercised exactly as with Isaac Lab (a training command with
Hydra-style ``agent.KEY=VALUE`` overrides, TensorBoard scalars once per iteration, the
``[INFO] Logging experiment in directory`` line, a non-zero exit on failure) on a laptop
with no GPU and no Isaac Sim. One file, top to bottom: settings and flags, then the loop.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Tuned PPO settings for CartPole-v1 (after rl-baselines3-zoo); they solve it well within 100k steps.
DEFAULT_AGENT: dict[str, Any] = {
    "learning_rate": 1e-3,
    "n_steps": 32,
    "batch_size": 256,
    "n_epochs": 20,
    "gamma": 0.98,
    "gae_lambda": 0.8,
    "clip_range": 0.2,
    "ent_coef": 0.0,
    "vf_coef": 0.5,
    "max_grad_norm": 0.5,
}

# TensorBoard tags, named like rsl_rl's so that configs read the same for both trainers.
MEAN_RETURN_TAG = "Train/mean_reward"
EPISODE_LENGTH_TAG = "Train/mean_episode_length"
ENV_STEPS_TAG = "Train/env_steps"
FPS_TAG = "Perf/total_fps"


class OverrideError(ValueError):
    """An override the trainer cannot apply; the message names the key and the valid keys."""


@dataclass(frozen=True, kw_only=True)
class TrainerSettings:
    """The trainer's settings; the flags below take their defaults from here."""

    num_envs: int = 8
    seed: int = 42
    max_iterations: int = 200
    log_dir: Path = Path("logs/cartpole")
    torch_threads: int = 1
    device: str = "cpu"
    checkpoint_interval: int = 0
    checkpoint: Path | None = None
    agent: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_AGENT))


def _parse_value(key: str, text: str, default: Any) -> Any:
    kind = type(default)
    try:
        if kind is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        if kind is int:
            return int(text)
        value = kind(text)
        if kind is float and not math.isfinite(value):
            raise ValueError(text)
        return value
    except ValueError:
        raise OverrideError(f"override agent.{key}={text}: expected a finite {kind.__name__}") from None


def apply_overrides(agent: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply Hydra-style ``agent.KEY=VALUE`` overrides to a copy of ``agent``."""
    result = dict(agent)
    valid = ", ".join(f"agent.{key}" for key in agent)
    for override in overrides:
        path, sep, text = override.partition("=")
        key = path.removeprefix("agent.")
        if not sep or not path.startswith("agent.") or key not in agent:
            raise OverrideError(f"unknown override {override!r}; valid keys: {valid}")
        result[key] = _parse_value(key, text, agent[key])
    for key in ("n_steps", "batch_size", "n_epochs"):
        if result[key] < 1:
            raise OverrideError(f"override agent.{key}={result[key]}: must be at least 1")
    if result["learning_rate"] <= 0:
        raise OverrideError(f"override agent.learning_rate={result['learning_rate']}: must be positive")
    return result


def parse_args(argv: list[str]) -> TrainerSettings:
    defaults = TrainerSettings()
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--num_envs", type=int, default=defaults.num_envs, help="parallel CartPole environments")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the environments and the policy")
    parser.add_argument(
        "--max_iterations", type=int, default=defaults.max_iterations, help="PPO iterations (rollout + update)"
    )
    parser.add_argument("--log_dir", type=Path, default=defaults.log_dir, help="TensorBoard directory")
    parser.add_argument("--torch_threads", type=int, default=defaults.torch_threads, help="CPU threads for torch")
    parser.add_argument("--device", default=defaults.device, help="torch device: cpu, cuda, cuda:1, auto")
    parser.add_argument(
        "--checkpoint_interval",
        type=int,
        default=defaults.checkpoint_interval,
        help="save a checkpoint every K iterations (and always at the end); 0: only at the end",
    )
    parser.add_argument("--checkpoint", type=Path, help="resume from this checkpoint (as Isaac Lab's --checkpoint)")
    parser.add_argument("overrides", nargs="*", help="Hydra-style overrides, e.g. agent.learning_rate=3e-4")
    args = parser.parse_intermixed_args(argv)  # overrides may stand between flags, as Hydra allows
    if args.num_envs < 1 or args.max_iterations < 1:
        parser.error("--num_envs and --max_iterations must be at least 1")
    if args.checkpoint_interval < 0:
        parser.error(f"--checkpoint_interval {args.checkpoint_interval}: must not be negative")
    import torch

    try:
        torch.device(args.device if args.device != "auto" else "cpu")
    except RuntimeError:
        parser.error(f"--device {args.device!r}: not a torch device (cpu, cuda, cuda:1, auto)")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        parser.error(f"--checkpoint {args.checkpoint}: no such file")
    try:
        agent = apply_overrides(DEFAULT_AGENT, args.overrides)
    except OverrideError as error:
        parser.exit(2, f"train_cartpole.py: error: {error}\n")
    return TrainerSettings(
        num_envs=args.num_envs,
        seed=args.seed,
        max_iterations=args.max_iterations,
        log_dir=args.log_dir,
        torch_threads=args.torch_threads,
        device=args.device,
        checkpoint_interval=args.checkpoint_interval,
        checkpoint=args.checkpoint,
        agent=agent,
    )


CHECKPOINT_PATTERN = "checkpoint_*.zip"


def checkpoint_path(log_dir: Path, iterations_done: int) -> Path:
    return log_dir / f"checkpoint_{iterations_done:06d}.zip"


def iterations_in(checkpoint: Path) -> int:
    """Iterations already trained in a checkpoint, from its name (checkpoint_000040.zip: 40)."""
    try:
        return int(checkpoint.stem.rsplit("_", 1)[1])
    except (IndexError, ValueError):
        raise ValueError(f"{checkpoint}: not a checkpoint of this trainer (expected {CHECKPOINT_PATTERN})") from None


def train(settings: TrainerSettings) -> float:
    """Train and return the final mean episode return."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import Logger
    from torch.utils.tensorboard import SummaryWriter

    torch.set_num_threads(settings.torch_threads)
    log_dir = settings.log_dir.resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"[INFO] Logging experiment in directory: {log_dir}", flush=True)
    devices = os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)")
    print(f"[INFO] Training on {settings.device} (CUDA_VISIBLE_DEVICES={devices})", flush=True)

    env = make_vec_env("CartPole-v1", n_envs=settings.num_envs, seed=settings.seed)
    first_iteration = 0
    if settings.checkpoint is not None:
        first_iteration = iterations_in(settings.checkpoint)
        # The overrides given now win over the checkpoint's (population-based training perturbs them).
        model = PPO.load(settings.checkpoint, env=env, device=settings.device, **settings.agent)
        print(
            f"[INFO] Resuming from checkpoint {settings.checkpoint} after {first_iteration} iterations "
            f"({model.num_timesteps} env steps)",
            flush=True,
        )
    else:
        model = PPO("MlpPolicy", env, seed=settings.seed, device=settings.device, verbose=0, **settings.agent)
    # Our scalars go through our writer; without a logger of its own, SB3 makes a new empty
    # /tmp/SB3-<time> folder at every learn() call, that is every iteration.
    model.set_logger(Logger(folder=None, output_formats=[]))
    steps_per_iteration = settings.agent["n_steps"] * settings.num_envs
    writer = SummaryWriter(log_dir=str(log_dir))
    mean_return = float("nan")

    def save(iterations_done: int) -> None:
        # Written under a temporary name and renamed, so a reader never finds half a checkpoint.
        final = checkpoint_path(log_dir, iterations_done)
        partial = final.with_name(f".{final.stem}.partial.zip")
        model.save(partial)
        os.replace(partial, final)

    try:
        for iteration in range(first_iteration, settings.max_iterations):
            started = time.perf_counter()
            model.learn(total_timesteps=steps_per_iteration, reset_num_timesteps=False)
            elapsed = time.perf_counter() - started
            done = iteration + 1
            # The checkpoint comes before the iteration's scalars: whoever sees them can rely on it.
            if done == settings.max_iterations or (
                settings.checkpoint_interval and done % settings.checkpoint_interval == 0
            ):
                save(done)
            episodes = list(model.ep_info_buffer)
            writer.add_scalar(ENV_STEPS_TAG, model.num_timesteps, iteration)
            writer.add_scalar(FPS_TAG, steps_per_iteration / elapsed, iteration)
            if episodes:
                mean_return = sum(ep["r"] for ep in episodes) / len(episodes)
                writer.add_scalar(EPISODE_LENGTH_TAG, sum(ep["l"] for ep in episodes) / len(episodes), iteration)
                writer.add_scalar(MEAN_RETURN_TAG, mean_return, iteration)
            writer.flush()
            print(
                f"iteration {done}/{settings.max_iterations}  steps {model.num_timesteps}"
                f"  mean return {mean_return:.1f}",
                flush=True,
            )
        model.save(log_dir / "model.zip")
    finally:
        writer.close()
        env.close()
    return mean_return


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(sys.argv[1:] if argv is None else argv)
    train(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
