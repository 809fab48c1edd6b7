"""seqbench.Clipper: the clipping zoo in a plain PyTorch loop (issue 14, item 3).

The promise is "the same as seqbench train": the same defaults, the same validation
lines, the same numbers. So every test here compares against the trainer's own path
(`build_clipper` on a config from `compose`, called as Trainer.step calls it), against
the CLI's own messages (`check_config`, and the CLI as a subprocess for a few), or
against torch.nn.utils as an independent reference.
"""

import copy
import io
import math
import re
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf
from torch import nn

from seqbench import Clipper, ClipStats
from seqbench.clipping import CLIP, build_clipper, global_norm
from seqbench.confdir import group_options
from seqbench.config import compose
from seqbench.errors import ConfigErrors
from seqbench.hydra_input import check_config

ROOT = Path(__file__).resolve().parents[1]
# groups without rules (the default) warns that it clips nothing: expected in these tests
pytestmark = pytest.mark.filterwarnings(r"ignore:.*parameter\(s\) match no rule:UserWarning")

# The README's example, run verbatim below (and compared with README.md once pasted).
README_EXAMPLE = '''\
import torch
from torch import nn

from seqbench import Clipper


class CharLSTM(nn.Module):
    def __init__(self, vocab=32, hidden=64):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.rnn = nn.LSTM(hidden, hidden, batch_first=True)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, x):
        return self.decoder(self.rnn(self.embed(x))[0])


torch.manual_seed(0)
model = CharLSTM()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
clipper = Clipper("zclip", z_thresh=2.5)      # any registered method, its own keys

for step in range(1, 51):
    tokens = (torch.randint(0, 32, (8, 1)) + torch.arange(65)) % 32  # learn to count
    logits = model(tokens[:, :-1])
    loss = nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    stats = clipper(model.named_parameters())     # clips in place; pre/post norm, changed
    optimizer.step()
    if step % 10 == 0:  # stats are tensors: reading them syncs, so read them seldom
        print(f"step {step}: loss {loss.item():.3f}  grad norm {stats.pre_norm.item():.3f}"
              f" -> {stats.post_norm.item():.3f}  clipped {bool(stats.clipped)}")
'''


def test_readme_example_runs_verbatim():
    out = io.StringIO()
    with redirect_stdout(out):
        exec(compile(README_EXAMPLE, "README example", "exec"), {"__name__": "readme"})
    rows = re.findall(r"step (\d+): loss (\S+)", out.getvalue())
    assert [int(step) for step, _ in rows] == [10, 20, 30, 40, 50]
    assert float(rows[-1][1]) < float(rows[0][1]) / 10  # it trains


def test_readme_holds_the_tested_example():
    text = (ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "Clipper(" in b]
    assert README_EXAMPLE in blocks


# ---- the same numbers as the trainer ---------------------------------------------------
class Tiny(nn.Module):
    """Named like seqbench's CharRNN (embed, rnn, decoder), plus a frozen layer last: a
    method built from all parameters instead of the trainable ones (AGC's head is the
    last two) would differ from the trainer."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(11, 6)
        self.rnn = nn.LSTM(6, 8)
        self.decoder = nn.Linear(8, 11)
        self.frozen = nn.Linear(3, 1).requires_grad_(False)


def gradient_stream(model: nn.Module, steps: int, seed: int = 0):
    """Per step {name: gradient}: log-normal scales with two spikes, and one step on
    which decoder.bias has no gradient (a parameter the loss did not reach)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {n: p.shape for n, p in model.named_parameters() if p.requires_grad}
    for step in range(steps):
        scale = 0.05 * math.exp(float(torch.randn((), generator=g)))
        if step in (30, 41):
            scale *= 100
        grads = {n: torch.randn(s, generator=g) * scale for n, s in shapes.items()}
        if step == 17:
            del grads["decoder.bias"]
        yield grads


def set_grads(model: nn.Module, grads: dict) -> None:
    for n, p in model.named_parameters():
        p.grad = grads[n].clone() if n in grads else None


GRAVES_RULES = [{"pattern": "decoder.*", "method": "value", "threshold": 100.0},
                {"pattern": "rnn.*", "method": "value", "threshold": 10.0},
                {"pattern": "embed.*", "method": "value", "threshold": 10.0}]

