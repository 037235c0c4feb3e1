"""The Ray Tune trainable that runs one training command and reports its TensorBoard metrics.

One Tune result per training iteration, read incrementally from the trainer's event files,
so schedulers such as ASHA act on training progress. The trainer's process group is ended
whenever Tune lets go of the trial: finished, stopped early, errored or timed out.

Checkpoints are the trainer's own files: ``save_checkpoint`` hands Tune the newest one and
``load_checkpoint`` restarts the trainer from it, which is how retries after a lost node,
resumed sweeps and population-based training continue instead of starting over.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow.fs
import ray
from ray import tune

from ray_workflow.errors import WorldError
from ray_workflow.sweeps.tensorboard_metrics import ScalarReader, event_files
from ray_workflow.sweeps.training_command import TrainingJob, TrainingProcess, WarmCacheLock
from ray_workflow.sweeps.warm_slot import READY_TIMEOUT_S, SlotUnavailable, WarmSlot, script_of

logger = logging.getLogger(__name__)
OUTPUT_LOG = "training_output.log"  # the trainer's whole output, in the trial's folder

POLL_INTERVAL_S = 0.05
# Set in the last result of a trial whose trainer ran to the end (not stopped by the scheduler).
TRAINING_FINISHED = "training_finished"
CHECKPOINT_INDEX = "trainer_checkpoint.json"


def trial_number(trial_id: str) -> int:
    """A number for Isaac Lab's ``--ray-proc-id`` that traces a trainer to its trial.

    Tune's variant generator names trials ``<experiment>_00003`` (the number is 3); searchers
    name them with hex digits (their value).
    """
    tail = trial_id.rsplit("_", 1)[-1]
    if tail.isdigit():
        return int(tail)
    try:
        return int(tail, 16)
    except ValueError:
        return 0


class TrainingFailed(WorldError, RuntimeError):
    """The training command exited non-zero or stopped writing metrics."""


class CommandTrainable(tune.Trainable):
    """Runs ``job`` with the trial's hyperparameters as overrides; each ``step`` is one iteration.

    The trainer starts at the first ``step``, not in ``setup``: Tune may first hand the
    trial a checkpoint (retry, resume, PBT exploit), and an Isaac Sim start is too costly
    to throw away.
    """

    def setup(
        self,
        config: dict[str, Any],
        job: TrainingJob,
        metric: str,
        trial_timeout_s: float,
        max_iterations: int,
        warm_start: bool = True,
    ) -> None:
        self.job = job
        # A warm slot serves every trial this actor runs (Tune reuses actors), or none if it cannot start.
        self.warm_start = warm_start and bool(job.warm_imports)
        self.slot: WarmSlot | None = None
        self.metric = metric
        self.trial_timeout_s = trial_timeout_s
        self.max_iterations = max_iterations
        self.process: TrainingProcess | None = None
        self.warm_cache_lock: WarmCacheLock | None = None
        # Every result names the Ray node that ran it: which machine a trial trained on, in result.json.
        self.node_id = ray.get_runtime_context().get_node_id()
        self._prepare(config)

    def _prepare(self, config: dict[str, Any]) -> None:
        """Forget the previous trainer (ending its process group if it still runs) and await ``config``'s."""
        self._end_trainer()
        self.trial_config = config
        self.process = None
        self.resume_from: Path | None = None
        self.reader: ScalarReader | None = None
        self.queue: list[tuple[dict[str, Any], float]] = []  # each result, and when the trainer logged it
        self.last_result: dict[str, Any] | None = None
        self.last_logged_at: float | None = None
        self.outputs_persisted = False

    @property
    def assigned_log_dir(self) -> Path | None:
        """The log directory we give the trainer, if the job takes one (``log_dir_flag``)."""
        return Path(self.logdir) / "tensorboard" if self.job.log_dir_flag else None

    @property
    def trainer_log_dir(self) -> Path | None:
        """The trainer's log directory: set by us up front, or as the trainer announced it."""
        if self.job.log_dir_flag:
            return self.assigned_log_dir
        return self.process.reported_log_dir if self.process is not None else None

    def _run_name(self) -> str | None:
        """A run folder name no other trial or attempt can have: Isaac Lab names folders by the second."""
        if not self.job.run_name_args:
            return None
        return f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{self.trial_id}_{secrets.token_hex(3)}"

    def _start(self) -> TrainingProcess:
        log_dir = self.assigned_log_dir
        earlier_files = event_files(log_dir) if log_dir else frozenset()
        run_name = self._run_name()
        argv = self.job.argv(self.trial_config, log_dir, self.resume_from, run_name, trial_number(self.trial_id))
        if self.job.warm_cache_dir:
            self.warm_cache_lock = WarmCacheLock(self.job.warm_cache_dir, [*self.job.command, *self.job.env.values()])
        output = Path(self.logdir) / OUTPUT_LOG
        self._continue_output(output)
        self.process = TrainingProcess(
            argv,
            output,
            cwd=self.job.cwd,
            env=self.job.env,
            run_name=run_name,
            slot=self._slot_for(argv),
        )
        if log_dir is not None:
            self.reader = ScalarReader(log_dir, ignore=earlier_files)
        self.last_progress = time.monotonic()
        return self.process

    def _continue_output(self, output: Path) -> None:
        """A trial that goes on on another node, or in a new cluster, has no output there yet: fetch what its
        storage folder holds first, so that the trainer's lines add to the trial's log instead of replacing it
        when the folder is written back."""
        if output.exists() or self._storage is None:
            return
        source, filesystem = f"{self._storage.trial_fs_path}/{OUTPUT_LOG}", self._storage.storage_filesystem
        try:
            if filesystem.get_file_info(source).type == pyarrow.fs.FileType.File:
                output.parent.mkdir(parents=True, exist_ok=True)
                pyarrow.fs.copy_files(source, str(output), source_filesystem=filesystem)
        except OSError as error:
            logger.warning("could not fetch the trial's earlier output from %s (%s); it starts anew", source, error)

    def _slot_for(self, argv: list[str]) -> WarmSlot | None:
        """This actor's warm slot for ``argv``, or None if it cannot serve (the trainer starts fresh). The actor's
        first trial waits for the slot's imports: they take about as long as a fresh trainer's own start, and
        both at once would import everything twice, each slowing the other on a busy node."""
        if not self.warm_start:
            return None
        environment = {**os.environ, **self.job.env}
        script = script_of(argv, environment)
        if script is None:
            logger.warning("%s is not a Python program a warm slot can start; trials start fresh", argv[0])
            self.warm_start = False
            return None
        if self.slot is not None and (self.slot.interpreter != script[0] or not self.slot.alive()):
            self.slot.close()
            self.slot = None
        try:
            if self.slot is None:
                self.slot = WarmSlot(script[0], self.job.warm_imports, self.job.cwd, environment)
            self.slot.ready(READY_TIMEOUT_S)
        except SlotUnavailable as error:
            logger.warning("%s; trials start fresh", error)
            self.warm_start = False
            self.slot = None
            return None
        for problem in self.slot.missing:
            logger.warning("the warm slot could not import %s", problem)
        self.slot.missing = []  # said once
        return self.slot

    def _reader(self) -> ScalarReader | None:
        if self.reader is None and self.process is not None and (run_dir := self.process.reported_log_dir):
            self.reader = ScalarReader(run_dir)
        return self.reader

    def _collect(self, final: bool) -> None:
        """Queue one result per new iteration that has the metric.

        Any new scalar counts as progress (rl_games writes no reward before an episode ends);
        a step at or below the last one reported is not a new iteration (rsl_rl logs the
        checkpoint's iteration again after resuming from it).
        """
        reader = self._reader()
        if reader is None:
            return
        for row in reader.poll(required_tag=self.metric, final=final):
            self.last_progress = time.monotonic()
            if self.warm_cache_lock is not None:
                self.warm_cache_lock.warmed()
            last = self.queue[-1][0] if self.queue else self.last_result
            if self.metric in row.values and (last is None or row.step > last["iteration"]):
                self.queue.append(({**row.values, "iteration": row.step, "node_id": self.node_id}, row.wall_time))

    def step(self) -> dict[str, Any]:
        process = self.process or self._start()
        if (exit_code := self._wait_for_result(process)) is not None:
            return self._finish(exit_code)
        self.last_result, self.last_logged_at = self.queue.pop(0)
        if self.iteration + 1 < self.max_iterations:
            return self.last_result
        # The sweep's last iteration: let the trainer save and exit, unless it trains on (a
        # trainer resumed from a checkpoint may run its full length again, as rsl_rl does).
        if not self.queue and (exit_code := self._wait_for_result(process)) is not None:
            return self._finish(exit_code)
        self._end_trainer()
        self._persist_outputs()
        return {**self.last_result, TRAINING_FINISHED: True, tune.result.DONE: True}

    def _wait_for_result(self, process: TrainingProcess) -> int | None:
        """Poll until a result is queued (None) or the trainer exits (its exit code)."""
        while not self.queue:
            exit_code = process.poll()
            self._collect(final=exit_code is not None)
            if self.queue:
                break
            if exit_code is not None:
                self._end_trainer()
                return exit_code
            if time.monotonic() - self.last_progress > self.trial_timeout_s:
                self._end_trainer()
                self._persist_outputs()
                raise TrainingFailed(
                    f"no new '{self.metric}' for {self.trial_timeout_s:g} s; training process group "
                    f"{process.pgid} killed. Last output:\n{process.tail()}"
                )
            time.sleep(POLL_INTERVAL_S)
        return None

    def _finish(self, exit_code: int) -> dict[str, Any]:
        assert self.process is not None
        self._persist_outputs()
        if exit_code != 0:
            raise TrainingFailed(
                f"training command exited with code {exit_code}: {' '.join(self.process.argv)}\n"
                f"Last output:\n{self.process.tail()}"
            )
        if self.last_result is None:
            raise TrainingFailed(
                f"training command exited with code 0 but never wrote '{self.metric}'"
                f"{self._where_metrics_were_sought()}.\nLast output:\n{self.process.tail()}"
            )
        return {**self.last_result, TRAINING_FINISHED: True, tune.result.DONE: True}

    def _where_metrics_were_sought(self) -> str:
        assert self.process is not None
        if self.job.log_dir_flag:
            return f" under {self.assigned_log_dir}"
        if self.process.log_root is None:
            return " (it never printed '[INFO] Logging experiment in directory: ...')"
        if self.process.reported_log_dir is None:
            which = f"named after {self.process.run_name!r}" if self.process.run_name else "it announced"
            return f" (no run folder {which} under {self.process.log_root})"
        return f" under {self.process.reported_log_dir}"

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        """Copy the trainer's newest checkpoint that is not ahead of the reported results into Tune's folder.

        A trainer runs ahead of its results (TensorBoard flushes late): a checkpoint it saved after
        logging the last reported iteration may hold iterations Tune never saw, and resuming from it
        would leave them out for good. One saved before that is safe: the trainer resumes at or before
        the next iteration Tune expects, and iterations it logs again are dropped.
        """
        # Before this trainer's first result, every file it saved is ahead: keep the one it resumed from.
        saved = None if self.last_logged_at is None else self._newest_trainer_checkpoint(saved_by=self.last_logged_at)
        newest = saved or self.resume_from
        # The last result goes along: a trial restored at its last iteration has nothing left
        # to train, and finishes with this result.
        index = {"file": newest.name if newest else None, "last_result": self.last_result}
        if newest is not None:
            shutil.copy2(newest, Path(checkpoint_dir) / newest.name)
        (Path(checkpoint_dir) / CHECKPOINT_INDEX).write_text(json.dumps(index))

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        """Restart the trainer from the checkpoint (kept in the trial folder: Tune may delete its copy)."""
        index = json.loads((Path(checkpoint_dir) / CHECKPOINT_INDEX).read_text())
        self._prepare(self.trial_config)
        self.last_result = index["last_result"]
        if index["file"] is None:
            return
        kept = Path(self.logdir) / "resume" / index["file"]
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(checkpoint_dir) / index["file"], kept)
        self.resume_from = kept

    def _newest_trainer_checkpoint(self, saved_by: float) -> Path | None:
        """The trainer's newest checkpoint file of those saved by the time ``saved_by``."""
        log_dir = self.trainer_log_dir
        if self.job.checkpoints is None or log_dir is None or not log_dir.is_dir():
            return None
        files = [path for path in log_dir.glob(self.job.checkpoints.pattern) if path.is_file()]
        eligible = [(mtime, path.name, path) for path in files if (mtime := path.stat().st_mtime) <= saved_by]
        return max(eligible)[2] if eligible else None

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Run the next trial in this same actor (``reuse_actors``): saves starting a Ray worker per trial.

        Tune calls this when it hands the actor a new trial (or, with PBT, new hyperparameters
        before a checkpoint); the previous trainer may still run if the scheduler stopped it
        early, so its group is ended first. Tune has already pointed ``logdir`` at the trial.
        """
        self._prepare(new_config)
        return True

    def _persist_outputs(self) -> None:
        """Copy the trainer's output and event files to the storage path, once the trainer has ended.

        Tune copies a trial's working directory only every few minutes, and Ray deletes it
        with the session; the trainer's last lines and files must not be lost with it.
        """
        if self._storage is not None and not self.outputs_persisted:
            self._storage.persist_artifacts(force=True)
            self.outputs_persisted = True

    def _end_trainer(self) -> None:
        """End the trainer's process group (if it still runs) and let other trials start theirs."""
        if self.process is not None:
            self.process.stop()
        if self.warm_cache_lock is not None:
            self.warm_cache_lock.release()
            self.warm_cache_lock = None

    def cleanup(self) -> None:
        self._end_trainer()
        if self.slot is not None:
            self.slot.close()
            self.slot = None
        self._persist_outputs()
