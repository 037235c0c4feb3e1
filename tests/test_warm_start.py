"""Warm trainer slots: trainers forked from a slot that has imported Isaac Lab 3 give exactly what fresh
processes give (every scalar, every checkpoint tensor), and each stays a process of its own.

The trainer is the real ``isaaclab train`` (rsl_rl, Newton on the CPU) from ``.venv-isaaclab``; the
slot runs in that interpreter, as a sweep's trial actor starts it.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

import psutil
import pytest
import torch
from conftest import PROJECT_ROOT, wait_for, wait_until_none
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ray_workflow.process_groups import live_members
from ray_workflow.sweeps.sweep import load_sweep
from ray_workflow.sweeps.training_command import WARM_START_LINE, TrainingProcess, WarmCacheLock
from ray_workflow.sweeps.warm_slot import SlotUnavailable, WarmSlot, script_of

ISAACLAB_VENV = PROJECT_ROOT / ".venv-isaaclab"
CONFIG = PROJECT_ROOT / "hyper_parameter_tuning" / "config" / "isaaclab3_cartpole.py"
# Timing scalars differ between any two runs, fresh or warm; everything else must be equal.
TIMING = ("Perf/", "/time")


def isaaclab_installed() -> bool:
    return (ISAACLAB_VENV / ".installed").exists()


def train_argv(run_name: str, *extra: str, iterations: int = 3, num_envs: int = 32) -> list[str]:
    return [
        str(ISAACLAB_VENV / "bin" / "isaaclab"),
        "train",
        "--rl_library",
        "rsl_rl",
        "--task",
        "Isaac-Cartpole-Direct",
        "--device",
        "cpu",
        "--num_envs",
        str(num_envs),
        "--max_iterations",
        str(iterations),
        "presets=newton_mjwarp",
        "agent.device=cpu",
        "agent.save_interval=1",
        "--seed",
        "7",
        "--run_timestamp",
        run_name,
        *extra,
    ]


def run(argv: list[str], cwd: Path, slot: WarmSlot | None, timeout_s: float = 600) -> tuple[int, TrainingProcess]:
    env = {"ISAACSIM_ASSET_ROOT": str(ISAACLAB_VENV / "assets")}
    process = TrainingProcess(argv, cwd / f"{argv[argv.index('--run_timestamp') + 1]}.log", cwd=str(cwd), env=env,
                              slot=slot)  # fmt: skip
    wait_for(lambda: process.poll() is not None, timeout_s, f"{argv[-1]} to end")
    return process.poll(), process


def contents(run_dir: Path) -> tuple[dict, dict]:
    """Every non-timing scalar (tag: [(step, value)]) and every checkpoint's tensors of a run."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    scalars = {
        tag: [(event.step, event.value) for event in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
        if not any(part in tag for part in TIMING)
    }
    checkpoints = {path.name: torch.load(path, map_location="cpu") for path in sorted(run_dir.glob("model_*.pt"))}
    return scalars, checkpoints


def identical(left, right) -> bool:
    if isinstance(left, torch.Tensor):
        return isinstance(right, torch.Tensor) and left.dtype == right.dtype and torch.equal(left, right)
    if isinstance(left, dict):
        return (
            isinstance(right, dict) and left.keys() == right.keys() and all(identical(left[k], right[k]) for k in left)
        )
    if isinstance(left, (list, tuple)):
        return len(left) == len(right) and all(identical(a, b) for a, b in zip(left, right, strict=True))
    return left == right


def assert_same_run(cwd: Path, fresh: str, warm: str) -> None:
    runs = cwd / "logs" / "rsl_rl" / "cartpole_direct"
    (fresh_scalars, fresh_models), (warm_scalars, warm_models) = contents(runs / fresh), contents(runs / warm)
    assert "Train/mean_reward" in fresh_scalars and len(fresh_models) == 3, (fresh_scalars.keys(), fresh_models.keys())
    assert warm_scalars == fresh_scalars, f"{warm}: scalars differ from the fresh {fresh}"
    assert identical(warm_models, fresh_models), f"{warm}: checkpoints differ from the fresh {fresh}"