# (CLI overrides, Clipper method and keys, whether some step must be clipped)
SAME_AS_TRAINER = [
    (["clip=none"], "none", {}, False),
    (["clip=value"], "value", {}, True),
    (["clip=value", "clip.clip_value=0.01"], "value", {"clip_value": 0.01}, True),
    (["clip=norm"], "norm", {}, True),
    (["clip=norm", "clip.norm_type=1", "clip.max_norm=20"], "norm",
     {"norm_type": 1, "max_norm": 20}, True),
    (["clip=norm", "clip.norm_type=inf", "clip.max_norm=0.1"], "norm",
     {"norm_type": math.inf, "max_norm": 0.1}, True),
    (["clip=norm", "clip.scope=per_tensor", "clip.max_norm=0.3"], "norm",
     {"scope": "per_tensor", "max_norm": 0.3}, True),
    (["clip=norm"], "norm", {"relative": False}, True),
    (["clip=norm", "clip.relative=true"], "norm", {"relative": True}, True),
    (["clip=norm", "clip.relative=true", "clip.calibration_steps=5", "clip.max_norm=0.8"],
     "norm", {"relative": True, "calibration_steps": 5, "max_norm": 0.8}, True),
    (["clip=combined"], "combined", {}, True),
    (["clip=combined", "clip.order=norm_then_value", "clip.max_norm=0.5",
      "clip.clip_value=0.01"], "combined",
     {"order": "norm_then_value", "max_norm": 0.5, "clip_value": 0.01}, True),
    (["clip=groups"], "groups", {}, False),
    (["clip=graves"], "groups", {"rules": GRAVES_RULES}, True),
    (["clip=groups", 'clip.rules=[{pattern:"rnn.*",method:norm,threshold:0.5}]',
      "clip.default_method=value", "clip.default_threshold=0.05"], "groups",
     {"rules": [{"pattern": "rnn.*", "method": "norm", "threshold": 0.5}],
      "default_method": "value", "default_threshold": 0.05}, True),
    (["clip=autoclip"], "autoclip", {}, True),
    (["clip=autoclip", "clip.percentile=50", "clip.history=5"], "autoclip",
     {"percentile": 50, "history": 5}, True),
    (["clip=agc"], "agc", {}, True),
    (["clip=agc", "clip.clip_factor=0.001", "clip.eps=0.01", "clip.exclude_head=false"],
     "agc", {"clip_factor": 0.001, "eps": 0.01, "exclude_head": False}, True),
    (["clip=zclip"], "zclip", {}, True),
    (["clip=zclip", "clip.warmup_steps=5", "clip.mode=percentile", "clip.z_thresh=1.0"],
     "zclip", {"warmup_steps": 5, "mode": "percentile", "z_thresh": 1.0}, True),
    (["clip=zclip", "clip.warmup_steps=3", "clip.clip_option=mean", "clip.max_grad_norm=2",
      "clip.skip_update_on_spike=true"], "zclip",
     {"warmup_steps": 3, "clip_option": "mean", "max_grad_norm": 2,
      "skip_update_on_spike": True}, True),
]


def test_every_registered_method_is_compared_with_the_trainer():
    assert {case[1] for case in SAME_AS_TRAINER} == set(CLIP.names())


@pytest.mark.parametrize("overrides, method, keys, clips", SAME_AS_TRAINER,
                         ids=[" ".join(c[0]) for c in SAME_AS_TRAINER])
def test_same_gradients_and_numbers_as_the_trainer(overrides, method, keys, clips):
    cfg = compose(overrides)
    clipper = Clipper(method, **keys)
    assert OmegaConf.to_container(clipper.config) == OmegaConf.to_container(cfg.clip)
    torch.manual_seed(0)
    ours, theirs = Tiny(), None
    theirs = copy.deepcopy(ours)
    # as Trainer._build and Trainer.step do it
    named = [(n, p) for n, p in theirs.named_parameters() if p.requires_grad]
    clip = build_clipper(cfg.clip, named)
    flags = []
    for grads in gradient_stream(ours, 60):
        set_grads(ours, grads)
        set_grads(theirs, grads)
        params = [p for _, p in named if p.grad is not None]
        trainer_grads = [p.grad for p in params]
        pre = global_norm(trainer_grads, 2.0)
        post, changed = clip(params, trainer_grads, pre)
        stats = clipper(ours.named_parameters())
        assert isinstance(stats, ClipStats)
        assert torch.equal(stats.pre_norm, pre)
        assert torch.equal(stats.post_norm, post)
        assert torch.equal(stats.clipped, changed)
        for (n, a), (_, b) in zip(ours.named_parameters(), theirs.named_parameters()):
            assert (a.grad is None) == (b.grad is None), n
            assert a.grad is None or torch.equal(a.grad, b.grad), n
        flags.append(bool(changed))
    assert any(flags) == clips  # the comparison covered clipped steps where it should


