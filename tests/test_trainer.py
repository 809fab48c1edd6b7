"""The training loop: accumulation, divergence detection, policies, outputs."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from seqbench.data.tasks import build_task
from seqbench.train import NonFiniteError, Trainer

SUMMARY_KEYS = {
    "schema_version", "status", "divergence", "first_nonfinite_step", "steps_completed",
    "tokens_seen", "final_train_loss", "final_val_loss", "final_val_bpc", "best_val_bpc",
    "grad_norm_pre", "clip_fraction", "skipped_steps", "wall_seconds", "tokens_per_second",
    "config", "env", "error", "metric", "final_val_metric", "best_val_metric", "task_success",
}
METRIC_COLUMNS = ["step", "tokens", "train_loss", "grad_norm_pre", "grad_norm_post", "clipped",
                  "lr", "nonfinite", "skipped", "wall_s", "val_loss", "val_bpc", "val_metric"]


def poisoned_task(cfg, at_step, factor=float("nan"), where="loss"):
    """The real task, whose loss (or gradient) is poisoned at optimizer step `at_step`."""
    task = build_task(cfg.task)
    original = task.train_loss
    calls = {"n": 0}
    accum = cfg.trainer.accum_steps

    def train_loss(model, j):
        loss = original(model, j)
        step = calls["n"] // accum + 1
        calls["n"] += 1
        if step == at_step:
            if where == "loss":
                return loss * factor
            loss.register_hook(lambda g: g * factor)
        return loss

    task.train_loss = train_loss
    return task


def read(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = pd.read_parquet(run_dir / "metrics.parquet")
    return summary, metrics


def test_completed_run_outputs_follow_the_contract(tiny_cfg, tmp_path):
    cfg = tiny_cfg("trainer.eval_every=5", "clip=norm", "clip.max_norm=0.05")
    summary = Trainer(cfg, tmp_path).run()
    on_disk, m = read(tmp_path)
    assert on_disk == json.loads(json.dumps(summary))
    assert SUMMARY_KEYS <= set(summary)
    assert summary["schema_version"] == 1 and summary["status"] == "completed"
    assert summary["divergence"] is None and summary["first_nonfinite_step"] is None
    assert summary["steps_completed"] == 12 and summary["tokens_seen"] == 12 * 4 * 16
    assert list(m.columns) == METRIC_COLUMNS and len(m) == 12
    assert m["step"].tolist() == list(range(1, 13))
    assert m["tokens"].tolist() == [s * 64 for s in range(1, 13)]
    # evaluations at 5, 10 and at the end; null elsewhere
    assert m.loc[m.val_bpc.notna(), "step"].tolist() == [5, 10, 12]
    assert summary["final_val_bpc"] == pytest.approx(m.val_bpc.iloc[-1])
    assert summary["best_val_bpc"] == pytest.approx(m.val_bpc.min())
    assert summary["final_val_bpc"] == pytest.approx(summary["final_val_loss"] / math.log(2))
    assert summary["metric"] == {"name": "bpc", "unit": "bits/char", "lower_is_better": True}
    assert summary["final_val_metric"] == summary["final_val_bpc"]
    assert summary["best_val_metric"] == summary["best_val_bpc"]
    assert m.val_metric.equals(m.val_bpc) and summary["task_success"] is None
    assert summary["final_train_loss"] == pytest.approx(m.train_loss.iloc[-5:].mean())
    assert summary["grad_norm_pre"]["median"] == pytest.approx(m.grad_norm_pre.median())
    assert summary["grad_norm_pre"]["max"] == pytest.approx(m.grad_norm_pre.max())
    assert summary["clip_fraction"] == pytest.approx(m.clipped.mean())
    assert summary["clip_fraction"] > 0.5  # max_norm 0.05 is far below this model's norms
    clipped = m[m.clipped]
    assert (clipped.grad_norm_post <= 0.05 * (1 + 1e-5)).all()
    assert (clipped.grad_norm_pre > 0.05).all()
    assert summary["config"]["clip.method"] == "norm" and summary["config"]["seed"] == 0
    assert summary["config"]["optim.name"] == "adam"
    for key in ("torch", "python", "device_name", "hostname", "git_commit", "cuda"):
        assert key in summary["env"]


def test_status_is_running_while_training(tiny_cfg, tmp_path):
    cfg = tiny_cfg()
    task = build_task(cfg.task)
    original, seen = task.train_loss, []

    def spy(model, j):
        seen.append(json.loads((tmp_path / "summary.json").read_text())["status"])
        return original(model, j)

    task.train_loss = spy
    Trainer(cfg, tmp_path, task=task).run()
    assert seen[0] == "running" and set(seen) == {"running"}


@pytest.mark.parametrize("at_step", [1, 4, 5, 6, 11])
@pytest.mark.parametrize("where", ["loss", "grad"])
def test_first_nonfinite_step_is_exact(tiny_cfg, tmp_path, at_step, where):
    cfg = tiny_cfg("trainer.log_every=5")
    summary = Trainer(cfg, tmp_path, task=poisoned_task(cfg, at_step, where=where)).run()
    _, m = read(tmp_path)
    assert summary["status"] == "diverged" and summary["divergence"] == "nonfinite"
    assert summary["first_nonfinite_step"] == at_step
    assert summary["steps_completed"] == at_step
    assert summary["final_val_bpc"] is None and summary["final_train_loss"] is None
    assert m.step.tolist() == list(range(1, at_step + 1))
    assert m.nonfinite.tolist() == [False] * (at_step - 1) + [True]


def test_explosion_is_detected_at_its_step(tiny_cfg, tmp_path):
    cfg = tiny_cfg("trainer.explode_factor=10")
    summary = Trainer(cfg, tmp_path, task=poisoned_task(cfg, 7, factor=50.0)).run()
    assert summary["status"] == "diverged" and summary["divergence"] == "exploded"
    assert summary["divergence_step"] == 7 and summary["first_nonfinite_step"] is None
    assert summary["steps_completed"] == 7


def test_explosion_check_can_be_disabled(tiny_cfg, tmp_path):
    cfg = tiny_cfg("trainer.explode_factor=null")
    summary = Trainer(cfg, tmp_path, task=poisoned_task(cfg, 7, factor=50.0)).run()
    assert summary["status"] == "completed"


def test_skip_policy_skips_the_update_and_counts_it(tiny_cfg, tmp_path):
    cfg = tiny_cfg("trainer.on_nonfinite=skip")
    trainer = Trainer(cfg, tmp_path, task=poisoned_task(cfg, 3))
    summary = trainer.run()
    _, m = read(tmp_path)
    assert summary["status"] == "completed" and summary["skipped_steps"] == 1
    assert summary["first_nonfinite_step"] == 3 and summary["divergence"] is None
    assert m.skipped.tolist() == [s == 3 for s in range(1, 13)]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_raise_policy_records_an_error(tiny_cfg, tmp_path):
    cfg = tiny_cfg("trainer.on_nonfinite=raise")
    with pytest.raises(NonFiniteError, match="step 4"):
        Trainer(cfg, tmp_path, task=poisoned_task(cfg, 4)).run()
    summary, m = read(tmp_path)
    assert summary["status"] == "error" and "step 4" in summary["error"]
    assert summary["first_nonfinite_step"] == 4 and len(m) == 4


def test_an_error_inside_a_run_is_written_before_it_propagates(tiny_cfg, tmp_path):
    cfg = tiny_cfg()
    task = build_task(cfg.task)
    original, calls = task.train_loss, {"n": 0}

    def boom(model, j):
        calls["n"] += 1
        if calls["n"] == 8:
            raise RuntimeError("disk on fire")
        return original(model, j)

    task.train_loss = boom
    with pytest.raises(RuntimeError):
        Trainer(cfg, tmp_path, task=task).run()
    summary, m = read(tmp_path)
    assert summary["status"] == "error" and "disk on fire" in summary["error"]
    assert len(m) == 7  # the steps before the error were flushed, not lost


class CountingClip:
    def __init__(self, inner):
        self.inner, self.calls, self.norms = inner, 0, []

    def __call__(self, params, grads, pre):
        self.calls += 1
        self.norms.append(float(pre))
        return self.inner(params, grads, pre)


def run_counting(cfg, tmp_path):
    trainer = Trainer(cfg, tmp_path)
    trainer.clip = CountingClip(trainer.clip)
    trainer.run()
    return trainer


def test_accumulation_clips_the_accumulated_gradient_once_per_step(tiny_cfg, tmp_path):
    base = ("task.batch_size=8", "clip=norm", "clip.max_norm=0.1", "trainer.max_steps=6",
            "optim=sgd", "optim.lr=0.5")
    one = run_counting(tiny_cfg(*base, "trainer.accum_steps=1"), tmp_path / "a")
    four = run_counting(tiny_cfg(*base, "trainer.accum_steps=4"), tmp_path / "b")
    assert one.clip.calls == 6 and four.clip.calls == 6
    # 4 micro-batches of 2 streams accumulate exactly the gradient of 8 streams
    np.testing.assert_allclose(four.clip.norms, one.clip.norms, rtol=1e-4)
    for p, q in zip(one.model.parameters(), four.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_same_seed_same_run(tiny_cfg, tmp_path):
    cfg = tiny_cfg("trainer.deterministic=true")
    Trainer(cfg, tmp_path / "a").run()
    Trainer(cfg, tmp_path / "b").run()
    a, b = read(tmp_path / "a")[1], read(tmp_path / "b")[1]
    cols = ["train_loss", "grad_norm_pre", "grad_norm_post"]
    pd.testing.assert_frame_equal(a[cols], b[cols])


def test_warmup_cosine_schedule_is_recorded(tiny_cfg, tmp_path):
    cfg = tiny_cfg("optim.schedule=warmup_cosine", "optim.warmup_steps=4", "optim.lr=0.01")
    Trainer(cfg, tmp_path).run()
    lr = read(tmp_path)[1].lr.to_numpy()
    np.testing.assert_allclose(lr[:4], [0.0025, 0.005, 0.0075, 0.01])
    assert lr[4] == pytest.approx(0.01) and np.all(np.diff(lr[4:]) < 0)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("optim", ["sgd", "adam", "adamw", "rmsprop"])
def test_every_cell_and_optimizer_trains(tiny_cfg, tmp_path, cell, optim):
    cfg = tiny_cfg(f"model={cell}", f"optim={optim}", "trainer.max_steps=3",
                   "model.num_layers=2", "model.dropout=0.1")
    assert Trainer(cfg, tmp_path).run()["status"] == "completed"


def _cpu_autocast_skip(cell: str, amp: str):
    """Skip where this CPU cannot run `cell` under `amp` autocast (the probe's reason):
    oneDNN's bf16 LSTM needs instructions some x86-64 CPUs lack."""
    from seqbench.precision import autocast_failure, processor

    reason = autocast_failure({"cell": cell, "num_layers": 1}, "cpu", amp)
    return pytest.mark.skipif(reason is not None,
                              reason=f"{amp} {cell} on this CPU ({processor()}): {reason}")


@_cpu_autocast_skip("lstm", "bf16")
def test_bf16_autocast_runs(tiny_cfg, tmp_path):
    summary = Trainer(tiny_cfg("trainer.amp=bf16"), tmp_path).run()
    assert summary["status"] == "completed"


@_cpu_autocast_skip("rnn_tanh", "fp16")
def test_fp16_clips_the_unscaled_gradient(tiny_cfg, tmp_path):
    """Under fp16 AMP the gradients are unscaled before clipping: the norms the clipper
    sees match an fp32 run, not 65536 times larger."""
    # nn.RNN computes in fp16 under CPU autocast (nn.LSTM has no CPU fp16 kernel)
    base = ("trainer.max_steps=3", "model=rnn_tanh")
    fp32 = run_counting(tiny_cfg(*base), tmp_path / "a")
    fp16 = run_counting(tiny_cfg(*base, "trainer.amp=fp16"), tmp_path / "b")
    np.testing.assert_allclose(fp16.clip.norms, fp32.clip.norms, rtol=0.05)
    assert fp16.scaler is not None and fp16.scaler.get_scale() > 1


def test_fp16_scaler_skip_is_counted_not_divergence(tiny_cfg, tmp_path):
    cfg = tiny_cfg("model=rnn_tanh", "trainer.amp=fp16")
    task = poisoned_task(cfg, 4, factor=float("inf"), where="grad")
    summary = Trainer(cfg, tmp_path, task=task).run()
    _, m = read(tmp_path)
    assert summary["status"] == "completed" and summary["divergence"] is None
    assert summary["skipped_steps"] == 1 and m.skipped.tolist()[3] is True
    assert summary["first_nonfinite_step"] is None


def test_relative_norm_threshold_is_a_multiple_of_the_calibration_median(tiny_cfg, tmp_path):
    cfg = tiny_cfg("clip=norm", "clip.relative=true", "clip.max_norm=0.5",
                   "clip.calibration_steps=5", "trainer.max_steps=12")
    summary = Trainer(cfg, tmp_path).run()
    m = read(tmp_path)[1]
    median = float(np.median(m.grad_norm_pre.iloc[:5]))
    assert summary["clip"]["calibration_median"] == pytest.approx(median, rel=1e-6)
    assert summary["clip"]["clip_threshold"] == pytest.approx(0.5 * median, rel=1e-6)
    assert not m.clipped.iloc[:5].any()  # calibration steps run unclipped
    after = m.iloc[5:]
    assert (after.clipped == (after.grad_norm_pre > 0.5 * median)).all()
    assert (after.grad_norm_post <= 0.5 * median * (1 + 1e-5)).all()


def test_frozen_parameters_never_change_and_never_enter_a_norm(tiny_cfg, tmp_path):
    cfg = tiny_cfg("trainer.freeze=[embed.*,decoder.bias]", "optim=sgd", "optim.lr=1.0",
                   "trainer.max_steps=3")
    trainer = Trainer(cfg, tmp_path)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.clip = CountingClip(trainer.clip)
    seen = []
    inner = trainer.clip.inner

    def spy(params, grads, pre):
        seen.append((len(params), float(pre), float(torch.linalg.vector_norm(
            torch.cat([g.flatten() for g in grads])))))
        return inner(params, grads, pre)

    trainer.clip.inner = spy
    summary = trainer.run()
    assert summary["frozen"] == ["embed.weight", "decoder.bias"]
    for n, p in trainer.model.named_parameters():
        if n in summary["frozen"]:
            assert torch.equal(p, before[n]) and p.grad is None
        else:
            assert not torch.equal(p, before[n])
    n_trainable = sum(1 for _, p in trainer.model.named_parameters() if p.requires_grad)
    assert all(k == n_trainable for k, _, _ in seen)
    assert all(pre == pytest.approx(norm, rel=1e-5) for _, pre, norm in seen)
    frozen_ids = {id(p) for n, p in trainer.model.named_parameters() if n in summary["frozen"]}
    assert not any(id(p) in frozen_ids for g in trainer.optimizer.param_groups
                   for p in g["params"])


def test_per_parameter_norms_every_n_steps(tiny_cfg, tmp_path):
    lr = 0.5
    cfg = tiny_cfg("trainer.param_log_every=4", "optim=sgd", f"optim.lr={lr}",
                   "clip=norm", "clip.max_norm=0.05")
    trainer = Trainer(cfg, tmp_path)
    trainer.run()
    pm = pd.read_parquet(tmp_path / "param_metrics.parquet")
    m = read(tmp_path)[1]
    names = [n for n, _ in trainer.model.named_parameters()]
    assert pm.step.unique().tolist() == [4, 8, 12]
    assert (pm.groupby("step").name.apply(list) == pd.Series({s: names for s in (4, 8, 12)})
            ).all()
    for step, rows in pm.groupby("step"):
        row = m[m.step == step].iloc[0]
        # per-tensor norms make up the global norms the metrics file recorded
        assert np.sqrt((rows.grad_norm ** 2).sum()) == pytest.approx(row.grad_norm_pre, rel=1e-5)
        assert np.sqrt((rows.grad_norm_post ** 2).sum()) == pytest.approx(
            row.grad_norm_post, rel=1e-4)
    # plain SGD: the update is lr x the clipped gradient, so ||update|| = lr ||g_post||
    np.testing.assert_allclose(pm.update_ratio * pm.weight_norm, lr * pm.grad_norm_post,
                               rtol=1e-4, atol=1e-9)


def test_per_parameter_rows_stop_with_a_divergence(tiny_cfg, tmp_path):
    cfg = tiny_cfg("trainer.param_log_every=2", "trainer.log_every=5")
    Trainer(cfg, tmp_path, task=poisoned_task(cfg, 7)).run()
    pm = pd.read_parquet(tmp_path / "param_metrics.parquet")
    assert pm.step.unique().tolist() == [2, 4, 6]  # nothing after the diverged step 7


def test_error_if_nonfinite_is_the_raise_policy(tiny_cfg, tmp_path):
    cfg = tiny_cfg("clip=norm", "clip.error_if_nonfinite=true")
    with pytest.raises(NonFiniteError, match="clip.error_if_nonfinite=true"):
        Trainer(cfg, tmp_path, task=poisoned_task(cfg, 3, where="grad")).run()
    summary, _ = read(tmp_path)
    assert summary["status"] == "error" and summary["first_nonfinite_step"] == 3


@pytest.mark.parametrize("clip", [["clip=autoclip"], ["clip=zclip", "clip.warmup_steps=3"],
                                  ["clip=norm", "clip.relative=true",
                                   "clip.calibration_steps=3"]])
def test_stateful_clipper_state_is_saved_with_the_run(tiny_cfg, tmp_path, clip):
    trainer = Trainer(tiny_cfg(*clip), tmp_path)
    trainer.run()
    state = torch.load(tmp_path / "clip_state.pt", weights_only=True)
    expected = trainer.clip.state_dict()
    assert state.keys() == expected.keys()
    for k, v in expected.items():
        assert torch.equal(state[k], v.cpu()) if torch.is_tensor(v) else state[k] == v
    fresh = Trainer(tiny_cfg(*clip), tmp_path / "again").clip
    fresh.load_state_dict(state)  # a checkpoint can restore it
    for k, v in fresh.state_dict().items():
        assert torch.equal(v.cpu(), state[k]) if torch.is_tensor(v) else v == state[k]


# ---- the pieces the loop is built from ----------------------------------------------

SMALL_SEQUENCES = ("task.length=10", "task.val_sequences=20", "model=gru")
TASK_CONFIGS = {
    "tinyshakespeare": [],
    "adding": ["task=adding", *SMALL_SEQUENCES],
    "temporal_order": ["task=temporal_order", *SMALL_SEQUENCES],
    "copy": ["task=copy", *SMALL_SEQUENCES],
    "regression_mlp": ["task=regression_mlp", "model=mlp"],
}


@pytest.mark.parametrize("name", list(TASK_CONFIGS))
def test_every_builtin_task_provides_the_task_protocol(tiny_cfg, name):
    """`Task` is the whole interface the trainer uses: a built-in task lacking a member
    of it would fail only when a run reached that member (a resume, the final step)."""
    from seqbench.data.tasks import HasSuccess, Task

    members = {n for n in vars(Task) if not n.startswith("_")} | set(Task.__annotations__)
    assert {"train_loss", "advance", "evaluate", "baseline", "state_dict",
            "load_state_dict", "tokens_per_step", "metric", "name"} <= members
    from seqbench.config import compose

    cfg = tiny_cfg() if name == "tinyshakespeare" else compose(TASK_CONFIGS[name])
    task = build_task(cfg.task)
    task.setup(torch.device("cpu"), 1)
    for member in members:
        assert hasattr(task, member), member
        if callable(getattr(Task, member, None)):
            assert callable(getattr(task, member)), member
    assert isinstance(task.tokens_per_step, int) and task.tokens_per_step > 0
    assert isinstance(task, HasSuccess) == (name != "tinyshakespeare")


VOLATILE = ("wall_seconds", "train_seconds", "tokens_per_second", "timing")


def test_summarize_rebuilds_what_the_run_wrote_without_touching_anything(tiny_cfg,
                                                                        tmp_path):
    import copy

    from seqbench.models import count_parameters
    from seqbench.summary import summarize

    cfg = tiny_cfg("trainer.eval_every=5", "clip=norm", "clip.relative=true",
                   "clip.calibration_steps=3")
    trainer = Trainer(cfg, tmp_path)
    written = trainer.run()
    state = copy.deepcopy(trainer.state)
    args = dict(log_every=5, metric=trainer.task.metric, baseline=trainer.baseline,
                elapsed=1.0, timing=trainer.times, clip=trainer.clip.summary(),
                task=trainer.task.describe(), parameters=count_parameters(trainer.model),
                frozen=trainer.frozen, config=trainer.flat_config, env=trainer.env)
    files = sorted(p.name for p in tmp_path.iterdir())
    again = summarize(trainer.state, trainer.metrics, **args)
    assert list(again) == list(written)  # the same keys, in the same order
    assert {k: v for k, v in again.items() if k not in VOLATILE} == \
        {k: v for k, v in written.items() if k not in VOLATILE}
    assert again["wall_seconds"] == 1.0  # the clock is an input, not read inside
    assert trainer.state == state and sorted(p.name for p in tmp_path.iterdir()) == files


def test_summarize_a_diverged_run_by_hand(tmp_path):
    """No run needed: the state and the rows are the whole input."""
    from seqbench.data.tasks import BPC
    from seqbench.metrics import MetricsFile
    from seqbench.summary import RunState, summarize

    rows = MetricsFile(tmp_path / "never_written.parquet")
    rows.add({"step": np.arange(1, 4), "train_loss": np.array([3.0, 2.0, np.nan]),
              "grad_norm_pre": np.array([1.0, 2.0, np.inf]),
              "clipped": np.array([False, True, False])})
    state = RunState(status="diverged", divergence="nonfinite", first_nonfinite_step=3,
                     divergence_step=3, steps_completed=3, tokens_seen=30,
                     evals={2: {"val_loss": 1.0, "val_bpc": 1.5, "val_metric": 1.5}},
                     initial_loss=3.0, eval_seconds=0.5)
    s = summarize(state, rows, log_every=5, metric=BPC,
                  baseline={"val_metric": 4.0, "description": "unigram"}, elapsed=2.5,
                  timing={"created_at": 0.0}, clip=None, task={}, parameters=7, frozen=[],
                  config={"seed": 0}, env={})
    assert not (tmp_path / "never_written.parquet").exists()
    assert s["status"] == "diverged" and s["outcome"] == "diverged"
    assert s["final_val_metric"] is None and s["final_train_loss"] is None
    assert s["best_val_metric"] == 1.5 and s["best_val_bpc"] == 1.5
    assert s["grad_norm_pre"]["max"] == 2.0 and s["clip_fraction"] == pytest.approx(1 / 3)
    assert s["train_seconds"] == 2.0 and s["tokens_per_second"] == 15.0
    assert s["initial_loss"] == 3.0 and s["baseline"] == "unigram"
