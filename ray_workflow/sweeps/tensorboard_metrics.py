"""Incremental reading of TensorBoard scalars: each poll reads only the bytes written since the last.

Isaac Lab trainers (rl_games, rsl_rl, skrl) report progress only through TensorBoard event
files, so this is how training metrics reach Ray Tune. Reading is done with TensorBoard's
own ``EventFileLoader``, which keeps each file open at its offset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util import tensor_util

EVENT_FILE_GLOB = "events.out.tfevents.*"


@dataclass
class MetricRow:
    """All scalars written for one training iteration (one TensorBoard step), and when the trainer wrote them."""

    step: int
    values: dict[str, float] = field(default_factory=dict)
    wall_time: float = 0.0


def event_files(log_dir: Path) -> frozenset[Path]:
    """The event files under ``log_dir`` now."""
    return frozenset(log_dir.rglob(EVENT_FILE_GLOB)) if log_dir.is_dir() else frozenset()


class ScalarReader:
    """Follows every event file under a log directory and groups new scalars by step.

    ``ignore`` names files that belong to an earlier process (a trainer restarted from a
    checkpoint in the same directory). The directory is one run's own: a root that several
    runs share (Isaac Lab's ``logs/<library>/<experiment>``) is never read as a whole.
    """

    def __init__(self, log_dir: Path | str, ignore: frozenset[Path] = frozenset()) -> None:
        self.log_dir = Path(log_dir)
        self.ignore = ignore
        self._loaders: dict[Path, EventFileLoader] = {}
        self._pending: dict[int, MetricRow] = {}

    def _discover(self) -> None:
        if not self.log_dir.is_dir():
            return
        for path in event_files(self.log_dir):
            if path in self._loaders or path in self.ignore:
                continue
            self._loaders[path] = EventFileLoader(str(path))

    def _read_new_scalars(self) -> None:
        for loader in self._loaders.values():
            for event in loader.Load():
                if not event.HasField("summary"):
                    continue
                for value in event.summary.value:
                    if value.metadata.plugin_data.plugin_name != "scalars":
                        continue
                    row = self._pending.setdefault(event.step, MetricRow(event.step))
                    row.values[value.tag] = float(tensor_util.make_ndarray(value.tensor).item())
                    row.wall_time = max(row.wall_time, event.wall_time)

    def poll(self, required_tag: str | None = None, final: bool = False) -> list[MetricRow]:
        """Return the iterations that are complete, oldest first.

        An iteration is complete once a later step has been written, or once it holds
        ``required_tag`` (a trainer flushes one iteration's scalars together), or when
        ``final`` says that the writer has exited.
        """
        self._discover()
        self._read_new_scalars()
        if not self._pending:
            return []
        newest = max(self._pending)
        ready = []
        for step in sorted(self._pending):
            row = self._pending[step]
            if step < newest or final or (required_tag is not None and required_tag in row.values):
                ready.append(self._pending.pop(step))
        return ready
