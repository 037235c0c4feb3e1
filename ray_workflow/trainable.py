"""The Ray Tune trainable that runs one training command and reports its TensorBoard metrics.

One Tune result per training iteration, read incrementally from the trainer's event files,
so schedulers such as ASHA act on training progress. The trainer's process group is ended
whenever Tune lets go of the trial: finished, stopped early, errored or timed out.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ray import tune

from ray_workflow.tensorboard_metrics import ScalarReader
from ray_workflow.training_command import TrainingJob, TrainingProcess

POLL_INTERVAL_S = 0.05
# Set in the last result of a trial whose trainer ran to the end (not stopped by the scheduler).
TRAINING_FINISHED = "training_finished"


class TrainingFailed(RuntimeError):
    """The training command exited non-zero or stopped writing metrics."""


class CommandTrainable(tune.Trainable):
    """Runs ``job`` with the trial's hyperparameters as overrides; each ``step`` is one iteration."""

    def setup(self, config: dict[str, Any], job: TrainingJob, metric: str, trial_timeout_s: float) -> None:
        self.job = job
        self.metric = metric
        self.trial_timeout_s = trial_timeout_s
        self._start(config)

    def _start(self, config: dict[str, Any]) -> None:
        trial_dir = Path(self.logdir)
        self.log_dir = trial_dir / "tensorboard" if self.job.log_dir_flag else None
        self.process = TrainingProcess(
            self.job.argv(config, self.log_dir), trial_dir / "training_output.log", cwd=self.job.cwd, env=self.job.env
        )
        self.reader: ScalarReader | None = ScalarReader(self.log_dir) if self.log_dir else None
        self.queue: list[dict[str, Any]] = []
        self.last_result: dict[str, Any] | None = None
        self.last_progress = time.monotonic()
        self.outputs_persisted = False

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Run the next trial in this same actor (``reuse_actors``): saves starting a Ray worker per trial.

        Tune calls this when it hands the actor a new trial; the previous trial's trainer may
        still run if the scheduler stopped it early, so its group is ended first. Tune has
        already pointed ``logdir`` at the new trial's directory.
        """
        self.process.stop()
        self._start(new_config)
        return True

    def _reader(self) -> ScalarReader | None:
        if self.reader is None and (announced := self.process.reported_log_dir) is not None:
            # Isaac Lab log roots hold earlier runs too: only files written by this trainer count.
            self.reader = ScalarReader(announced, min_mtime=self.process.started_at - 1)
        return self.reader

    def _collect(self, final: bool) -> None:
        reader = self._reader()
        if reader is None:
            return
        for row in reader.poll(required_tag=self.metric, final=final):
            if self.metric in row.values:
                self.queue.append({**row.values, "iteration": row.step})
                self.last_progress = time.monotonic()

    def step(self) -> dict[str, Any]:
        while not self.queue:
            exit_code = self.process.poll()
            self._collect(final=exit_code is not None)
            if self.queue:
                break
            if exit_code is not None:
                return self._finish(exit_code)
            if time.monotonic() - self.last_progress > self.trial_timeout_s:
                self.process.stop()
                self._persist_outputs()
                raise TrainingFailed(
                    f"no new '{self.metric}' for {self.trial_timeout_s:g} s; training process group "
                    f"{self.process.pgid} killed. Last output:\n{self.process.tail()}"
                )
            time.sleep(POLL_INTERVAL_S)
        self.last_result = self.queue.pop(0)
        return self.last_result

    def _finish(self, exit_code: int) -> dict[str, Any]:
        self._persist_outputs()
        if exit_code != 0:
            raise TrainingFailed(
                f"training command exited with code {exit_code}: {' '.join(self.process.argv)}\n"
                f"Last output:\n{self.process.tail()}"
            )
        if self.last_result is None:
            raise TrainingFailed(
                f"training command exited with code 0 but never wrote '{self.metric}'.\n"
                f"Last output:\n{self.process.tail()}"
            )
        return {**self.last_result, TRAINING_FINISHED: True, tune.result.DONE: True}

    def _persist_outputs(self) -> None:
        """Copy the trainer's output and event files to the storage path, once the trainer has ended.

        Tune copies a trial's working directory only every few minutes, and Ray deletes it
        with the session; the trainer's last lines and files must not be lost with it.
        """
        if self._storage is not None and not self.outputs_persisted:
            self._storage.persist_artifacts(force=True)
            self.outputs_persisted = True

    def cleanup(self) -> None:
        self.process.stop()
        self._persist_outputs()