@pytest.mark.skipif(not isaaclab_installed(), reason="Isaac Lab 3 is not installed: run `make isaaclab`")
def test_warm_trainers_match_fresh_ones_bit_for_bit_through_crashes_stops_and_deterministic_runs(tmp_path):
    if os.environ.get("CI"):
        assert isaaclab_installed()
    imports = load_sweep(CONFIG).job.warm_imports
    env = {**os.environ, "ISAACSIM_ASSET_ROOT": str(ISAACLAB_VENV / "assets")}
    interpreter, _ = script_of(train_argv("x"), env)
    assert interpreter == str(ISAACLAB_VENV / "bin" / "python")

    assert run(train_argv("fresh"), tmp_path, None)[0] == 0
    assert run(train_argv("fresh_deterministic", "--deterministic"), tmp_path, None)[0] == 0
    slot = WarmSlot(interpreter, imports, str(tmp_path), env)
    try:
        assert slot.ready(timeout_s=300) and slot.missing == []
        # Isaac Lab's imports call warp.init(), which opens the CUDA driver on a GPU node; a forked trainer could
        # not use it. The slot defers Warp's runtime to each trainer: its native library is not loaded in the slot.
        assert "/warp.so" not in Path(f"/proc/{slot.process.pid}/maps").read_text()
        code, first = run(train_argv("warm"), tmp_path, slot)
        assert code == 0 and first.warm, first.tail()
        assert first.output_path.read_text().startswith(WARM_START_LINE)
        assert first.pgid != slot.process.pid and os.getpgid(slot.process.pid) == slot.process.pid
        assert_same_run(tmp_path, "fresh", "warm")

        # A trial that crashes (Hydra refuses its override) ends with its own exit code, as a fresh one does.
        code, crashed = run(train_argv("crash", "agent.algorithm.no_such_key=1"), tmp_path, slot)
        assert code != 0 and "no_such_key" in crashed.tail()

        # A trial stopped mid-training (ASHA, a timeout): its whole process group ends, the slot stays.
        long = TrainingProcess(train_argv("stopped", iterations=1000, num_envs=16), tmp_path / "stopped.log",
                               cwd=str(tmp_path), env={"ISAACSIM_ASSET_ROOT": env["ISAACSIM_ASSET_ROOT"]},
                               slot=slot)  # fmt: skip
        wait_for(lambda: "Learning iteration 1/" in (tmp_path / "stopped.log").read_text(errors="replace"), 300,
                 "the long trial to train")  # fmt: skip
        # ps shows the trainer's own command line, as it would a fresh trainer's, not the slot's.
        shown = psutil.Process(long.pgid).cmdline()
        assert shown[: len(long.argv) + 1] == [interpreter, *long.argv], shown[:20]
        long.stop()
        assert long.poll() is not None and live_members(long.pgid) == []
        assert slot.alive()

        # --deterministic changes process-wide torch and Warp settings: the next fork never sees them.
        code, _ = run(train_argv("warm_deterministic", "--deterministic"), tmp_path, slot)
        assert code == 0
        assert_same_run(tmp_path, "fresh_deterministic", "warm_deterministic")
        code, _ = run(train_argv("warm_again"), tmp_path, slot)
        assert code == 0
        assert_same_run(tmp_path, "fresh", "warm_again")
    finally:
        slot.close()


