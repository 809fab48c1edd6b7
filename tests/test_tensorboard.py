"""`trainer.tensorboard=true`: event files read back with TensorBoard's own reader."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from seqbench import tblog
from seqbench.hydra_input import check_config
from seqbench.train import Trainer

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")

from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402


def events(run_dir) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return acc


def test_event_files_hold_every_row_the_evaluations_and_the_config(tiny_cfg, tmp_path):
    cfg = tiny_cfg("trainer.tensorboard=true", "trainer.max_steps=20", "trainer.eval_every=10",
                   "clip=norm", "clip.max_norm=0.05")
    trainer = Trainer(cfg, tmp_path)
    summary = trainer.run()
    acc = events(tmp_path)
    rows = pq.read_table(tmp_path / "metrics.parquet").to_pandas()
    for column, tag in tblog.SCALARS.items():
        got = acc.Scalars(tag)
        assert [e.step for e in got] == rows["step"].tolist()
        # event files store float32
        np.testing.assert_allclose([e.value for e in got], rows[column].astype(float),
                                   rtol=1e-6)
    assert rows["clipped"].any()  # the clipped flag is really exercised
    val = acc.Scalars("val/bpc")
    assert [e.step for e in val] == [10, 20]
    assert val[-1].value == pytest.approx(summary["final_val_metric"], rel=1e-6)
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info
    config = trainer.experiment_config()
    assert set(start.hparams) == set(config)
    assert start.hparams["clip.max_norm"].number_value == 0.05
    assert start.hparams["optim.name"].string_value == config["optim.name"]
    assert "_hparams_/session_end_info" in content  # the run ended: its session too


def test_without_the_setting_no_event_file_is_written(tiny_cfg, tmp_path):
    Trainer(tiny_cfg("trainer.max_steps=5"), tmp_path).run()
    assert not list(tmp_path.glob("events.out.tfevents.*"))


def test_a_fresh_start_removes_the_event_files_of_the_run_it_replaces(tiny_cfg, tmp_path):
    Trainer(tiny_cfg("trainer.tensorboard=true", "trainer.max_steps=5"), tmp_path).run()
    Trainer(tiny_cfg("trainer.tensorboard=true", "trainer.max_steps=10"), tmp_path).run()
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1
    assert [e.step for e in events(tmp_path).Scalars("train/loss")] == list(range(1, 11))


def test_without_tensorboard_installed_the_setting_is_one_line(monkeypatch):
    monkeypatch.setattr(tblog, "available", lambda: False)
    assert check_config(["trainer.tensorboard=true"]) == [
        "trainer.tensorboard=True: needs the tensorboard extra: "
        "pip install 'seqbench[tensorboard]'"]
    assert check_config(["trainer.tensorboard=false"]) == []
