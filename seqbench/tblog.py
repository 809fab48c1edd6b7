"""TensorBoard event files in a run's directory (`trainer.tensorboard=true`).

Why: a cluster sweep runs for hours, and people watch runs in the tool they already use.
With this on, `tensorboard --logdir runs/<preset>` shows every run of a sweep live (one
TensorBoard run per run directory) and compares them in the HParams tab, where each
run's experiment config is its hyperparameters.

Nothing is added to the step path: the rows a flush has already read to the host are
written as scalars by the metrics writer thread (seqbench.writer), in the same hand-over
as the Parquet files, and the event file is flushed then, so the view is as current as
metrics.parquet. TensorBoard is an optional extra (`pip install 'seqbench[tensorboard]'`);
validation refuses the setting without it.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

EXTRA = "pip install 'seqbench[tensorboard]'"
# metrics.parquet column -> TensorBoard tag
SCALARS = {"train_loss": "train/loss", "grad_norm_pre": "grad_norm/pre_clip",
           "grad_norm_post": "grad_norm/post_clip", "clipped": "clip/clipped",
           "lr": "train/lr"}


def available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardLog:
    """One run's event file: scalars per step, the validation metric per evaluation, and
    the experiment config as hparams (a session that ends when the run ends)."""

    def __init__(self, run_dir: Path, experiment_config: dict[str, Any], metric: str,
                 purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.val_tag = f"val/{metric}"
        # max_queue 10**6: events wait in memory until our flush, none is written early
        self.writer = SummaryWriter(log_dir=str(run_dir), max_queue=10**6, flush_secs=3600,
                                    purge_step=purge_step)
        self.hparams = {k: _hparam(v) for k, v in sorted(experiment_config.items())}
        exp, ssi, self._end = hparams(self.hparams, {self.val_tag: 0.0, "train/loss": 0.0})
        self.writer.file_writer.add_summary(exp)
        self.writer.file_writer.add_summary(ssi)
        self.writer.flush()

    def rows(self, cols: dict[str, np.ndarray]) -> None:
        """Write a flush's rows (metrics.parquet's columns) and flush the event file; run
        on the writer thread."""
        steps = [int(s) for s in cols["step"]]
        for name, tag in SCALARS.items():
            values = np.asarray(cols[name], dtype=np.float64)
            for step, v in zip(steps, values):
                self.writer.add_scalar(tag, float(v), step)
        for step, v in zip(steps, np.asarray(cols["val_metric"], dtype=np.float64)):
            if math.isfinite(v):
                self.writer.add_scalar(self.val_tag, float(v), step)
        self.writer.flush()

    def close(self, final: dict[str, float] | None, step: int, ended: bool) -> None:
        """The end of the run: its final evaluation (taken after the last flush) and, when
        it ended (completed or diverged, both results), the end of its hparams session."""
        if final and final.get("val_metric") is not None and math.isfinite(final["val_metric"]):
            self.writer.add_scalar(self.val_tag, float(final["val_metric"]), step)
        if ended:
            self.writer.file_writer.add_summary(self._end)
        self.writer.close()


def _hparam(value: Any) -> bool | int | float | str:
    """TensorBoard takes numbers, text and booleans: lists and null become their JSON."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value)
