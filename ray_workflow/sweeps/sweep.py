"""What a sweep is (a training job, a search space, a metric) and how sweep configs are loaded.

A sweep config is a Python file, so that search spaces are written with Ray Tune's own
domains (``tune.loguniform``, ``tune.choice``, ...). It defines ``SWEEP = Sweep(...)``.
"""

from __future__ import annotations

import importlib.util
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ray import tune

from ray_workflow.errors import UserError
from ray_workflow.sweeps.training_command import TrainingJob

Mode = Literal["max", "min"]


class SweepConfigError(UserError, ValueError):
    """A sweep config that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Sweep:
    """A hyperparameter sweep over one training command.

    ``search_space`` maps override keys (``agent.learning_rate``) to Ray Tune domains or
    fixed values. ``max_iterations`` is the length of a full trial in training iterations
    (ASHA's ``max_t``); ``defaults`` are tuner flag values for this sweep, such as
    ``{"num_samples": 8}``, which the command line can still change.
    """

    name: str
    job: TrainingJob
    search_space: dict[str, Any]
    metric: str
    mode: Mode = "max"
    max_iterations: int = 100
    grace_period: int = 10
    defaults: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise SweepConfigError(f"Sweep {self.name!r}: mode {self.mode!r} must be 'max' or 'min'")
        if not self.search_space:
            raise SweepConfigError(f"Sweep {self.name!r}: search_space is empty")
        if not 1 <= self.grace_period <= self.max_iterations:
            raise SweepConfigError(
                f"Sweep {self.name!r}: grace_period {self.grace_period} must be between 1 "
                f"and max_iterations {self.max_iterations}"
            )

    def tunable_keys(self) -> list[str]:
        return [key for key, value in self.search_space.items() if _is_searched(value)]


def environment_int(name: str, default: int, minimum: int = 1) -> int:
    """A whole-number setting of a sweep config taken from the environment (``CARTPOLE_MAX_ITERATIONS``)."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise SweepConfigError(f"environment variable {name}={text!r}: expected a whole number") from None
    if value < minimum:
        raise SweepConfigError(f"environment variable {name}={text!r}: must be at least {minimum}")
    return value


def _is_searched(value: Any) -> bool:
    return isinstance(value, tune.search.sample.Domain) or (isinstance(value, dict) and "grid_search" in value)


def load_sweep(path: Path | str, attribute: str = "SWEEP") -> Sweep:
    """Import a sweep config file and return its ``SWEEP`` (or ``attribute``)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise SweepConfigError(f"{path}: sweep config file not found")
    spec = importlib.util.spec_from_file_location(f"sweep_config_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SweepConfigError as error:
        raise SweepConfigError(f"{path}: {error}") from None
    except SyntaxError as error:
        raise SweepConfigError(f"{path}:{error.lineno}: syntax error: {error.msg}") from None
    except Exception as error:  # any error in user code becomes one line naming its place
        # Name the line of the config that went wrong, not the line deep inside Ray that noticed.
        frames = traceback.extract_tb(error.__traceback__)
        in_config = [frame for frame in frames if Path(frame.filename) == path] or frames
        raise SweepConfigError(f"{path}:{in_config[-1].lineno}: {type(error).__name__}: {error}") from None
    sweep = getattr(module, attribute, None)
    if sweep is None:
        raise SweepConfigError(f"{path}: defines no {attribute} (expected {attribute} = Sweep(...))")
    if not isinstance(sweep, Sweep):
        raise SweepConfigError(f"{path}: {attribute} is a {type(sweep).__name__}, not a Sweep")
    return sweep