def test_the_dataclass_defaults_are_the_yaml_defaults():
    """Clipper(method) reads no YAML: its defaults must be conf/clip/<method>.yaml's."""
    for method in CLIP.names():
        assert OmegaConf.to_container(Clipper(method).config) == \
            OmegaConf.to_container(compose([f"clip={method}"]).clip), method


# ---- the same error lines as the CLI -----------------------------------------------------
BAD = [
    (["clip=zclip", "clip.z_thresh=-1"], "zclip", {"z_thresh": -1}),
    (["clip=norm", "clip.max_norm=abc"], "norm", {"max_norm": "abc"}),
    (["clip=norm", "clip.nosuch=1"], "norm", {"nosuch": 1}),
    (["clip=norm", "+clip.nosuch=1"], "norm", {"nosuch": 1}),
    (["clip=zclip", "clip.alpha=1.5", "clip.z_thresh=0"], "zclip",
     {"alpha": 1.5, "z_thresh": 0}),
    (["clip=norm", "clip.norm_type=3"], "norm", {"norm_type": 3}),
    (["clip=norm", "clip.relative=true", "clip.scope=per_tensor"], "norm",
     {"relative": True, "scope": "per_tensor"}),
    (["clip=norm", "clip.relative=maybe"], "norm", {"relative": "maybe"}),
    (["clip=norm", "clip.max_norm=null"], "norm", {"max_norm": None}),
    (["clip=norm", "clip.max_norm=inf"], "norm", {"max_norm": math.inf}),
    (["clip=norm", "clip.max_norm=nan"], "norm", {"max_norm": math.nan}),
    (["clip=norm", "clip.max_norm=[1]"], "norm", {"max_norm": [1]}),
    (["clip=norm", "clip.calibration_steps=true"], "norm", {"calibration_steps": True}),
    (["clip=norm", "clip.calibration_steps=0"], "norm", {"calibration_steps": 0}),
    (["clip=norm", "clip.method=value"], "norm", {"method": "value"}),
    (["clip=value", "clip.clip_value=-0.5"], "value", {"clip_value": -0.5}),
    (["clip=autoclip", "clip.history=1.5"], "autoclip", {"history": 1.5}),
    (["clip=autoclip", "clip.history=99999999999999999999"], "autoclip",
     {"history": 99999999999999999999}),
    (["clip=autoclip", "clip.percentile=101"], "autoclip", {"percentile": 101}),
    (["clip=agc", "clip.exclude_head=maybe"], "agc", {"exclude_head": "maybe"}),
    (["clip=combined", "clip.order=sideways"], "combined", {"order": "sideways"}),
    (["clip=zclip", "clip.max_grad_norm=abc"], "zclip", {"max_grad_norm": "abc"}),
    (["clip=zclip", "clip.max_grad_norm=-1"], "zclip", {"max_grad_norm": -1}),
    (["clip=zclip", "clip.mode=median"], "zclip", {"mode": "median"}),
    (["clip=groups", "clip.rules=[{pattern:x,method:bad,threshold:1}]"], "groups",
     {"rules": [{"pattern": "x", "method": "bad", "threshold": 1}]}),
    (["clip=groups", "clip.rules=[{pattern:x,threshold:abc}]"], "groups",
     {"rules": [{"pattern": "x", "threshold": "abc"}]}),
    (["clip=groups", "clip.rules=[{pattern:x,nope:1}]"], "groups",
     {"rules": [{"pattern": "x", "nope": 1}]}),
    (["clip=groups", "clip.rules=5"], "groups", {"rules": 5}),
    (["clip=groups", "clip.default_method=norm", "clip.default_threshold=0"], "groups",
     {"default_method": "norm", "default_threshold": 0}),
    (["clip=norm", "clip.max_norm=${oc.env:SEQBENCH_TEST_UNSET_VAR}"], "norm",
     {"max_norm": "${oc.env:SEQBENCH_TEST_UNSET_VAR}"}),
]


