"""Plugins (issue 14): discovery through entry points, the example plugin everywhere a
built-in goes, and every way a plugin can fail.

The rest of the suite runs with SEQBENCH_DISABLE_PLUGIN_AUTOLOAD=1 (conftest.py). A
loaded plugin stays registered for the whole process, so tests that load one run in a
subprocess; failures register nothing (plugins load all or nothing), so their messages
are checked in this process too, with fake distributions on sys.path (a module and a
*.dist-info directory with entry_points.txt: what pip installs, without pip).

The example plugin (examples/plugin) must be installed: `make setup` does it. Without
it its tests skip, unless SEQBENCH_REQUIRE_PLUGIN_EXAMPLE=1 (CI) makes them fail.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from seqbench import plugin_loader
from seqbench.clipping import CLIP
from seqbench.errors import ConfigError, PluginError

EXAMPLE = "seqbench-example-plugin"
INSTALL = ".venv/bin/python -m pip install --no-deps -e examples/plugin (make setup does it)"


@pytest.fixture
def example():
    try:
        importlib.metadata.distribution(EXAMPLE)
    except importlib.metadata.PackageNotFoundError:
        if os.environ.get("SEQBENCH_REQUIRE_PLUGIN_EXAMPLE") == "1":
            pytest.fail(f"SEQBENCH_REQUIRE_PLUGIN_EXAMPLE=1 but {EXAMPLE} is not installed: "
                        + INSTALL)
        pytest.skip(f"{EXAMPLE} is not installed: {INSTALL}")


def plugin_env(pythonpath: Path | None = None, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != plugin_loader.DISABLE_ENV}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(pythonpath),
                                                        env.get("PYTHONPATH")) if p)
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def run(args: list[str], cwd: Path, pythonpath: Path | None = None, **extra: str):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=plugin_env(pythonpath, **extra),
                          capture_output=True, text=True, timeout=300)


def seqbench(*args: str, cwd: Path, pythonpath: Path | None = None):
    return run(["-m", "seqbench", *args], cwd, pythonpath)


def fake_dist(root: Path, dist: str, entry_point: str, module: str, code: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(code))
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[seqbench.plugins]\n{entry_point} = {module}\n")
    return root


def load_in_process(root: Path, monkeypatch) -> list:
    monkeypatch.syspath_prepend(str(root))
    eps = [ep for dist in importlib.metadata.distributions(path=[str(root)])
           for ep in dist.entry_points.select(group=plugin_loader.ENTRY_POINT_GROUP)]
    return plugin_loader.load_entry_points(eps)


def registering(fn: str, name: str, config: str, body: str = "x: float = 1.0") -> str:
    return f"""
        from dataclasses import dataclass
        from seqbench.plugins import {fn}

        @dataclass
        class {config}:
            {body}

        @{fn}({name!r}, {config})
        def build(*args):
            raise AssertionError("never built")
        """


# ---- failures: one line naming the plugin, nothing registered -----------------------
FAILURES = {
    "import error": (
        [("seqbench-broken", "broken", "sbt_broken", "import sbt_no_such_module\n")],
        "plugin broken (seqbench-broken 1.0): cannot import sbt_broken: "
        "ModuleNotFoundError: No module named 'sbt_no_such_module'"),
    "a built-in's name": (
        [("seqbench-clash", "clash", "sbt_clash", registering("register_clip", "norm", "Mine"))],
        "plugin clash (seqbench-clash 1.0): register_clip('norm', Mine): clip=norm is "
        "taken by seqbench"),
    "a preset's name": (
        [("seqbench-preset", "preset", "sbt_preset",
          registering("register_clip", "graves", "Mine"))],
        "plugin preset (seqbench-preset 1.0): register_clip('graves', Mine): clip=graves is "
        "taken by seqbench (conf/clip/graves.yaml)"),
    "another plugin's name": (
        [("seqbench-first", "a_first", "sbt_first", registering("register_clip", "shared", "A")),
         ("seqbench-second", "b_second", "sbt_second",
          registering("register_clip", "shared", "B"))],
        "plugin b_second (seqbench-second 1.0): register_clip('shared', B): clip=shared is "
        "taken by plugin a_first (seqbench-first 1.0)"),
    "a model's built-in name": (
        [("seqbench-lstm", "lstm2", "sbt_lstm", """
            from seqbench.plugins import RecurrentConfig, register_model
            register_model("lstm", RecurrentConfig)(lambda cfg, n: None)
            """)],
        "plugin lstm2 (seqbench-lstm 1.0): register_model('lstm', RecurrentConfig): "
        "model=lstm is taken by seqbench"),
    "not a dataclass": (
        [("seqbench-notdc", "notdc", "sbt_notdc", """
            from seqbench.plugins import register_task
            class NotData:
                batch_size = 4
            register_task("mytask", NotData)(lambda cfg: None)
            """)],
        "plugin notdc (seqbench-notdc 1.0): register_task('mytask', NotData): NotData is "
        "not a dataclass (the config is a @dataclass whose fields are the option's keys)"),
    "a field type a config cannot hold": (
        [("seqbench-badtype", "badtype", "sbt_badtype",
          registering("register_clip", "cplx", "Cplx", "x: complex = 1j"))],
        "plugin badtype (seqbench-badtype 1.0): register_clip('cplx', Cplx): Cplx cannot be "
        "a config: Unexpected type annotation: complex"),
    "another selector default": (
        [("seqbench-sel", "sel", "sbt_sel",
          registering("register_clip", "mine", "Sel", "method: str = 'norm'"))],
        "plugin sel (seqbench-sel 1.0): register_clip('mine', Sel): Sel.method has the "
        "default 'norm'; leave the field out (it is filled in) or make its default 'mine'"),
    "a model config without the recurrent keys": (
        [("seqbench-nokeys", "nokeys", "sbt_nokeys",
          registering("register_model", "mymodel", "Small", "size: int = 4"))],
        "plugin nokeys (seqbench-nokeys 1.0): register_model('mymodel', Small): Small lacks "
        "embed_dim, hidden_size, num_layers, dropout (a model config extends "
        "seqbench.plugins.RecurrentConfig)"),
    "a task config without batch_size": (
        [("seqbench-nobatch", "nobatch", "sbt_nobatch",
          registering("register_task", "mytask", "T", "seq_len: int = 4"))],
        "plugin nobatch (seqbench-nobatch 1.0): register_task('mytask', T): T has no "
        "batch_size field (the trainer splits task.batch_size into trainer.accum_steps "
        "micro-batches)"),
    "a name that is not a plain name": (
        [("seqbench-path", "path", "sbt_path", registering("register_clip", "../x", "P"))],
        "plugin path (seqbench-path 1.0): register_clip('../x', P): the name must be "
        "letters, digits and _, starting with a letter (it is typed as GROUP=NAME and "
        "names run directories)"),
}


@pytest.mark.parametrize("case", FAILURES)
def test_a_plugin_that_cannot_be_used_is_one_line_and_registers_nothing(case, tmp_path,
                                                                         monkeypatch):
    dists, message = FAILURES[case]
    for dist, entry_point, module, code in dists:
        fake_dist(tmp_path, dist, entry_point, module, code)
    before = {kind: list(reg.names()) for kind, reg in (("clip", CLIP),)}
    with pytest.raises(PluginError) as e:
        load_in_process(tmp_path, monkeypatch)
    assert str(e.value) == message
    assert CLIP.names() == before["clip"]  # the first plugin of a clash neither


def test_the_cli_prints_the_line_exits_2_and_runs_nothing(tmp_path):
    """train, sweep and plugins: one line, no traceback, no run directory; a Hydra job
    process (which runs seqbench.app's task function, not the CLI) fails loudly with the
    same line; importing seqbench loads no plugin; SEQBENCH_DISABLE_PLUGIN_AUTOLOAD=1 skips
    discovery."""
    (dists, message), = [FAILURES["import error"]]
    root = fake_dist(tmp_path / "site", *dists[0])
    line = f"seqbench: error: {message}\n"
    for args in (["train", f"hydra.run.dir={tmp_path / 'run'}"],
                 ["sweep", "slurm_smoke", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                 ["plugins"]):
        r = seqbench(*args, cwd=tmp_path, pythonpath=root)
        assert (r.returncode, r.stderr, r.stdout) == (2, line, ""), args
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()
    imported = run(["-c", "import seqbench.app, seqbench.config, seqbench.clipper"],
                   tmp_path, root)
    assert (imported.returncode, imported.stderr) == (0, "")
    # what Hydra's launchers call in a job process: the undecorated task function
    job = run(["-c", "import seqbench.app; seqbench.app.train_app.__wrapped__(None)"],
              tmp_path, root)
    assert job.returncode == 1 and job.stderr.strip().endswith(f"PluginError: {message}")
    off = run(["-m", "seqbench", "plugins"], tmp_path, root,
              SEQBENCH_DISABLE_PLUGIN_AUTOLOAD="1")
    assert (off.returncode, off.stdout) == (
        0, "plugins are not loaded: SEQBENCH_DISABLE_PLUGIN_AUTOLOAD is set\n")


# ---- the example plugin, end to end (subprocesses) ----------------------------------
def token_file(path: Path, n: int = 3000) -> Path:
    rng = np.random.default_rng(0)
    ids = [0]
    for _ in range(n - 1):  # learnable: the next id is nearly a function of the last
        ids.append((3 * ids[-1] + int(rng.integers(0, 2))) % 40)
    path.write_text(" ".join(map(str, ids)) + "\n")
    return path


def test_plugins_lists_the_example(example, tmp_path):
    r = seqbench("plugins", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == textwrap.dedent("""\
        1 plugin (entry point group seqbench.plugins):
          example: seqbench-example-plugin 0.1.0 (module seqbench_example_plugin.plugin)
            clip=adagc
            model=ln_lstm
            task=token_file
        """)


def test_train_help_lists_the_example_options(example, tmp_path):
    r = seqbench("train", "--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    groups = dict(line.split(": ", 1) for line in r.stdout.splitlines()
                  if line.startswith(("clip: ", "model: ", "task: ")))
    assert "adagc" in groups["clip"].split(", ")
    assert "ln_lstm" in groups["model"].split(", ")
    assert "token_file" in groups["task"].split(", ")


CHECKS = """
import json, os, signal, sys
from pathlib import Path
import pandas as pd
from seqbench import Clipper
from seqbench.config import compose
from seqbench.hydra_input import check_config
from seqbench.train import Interrupted, Trainer

ids, out = sys.argv[1], Path(sys.argv[2])
base = ["task=token_file", f"task.path={ids}", "task.seq_len=8", "task.batch_size=4",
        "model=ln_lstm", "model.hidden_size=8", "model.embed_dim=4", "clip=adagc",
        "clip.warmup_steps=3", "optim=sgd", "optim.lr=1.0", "trainer.max_steps=16",
        "trainer.log_every=4", "trainer.eval_every=8", "trainer.eval_batches=2",
        "trainer.checkpoint_every=4", "trainer.deterministic=true", "trainer.threads=1",
        "trainer.progress=off"]
result = {"errors": {}}
for bad in (["clip.beta=1.5", "clip.warmup_steps=0"], ["clip.method=norm"],
            ["model.cell=gru"], ["model=mlp"], ["task.path=null"]):
    keys = {b.split("=")[0] for b in bad}
    # a bad value replaces the base's; a group choice (model=mlp) drops the group's keys
    kept = [o for o in base if o.split("=")[0] not in keys and o.split(".")[0] not in keys]
    result["errors"][" ".join(bad)] = check_config([*kept, *bad])

cfg = compose(base)
Trainer(cfg, out / "ref").run()
trainer = Trainer(cfg, out / "run")
advance = trainer.task.advance
def stop():  # SIGTERM at step 6, after the warm-up: AdaGC's running norms are state
    if trainer.step_count + 1 == 6:
        os.kill(os.getpid(), signal.SIGTERM)
    advance()
trainer.task.advance = stop
try:
    trainer.run()
except Interrupted:
    pass
Trainer(cfg, out / "run").run()
frames = [pd.read_parquet(out / d / "metrics.parquet").drop(columns=["wall_s"])
          for d in ("ref", "run")]
pd.testing.assert_frame_equal(*frames)
summaries = [json.loads((out / d / "summary.json").read_text()) for d in ("ref", "run")]
result["resumed_from"] = summaries[1]["resumed_from"]
result["same_clip_state"] = summaries[0]["clip"] == summaries[1]["clip"]
result["summary"] = {k: summaries[0][k] for k in ("status", "outcome", "clip")}
result["summary"]["config"] = {k: summaries[0]["config"][k]
                               for k in ("clip.method", "model.cell", "task.name")}

clipper = Clipper("adagc", lambda_rel=1.1)
result["clipper"] = [repr(clipper), clipper.stateful]
try:
    Clipper("adagc", beta=2)
except ValueError as e:
    result["clipper"].append(str(e))
print(json.dumps(result))
"""


def test_the_example_validates_trains_resumes_and_clips_like_a_built_in(example, tmp_path):
    ids = token_file(tmp_path / "ids.txt")
    r = run(["-c", CHECKS, str(ids), str(tmp_path)], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["errors"] == {
        "clip.beta=1.5 clip.warmup_steps=0": ["clip.beta=1.5: must be in [0, 1)",
                                             "clip.warmup_steps=0: must be >= 1"],
        "clip.method=norm": ["clip.method=norm: one of adagc with these clip settings "
                             "(another clip: clip=OPTION)"],
        "model.cell=gru": ["model.cell=gru: one of ln_lstm with these model settings "
                           "(another model: model=OPTION)"],
        "model=mlp": ["model=mlp: task token_file needs model=lstm, gru, rnn_tanh or ln_lstm"],
        "task.path=null": ["task.path=None: the path of a text file of whitespace-separated "
                           "integer token ids"],
    }
    assert got["resumed_from"] == [6] and got["same_clip_state"]
    summary = got["summary"]
    assert summary["status"] == "completed" and summary["outcome"] in ("trained",
                                                                      "no_progress")
    assert summary["config"] == {"clip.method": "adagc", "model.cell": "ln_lstm",
                                 "task.name": "token_file"}
    assert summary["clip"]["step"] == 16 and set(summary["clip"]["gamma"]) >= {
        "embed.weight", "rnn.layers.0.w_h.weight", "decoder.bias"}
    assert got["clipper"] == [
        "Clipper('adagc', beta=0.98, lambda_rel=1.1, lambda_abs=1.0, warmup_steps=100, "
        "eps=1e-08)", True, "clip.beta=2.0: must be in [0, 1)"]


def test_a_sweep_with_the_example_completes_and_is_skipped_when_run_again(example,
                                                                          tmp_path):
    ids = token_file(tmp_path / "ids.txt")
    sweep_dir = tmp_path / "runs"
    args = ["sweep", "slurm_smoke",  # its grids' values are all replaced below: 2 jobs
            "task=token_file", f"task.path={ids}", "model=ln_lstm", "model.hidden_size=8",
            "model.embed_dim=4", "clip=adagc", "clip.warmup_steps=4", "optim=adam",
            "optim.lr=0.01", "seed=0,1", "trainer.max_steps=12", "trainer.log_every=4",
            "trainer.eval_every=0", "trainer.eval_batches=2", "hydra/launcher=basic",
            f"hydra.sweep.dir={sweep_dir}"]
    first = seqbench(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "sweep slurm_smoke: 2 jobs (0 already finished)" in first.stdout
    summaries = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/summary.json"))]
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    assert {(s["config"]["clip.method"], s["config"]["model.cell"], s["config"]["task.name"])
            for s in summaries} == {("adagc", "ln_lstm", "token_file")}
    report = (tmp_path / "reports" / "runs" / "report.md").read_text()
    assert "adagc" in report and "bits per token" in report

    again = seqbench(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "sweep slurm_smoke: 2 jobs (2 already finished)" in again.stdout


# ---- the example's parts, without registering them (this process) -------------------
def adagc_reference(grads_per_step: list[list[torch.Tensor]], beta, lam_rel, lam_abs,
                     warmup, eps):
    """AdaGC's definition (the example's docstring) in plain Python floats."""
    gamma, out = None, []
    for t, grads in enumerate(grads_per_step, start=1):
        norms = [float(g.norm()) for g in grads]
        if t <= warmup:
            total = math.sqrt(sum(n * n for n in norms))
            h = [min(1.0, lam_abs / (total + eps))] * len(grads)
            clipped = [n * hi for n, hi in zip(norms, h)]
            gamma = clipped if gamma is None else [min(a, b) for a, b in zip(gamma, clipped)]
        else:
            h = [min(1.0, lam_rel * gm / max(n, eps)) for gm, n in zip(gamma, norms)]
            clipped = [n * hi for n, hi in zip(norms, h)]
            gamma = [beta * gm + (1 - beta) * c for gm, c in zip(gamma, clipped)]
        out.append(([g * hi for g, hi in zip(grads, h)], list(gamma)))
    return out


def test_adagc_follows_its_definition_and_resumes_from_its_state(example):
    from omegaconf import OmegaConf
    from seqbench_example_plugin.adagc import AdaGC, AdaGCConfig

    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(5))]
    named = [("w", params[0]), ("b", params[1])]
    steps = [[torch.randn_like(p) * (8.0 if t == 5 else 1.0) for p in params]
             for t in range(8)]  # a spike at step 6, after the warm-up
    cfg = OmegaConf.structured(AdaGCConfig(warmup_steps=3, lambda_rel=1.05))
    expected = adagc_reference(steps, 0.98, 1.05, 1.0, 3, 1e-8)

    def call(clip, grads):
        grads = [g.clone() for g in grads]
        pre = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
        post, changed = clip(params, grads, pre)
        return grads, post, changed

    clip = AdaGC(cfg, named)
    for t, (grads, (want, gamma)) in enumerate(zip(steps, expected)):
        got, post, changed = call(clip, grads)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(clip.gamma, torch.tensor(gamma))
        torch.testing.assert_close(post, torch.linalg.vector_norm(
            torch.stack([g.norm() for g in want])))
        assert bool(changed) == any(not torch.equal(a, b) for a, b in zip(want, grads))
        if t == 4:
            state = clip.state_dict()
            resumed = AdaGC(cfg, named)
            resumed.load_state_dict(state)
    for t in range(5, len(steps)):  # the resumed copy continues as the original did
        for a, b in zip(call(resumed, steps[t])[0], expected[t][0]):
            torch.testing.assert_close(a, b)


def test_adagc_reads_nothing_on_the_host_while_clipping(example, monkeypatch):
    """No .item(), bool(), float(), .tolist(), .cpu(): on CUDA each would be a sync."""
    import inspect

    from omegaconf import OmegaConf
    from seqbench_example_plugin import adagc

    reads = []
    for name in ("item", "__bool__", "__float__", "__int__", "tolist", "cpu", "numpy"):
        original = getattr(torch.Tensor, name)

        def spy(self, *a, __original=original, __name=name, **kw):
            if inspect.stack(context=0)[1].filename == adagc.__file__:
                reads.append(__name)
            return __original(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, spy)
    params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]
    clip = adagc.AdaGC(OmegaConf.structured(adagc.AdaGCConfig(warmup_steps=2)),
                       [("w", params[0]), ("b", params[1])])
    for _ in range(5):  # warm-up and after, all parameters and then only one with a grad
        grads = [torch.randn_like(p) for p in params]
        clip(params, grads, torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
    clip(params[:1], grads[:1], grads[0].norm())
    assert reads == []


def test_ln_lstm_carries_its_state_and_builds_on_meta(example):
    from seqbench_example_plugin.ln_lstm import LayerNormLSTM

    torch.manual_seed(0)
    model = LayerNormLSTM(3, 5, num_layers=2).eval()
    x = torch.randn(2, 6, 3)
    whole, (h, c) = model(x)
    first, state = model(x[:, :4])
    rest, (h2, c2) = model(x[:, 4:], state)
    assert whole.shape == (2, 6, 5) and h.shape == c.shape == (2, 2, 5)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), whole)
    torch.testing.assert_close((h2, c2), (h, c))
    with torch.device("meta"):  # what validation does with every model
        assert LayerNormLSTM(3, 5).layers[0].w_h.weight.is_meta


def test_token_file_task_baseline_and_errors(example, tmp_path):
    from omegaconf import OmegaConf
    from seqbench_example_plugin.token_file import TokenFileConfig, TokenFileTask

    ids = token_file(tmp_path / "ids.txt", n=1000)
    cfg = OmegaConf.structured(TokenFileConfig(path=str(ids), seq_len=10, batch_size=4))
    task = TokenFileTask(cfg)
    assert task.vocab == 40 and task.describe()["tokens"] == {"train": 900, "val": 100}
    train, val = task.ids["train"], task.ids["val"].reshape(4, 25)
    targets = val[:, 1:1 + 2 * 10].ravel()  # two windows of 10 per stream
    p = (np.bincount(train, minlength=40) + 1) / (len(train) + 40)
    assert task.baseline()["val_metric"] == pytest.approx(-np.log2(p[targets]).mean())
    for text, message in (("1 2 x", "token 3 ('x') is not a non-negative integer id"),
                          ("", "holds no token ids")):
        (tmp_path / "bad.txt").write_text(text)
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            TokenFileTask(OmegaConf.structured(TokenFileConfig(path=str(tmp_path / "bad.txt"))))
    with pytest.raises(ConfigError, match="task.seq_len=30: at most 24"):
        TokenFileTask(OmegaConf.structured(TokenFileConfig(path=str(ids), seq_len=30,
                                                           batch_size=4)))