def test_a_slots_trainers_die_with_it_and_a_slot_that_cannot_start_says_why(tmp_path):
    """The slot dies with its trial actor; its trainers die with the slot (the cheap trainer: the .venv's)."""
    env = {**os.environ}
    slot = WarmSlot(sys.executable, ["json"], str(tmp_path), env)
    try:
        argv = [sys.executable, str(PROJECT_ROOT / "tests" / "scripted_trainer.py"), "--log_dir", str(tmp_path / "tb"),
                "--iterations", "100000", "--seconds_per_iteration", "0.1"]  # fmt: skip
        trainer = TrainingProcess(argv, tmp_path / "out.log", slot=slot)
        wait_for(lambda: live_members(trainer.pgid), 60, "the trainer to start")
        assert os.getsid(trainer.pgid) == trainer.pgid, "a session and process group of its own"
    finally:
        slot.close()
    assert wait_until_none(lambda: live_members(trainer.pgid), 30) == []
    assert trainer.poll() is not None

    with pytest.raises(SlotUnavailable, match="cannot serve trials: it exited with code 1"):
        WarmSlot("/bin/false", [], str(tmp_path), env).ready(timeout_s=60)


def test_a_slot_that_hangs_up_is_unavailable_at_once_even_before_it_is_reaped(tmp_path):
    """A slot that closes its socket and lingers a moment before it exits (as a dying interpreter can) is not taken
    for one still importing: ``ready`` says so at once, with how it ended, instead of after ``READY_TIMEOUT_S``."""
    lingering = tmp_path / "lingering_slot"
    program = "import os, sys, time; os.close(int(sys.argv[2])); time.sleep(2); sys.exit(3)"
    lingering.write_text(f'#!/bin/sh\nexec {sys.executable} -c "{program}" "$@"\n')
    lingering.chmod(0o755)
    slot = WarmSlot(str(lingering), [], str(tmp_path), dict(os.environ))
    with pytest.raises(SlotUnavailable, match="cannot serve trials: it exited with code 3"):
        slot.ready(timeout_s=60)


def lock_is_free(cache: Path) -> bool:
    with open(cache / ".isaaclab_ray_warm.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(lock, fcntl.LOCK_UN)
        return True


def test_a_warp_cache_that_already_holds_compiled_kernels_lets_every_trial_start_at_once(tmp_path):
    """Warp's own cache, as a plain ``isaaclab train`` on the node leaves it: no trial waits for another."""
    cache = tmp_path / "warp"
    module = cache / "1.17.0" / "wp_cartpole_kernels_0123abcd"
    module.mkdir(parents=True)
    cold = WarmCacheLock(str(cache), ["isaaclab", "train"])
    assert not lock_is_free(cache), "no kernels yet: the first trial compiles alone"
    cold.release()
    (module / "wp_cartpole_kernels_0123abcd.cpu1234.o").write_bytes(b"\x7fELF")
    warm = WarmCacheLock(str(cache), ["isaaclab", "train"])
    assert lock_is_free(cache)
    warm.release()


@pytest.mark.parametrize("end", ["return", "exit_3", "exit_message", "raise", "interrupt"])
def test_a_warm_trainer_ends_as_a_fresh_interpreter_does_files_flushed_handlers_run_same_status(tmp_path, end):
    """A warm trainer skips the interpreter's teardown (seconds for Isaac Lab) but nothing a program leaves to its
    exit: buffered files, ``atexit`` handlers, non-daemon threads, its output and its exit status."""
    slot = WarmSlot(sys.executable, ["json"], str(tmp_path), dict(os.environ))
    try:
        ended = {}
        for how, trainer_slot in (("fresh", None), ("warm", slot)):
            out = tmp_path / how
            out.mkdir()
            argv = [sys.executable, str(PROJECT_ROOT / "tests" / "ending_probe.py"), "--out", str(out), "--end", end]
            trainer = TrainingProcess(argv, tmp_path / f"{how}.log", slot=trainer_slot)
            wait_for(lambda trainer=trainer: trainer.poll() is not None, 60, f"the {how} trainer to end")
            assert live_members(trainer.pgid) == []
            output = trainer.output_path.read_text().removeprefix(WARM_START_LINE).splitlines()
            ended[how] = (
                trainer.poll(),
                {path.name: path.read_text() for path in sorted(out.iterdir())},
                [line for line in output if "stdout line" in line or "Error" in line or "message" in line],
            )
        assert ended["warm"] == ended["fresh"]
        assert len(ended["fresh"][1]) == 3, ended["fresh"]
    finally:
        slot.close()