def clipper_lines(method: str, keys: dict) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        Clipper(method, **keys)
    return [str(e) for e in info.value.errors]


@pytest.mark.parametrize("overrides, method, keys", BAD, ids=[" ".join(c[0]) for c in BAD])
def test_the_same_error_lines_as_the_cli(overrides, method, keys):
    cli = check_config(overrides)  # what `seqbench train` prints, one line per error
    assert cli, "the CLI accepts this; the case is wrong"
    assert clipper_lines(method, keys) == cli


def test_an_unknown_method_reads_as_on_the_cli_but_lists_methods_not_presets():
    """The CLI offers every conf/clip/*.yaml; a Clipper the registered methods, because a
    preset (graves) is a YAML file of another method's keys: Clipper("groups", rules=...)."""
    (cli,) = check_config(["clip=bogus"])
    (ours,) = clipper_lines("bogus", {})
    presets = set(group_options("clip")) - set(CLIP.names())
    head, options = cli.split(": one of ")
    kept = [o for o in options.split(", ") if o not in presets]
    assert ours == f"{head}: one of {', '.join(kept)}"
    assert ours == "clip=bogus: one of " + ", ".join(CLIP.names())


@pytest.mark.parametrize("args, method, keys", [
    (["clip=zclip", "clip.z_thresh=-1", "clip.alpha=2"], "zclip", {"z_thresh": -1, "alpha": 2}),
    (["clip=norm", "clip.max_norm=abc"], "norm", {"max_norm": "abc"}),
])
def test_the_cli_prints_these_lines(tmp_path, args, method, keys):
    """check_config is what the CLI prints (checked on two cases as a real process)."""
    run = subprocess.run([sys.executable, "-m", "seqbench", "train", *args,
                          f"hydra.run.dir={tmp_path}"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert run.returncode == 2
    assert run.stderr.splitlines() == [f"seqbench: error: {x}"
                                       for x in clipper_lines(method, keys)]


def test_checks_that_need_a_trainer_are_left_to_it():
    Clipper("norm", relative=True, calibration_steps=10**6)  # < trainer.max_steps: no trainer
    Clipper("norm", error_if_nonfinite=True)  # vs trainer.on_nonfinite=skip: no trainer


def test_values_are_converted_as_on_the_command_line():
    c = Clipper("norm", max_norm="2.5", norm_type=1, relative="yes", calibration_steps="7")
    assert (c.config.max_norm, c.config.norm_type, c.config.relative,
            c.config.calibration_steps) == (2.5, 1.0, True, 7)


# ---- saved and loaded state ----------------------------------------------------------------
STATEFUL = [("autoclip", {}), ("autoclip", {"history": 4}), ("zclip", {}),
            ("zclip", {"warmup_steps": 5}),
            ("norm", {"relative": True, "calibration_steps": 5})]


def run(clipper: Clipper, model: nn.Module, grads_list: list[dict]) -> list[tuple]:
    out = []
    for grads in grads_list:
        set_grads(model, grads)
        s = clipper(model.named_parameters())
        out.append((s, [p.grad for p in model.parameters() if p.grad is not None]))
    return out


@pytest.mark.parametrize("stop", [3, 32])  # in warm-up/calibration, and after it
@pytest.mark.parametrize("load", ["before the first call", "after a call"])
@pytest.mark.parametrize("method, keys", STATEFUL, ids=[f"{m} {k}" for m, k in STATEFUL])
def test_state_round_trip_continues_as_an_uninterrupted_clipper(tmp_path, method, keys,
                                                                  stop, load):
    torch.manual_seed(0)
    model = Tiny()
    grads = list(gradient_stream(model, 45))
    straight = run(Clipper(method, **keys), copy.deepcopy(model), grads)

    first = Clipper(method, **keys)
    first_model = copy.deepcopy(model)
    run(first, first_model, grads[:stop])
    saved = first.state_dict()
    kept = copy.deepcopy(saved)
    run(first, first_model, grads[stop:stop + 2])  # must not change `saved`
    for k in kept:
        torch.testing.assert_close(saved[k], kept[k], rtol=0, atol=0, equal_nan=True)
    torch.save(saved, tmp_path / "clip.pt")

    resumed = Clipper(method, **keys)
    resumed_model = copy.deepcopy(model)
    if load == "after a call":
        run(resumed, resumed_model, grads[:1])
    resumed.load_state_dict(torch.load(tmp_path / "clip.pt", weights_only=True))
    again = run(resumed, resumed_model, grads[stop:])
    for (a, ga), (b, gb) in zip(straight[stop:], again):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
        assert all(torch.equal(x, y) for x, y in zip(ga, gb))


def test_which_methods_keep_state():
    stateful = {m for m in CLIP.names() if Clipper(m).stateful}
    assert stateful == {"autoclip", "zclip"}
    assert Clipper("norm", relative=True).stateful


@pytest.mark.parametrize("method", ["none", "value", "norm", "combined", "groups", "agc"])
def test_a_stateless_method_has_an_empty_state(method):
    clipper = Clipper(method)
    assert clipper.state_dict() == {}
    clipper.load_state_dict({})
    set_grads(model := Tiny(), next(gradient_stream(Tiny(), 1)))
    clipper(model.named_parameters())
    assert clipper.state_dict() == {}
    clipper.load_state_dict({})
    with pytest.raises(ValueError, match="keeps no state"):
        clipper.load_state_dict({"seen": torch.tensor(3)})


def test_an_empty_state_is_a_fresh_one():
    model = Tiny()
    grads = list(gradient_stream(model, 8))
    fresh = run(Clipper("autoclip"), copy.deepcopy(model), grads)
    clipper, m = Clipper("autoclip"), copy.deepcopy(model)
    run(clipper, m, grads[:3])
    clipper.load_state_dict(Clipper("autoclip").state_dict())  # {}: never ran
    again = run(clipper, m, grads)
    assert all(torch.equal(a.post_norm, b.post_norm) for (a, _), (b, _) in zip(fresh, again))


# ---- parameters -----------------------------------------------------------------------------
def test_frozen_parameters_are_skipped():
    model = Tiny()
    grads = next(gradient_stream(model, 1))
    stale = torch.full((1, 3), 1e6)  # a frozen parameter's old gradient: out of norm and clip
    set_grads(model, {**grads, "frozen.weight": stale})
    stats = Clipper("value", clip_value=1e-3)(model.named_parameters())
    assert torch.equal(model.frozen.weight.grad, stale)
    assert torch.equal(stats.pre_norm, global_norm(list(grads.values()), 2.0))


def test_other_parameters_than_the_first_call_are_an_error():
    a, b = Tiny(), Tiny()
    for m in (a, b):
        set_grads(m, next(gradient_stream(m, 1)))
    clipper = Clipper("norm")
    clipper(a.named_parameters())
    clipper(a.named_parameters())  # the same ones again: fine
    with pytest.raises(ValueError, match="other tensors: embed.weight"):
        clipper(b.named_parameters())
    with pytest.raises(ValueError, match="removed: decoder.weight, decoder.bias"):
        clipper((n, p) for n, p in a.named_parameters() if not n.startswith("decoder."))
    a.embed.weight.requires_grad_(False)
    with pytest.raises(ValueError, match="removed: embed.weight"):
        clipper(a.named_parameters())


def test_plain_parameters_are_refused():
    with pytest.raises(TypeError, match="named_parameters"):
        Clipper("norm")(Tiny().parameters())


def test_error_if_nonfinite_raises_as_torch_does():
    model = Tiny()
    grads = next(gradient_stream(model, 1))
    grads["embed.weight"][0, 0] = math.nan
    set_grads(model, grads)
    Clipper("norm")(model.named_parameters())  # off: recorded, not raised
    set_grads(model, grads)
    with pytest.raises(RuntimeError, match="non-finite"):
        Clipper("norm", error_if_nonfinite=True)(model.named_parameters())


def test_a_group_rule_that_matches_nothing_warns():
    model = Tiny()
    set_grads(model, next(gradient_stream(model, 1)))
    clipper = Clipper("groups", rules=[{"pattern": "lstm.*", "method": "value",
                                        "threshold": 1.0}])
    with pytest.warns(UserWarning, match="'lstm.\\*' matches no parameter"):
        clipper(model.named_parameters())


# ---- against torch.nn.utils ------------------------------------------------------------------
def l2(grads: list) -> torch.Tensor:
    """torch's global L2 norm (its get_total_norm refuses an empty list: 0 then)."""
    return torch.nn.utils.get_total_norm(grads, 2.0) if grads else torch.zeros(())


@given(shapes=st.lists(st.lists(st.integers(1, 5), max_size=3), min_size=1, max_size=5),
       has_grad=st.lists(st.booleans(), min_size=5, max_size=5),
       seed=st.integers(0, 2**16), log_scale=st.floats(-6, 6),
       threshold=st.floats(1e-3, 1e3), norm_type=st.sampled_from([1.0, 2.0, math.inf]))
def test_value_and_norm_clipping_equal_torch(shapes, has_grad, seed, log_scale, threshold,
                                             norm_type):
    g = torch.Generator().manual_seed(seed)
    grads = [torch.randn(s, generator=g) * math.exp(log_scale) for s in shapes]
    for method, keys in (("norm", {"max_norm": threshold, "norm_type": norm_type}),
                         ("value", {"clip_value": threshold})):
        ours = [nn.Parameter(torch.zeros(s)) for s in shapes]
        ref = [nn.Parameter(torch.zeros(s)) for s in shapes]
        for p, q, gr, keep in zip(ours, ref, grads, has_grad):
            p.grad, q.grad = (gr.clone(), gr.clone()) if keep else (None, None)
        with_grad = [q for q in ref if q.grad is not None]
        pre = l2([q.grad for q in with_grad])
        changed = False  # torch refuses an empty list: nothing to clip then
        if method == "norm" and with_grad:
            total = torch.nn.utils.clip_grad_norm_(with_grad, threshold, norm_type)
            changed = bool(threshold / (total + 1e-6) < 1)
        elif with_grad:
            changed = any(bool((q.grad.abs() > threshold).any()) for q in with_grad)
            torch.nn.utils.clip_grad_value_(with_grad, threshold)
        stats = Clipper(method, **keys)([(f"p{i}", p) for i, p in enumerate(ours)])
        for p, q in zip(ours, ref):
            assert (p.grad is None and q.grad is None) or torch.equal(p.grad, q.grad)
        assert torch.equal(stats.pre_norm, pre)
        post = l2([q.grad for q in with_grad])
        assert torch.allclose(stats.post_norm, post, rtol=1e-5)
        assert bool(stats.clipped) == changed


# ---- no host sync ------------------------------------------------------------------------------


NO_SYNC = [(m, {}) for m in CLIP.names()] + [
    ("norm", {"relative": True, "calibration_steps": 3}), ("norm", {"norm_type": math.inf}),
    ("norm", {"scope": "per_tensor"}), ("zclip", {"warmup_steps": 2}),
    ("groups", {"rules": GRAVES_RULES, "default_method": "norm"})]


@pytest.mark.parametrize("method, keys", NO_SYNC, ids=[f"{m} {k}" for m, k in NO_SYNC])
def test_a_call_reads_nothing_on_the_host(host_reads, method, keys):
    model = Tiny()
    clipper = Clipper(method, **keys)
    for grads in gradient_stream(model, 8):
        set_grads(model, grads)
        clipper(model.named_parameters())
    assert host_reads == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method, keys", NO_SYNC, ids=[f"{m} {k}" for m, k in NO_SYNC])
def test_cuda_calls_make_no_sync(method, keys):
    model = Tiny().cuda()
    clipper = Clipper(method, **keys)
    grads = [{n: g.cuda() for n, g in step.items()} for step in gradient_stream(model, 8)]
    set_grads(model, grads[0])
    clipper(model.named_parameters())  # the first call builds the method: not per-step
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in grads[1:]:
            set_grads(model, step)
            stats = clipper(model.named_parameters())
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert stats.pre_norm.device.type == "cuda" and stats.clipped.device.type == "cuda"
