"""The sweep's fast composition (`seqbench.jobconfigs`) against Hydra composing every job.

For generated override sets, both paths must give the same config (values, types, the
structured schemas) or the same error lines, through the same validation the sweeper
runs. Hydra's full composition is the independent reference here.
"""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf, open_dict

from seqbench.confdir import conf_dir
from seqbench.config import flatten, validate
from seqbench.errors import ConfigError, ConfigErrors
from seqbench.hydra_input import explain_hydra_error
from seqbench.jobconfigs import JobConfigs

SMALL = ["task.seq_len=16", "task.batch_size=4", "model.hidden_size=8", "model.embed_dim=4"]

CHOICES = {
    "optim": ["sgd", "adam", "rmsprop", "adamw", "nosuch"],
    "clip": ["none", "value", "norm", "autoclip", "zclip", "agc", "combined", "groups"],
    "model": ["lstm", "gru", "rnn_tanh", "mlp"],
    "task": ["tinyshakespeare", "adding", "regression_mlp"],
}
VALUES = {
    "optim.lr": ["0.5", "4", "-1", "abc", "null", "1e400", "${seed}"],
    "optim.momentum": ["0.9", "0", "x"],
    "optim.nesterov": ["true", "false"],
    "clip.max_norm": ["1", "0", "-2.5", "0.25"],
    "clip.clip_value": ["0.5", "0", "[1,2]"],
    "clip.relative": ["true", "false"],
    "clip.scope": ["global", "per_tensor", "nope"],
    "clip.percentile": ["10", "150"],
    "seed": ["0", "3", "-1", "99999999999999999999"],
    "trainer.max_steps": ["10", "0"],
    "trainer.accum_steps": ["1", "3"],
    "trainer.freeze": ["[embed.*]", "[nothing*]", "[]"],
    "trainer.amp": ["off", "fp16"],
    "model.num_layers": ["1", "2", "5000"],
    "model.hidden_size": ["8", "-1"],
    "model.forget_bias": ["1.0", "null"],
    "optim.nosuch": ["1"],
    "task.seq_len": ["16", "0"],
}
OTHER = ["+optim.extra=1", "~clip.max_norm", "++seed=5", "optim=[sgd]", "hydra.job.name=x"]


@pytest.fixture(scope="module")
def hydra_env():
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        master = compose("train", overrides=["+sweep=demo"], return_hydra_config=True)
        yield GlobalHydra.instance().config_loader(), master
    GlobalHydra.instance().clear()


@pytest.fixture(scope="module")
def shared(hydra_env):
    """One JobConfigs and one validation cache per path across examples, as in a sweep
    (built tasks are reused: each example would otherwise rebuild them)."""
    return JobConfigs(*hydra_env), {}, {}


def outcome(make, overrides: list[str], cache: dict):
    """("ok", flat config, schema of every group) or ("error", sorted error lines), as
    the sweeper's plan computes them."""
    try:
        cfg = make(overrides)
        resolved = validate(cfg, cache=cache)
    except ConfigErrors as e:
        return ("error", sorted(str(x) for x in e.errors))
    except ConfigError as e:
        return ("error", [str(e)])
    except Exception as e:
        line = explain_hydra_error(e, overrides)
        if line is None:
            raise
        return ("error", [line])
    schemas = {g: OmegaConf.get_type(cfg, g) for g in ("task", "model", "optim", "clip")}
    return ("ok", flatten(resolved), schemas, OmegaConf.is_struct(cfg))


def full_hydra(loader, master):
    def make(overrides):
        cfg = loader.load_sweep_config(master, list(overrides))
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg

    return make


override_sets = st.tuples(
    st.dictionaries(st.sampled_from(sorted(CHOICES)), st.none(), max_size=4).flatmap(
        lambda d: st.tuples(*[st.sampled_from([f"{g}={o}" for o in CHOICES[g]])
                              for g in sorted(d)])),
    st.dictionaries(st.sampled_from(sorted(VALUES)), st.none(), max_size=5).flatmap(
        lambda d: st.tuples(*[st.sampled_from([f"{k}={v}" for v in VALUES[k]])
                              for k in sorted(d)])),
    st.lists(st.sampled_from(OTHER), max_size=1),
    st.randoms(use_true_random=False),
)


@settings(max_examples=60)
@given(override_sets)
def test_fast_path_equals_hydra(hydra_env, shared, sets):
    choices, values, other, rnd = sets
    overrides = ["+sweep=demo", *SMALL, *choices, *values, *other]
    rnd.shuffle(overrides)  # Hydra applies groups first and values in order: so must we
    fast, cache_fast, cache_full = shared
    before = (fast.fast, fast.full)
    assert outcome(fast, overrides, cache_fast) == \
        outcome(full_hydra(*hydra_env), overrides, cache_full)
    # plain jobs never compose in full; others always do
    assert (fast.fast - before[0], fast.full - before[1]) == ((0, 1) if other else (1, 0))


def test_one_composition_per_set_of_group_choices(hydra_env, monkeypatch):
    loader, master = hydra_env
    configs = JobConfigs(loader, master)
    calls = []
    real = loader.load_sweep_config
    monkeypatch.setattr(loader, "load_sweep_config",
                        lambda m, o: calls.append(list(o)) or real(m, o))
    for optim in ("sgd", "adam"):
        for lr in ("0.1", "0.2", "0.3"):
            for seed in range(3):
                cfg = configs(["+sweep=demo", f"optim={optim}", f"optim.lr={lr}",
                               f"seed={seed}"])
                assert cfg.optim.lr == float(lr) and cfg.seed == seed
                assert OmegaConf.get_type(cfg, "optim").__name__.lower().startswith(optim)
    assert [c[-1] for c in calls] == ["optim=sgd", "optim=adam"]
    assert (configs.fast, configs.full) == (18, 0)
    configs(["+sweep=demo", "+optim.extra=1"])  # anything but choices and values: Hydra
    assert configs.full == 1


def test_jobs_never_share_a_config_object(hydra_env):
    loader, master = hydra_env
    configs = JobConfigs(loader, master)
    a = configs(["+sweep=demo", "optim=sgd", "optim.lr=0.5"])
    b = configs(["+sweep=demo", "optim=sgd"])
    assert a.optim.lr == 0.5 and b.optim.lr != 0.5


def test_a_bad_group_choice_fails_every_job_with_it_alike(hydra_env):
    loader, master = hydra_env
    configs = JobConfigs(loader, master)
    lines = {outcome(configs, ["+sweep=demo", "optim=nosuch", f"seed={s}"], {})[1][0]
             for s in range(3)}
    assert lines == {"optim=nosuch: one of adam, adamw, rmsprop, sgd"}
