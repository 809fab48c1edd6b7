"""Hostile command lines: whatever the overrides, `train` exits 0 or 2, never a traceback.

The house rule for bad input: one line per problem (`seqbench: error: KEY=VALUE: what is
allowed`), exit status 2, nothing written. Hypothesis builds override lists from every
schema field of every group option (and Hydra's own keys) with wrong types, out-of-range
numbers, interpolations, shell and path strings, unknown keys, the `+`/`++`/`~` forms and
malformed tokens. Accepted lists must compose to a config from which the run's pieces
(task, model, optimizer, schedule, clipper, seed) are built without an error -- checked
here by building them directly, not by asking `validate` again.

The in-process tests replace only the final `train_app()` call (the training itself);
the real `python -m seqbench train` runs below prove the same end to end, and that no
config value is ever imported or executed (a marker file a payload would create).
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf, open_dict

import seqbench.app
from seqbench.cli import main
from seqbench.confdir import conf_dir
from seqbench.config import GROUPS, compose, frozen_names
from seqbench.data.tasks import TASKS, build_task
from seqbench.hydra_input import check_config
from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[1]
MARKER = "PWNED"  # what every code-running payload below would create in the cwd
LINE = re.compile(r"seqbench: error: \S.*")


# ---- what the config offers: groups, options and every schema field ---------------------

def _schema_of(group: str, option: str) -> type:
    """The dataclass an option extends (`defaults: [/schema/GROUP/NAME@_here_]`)."""
    from hydra.core.config_store import ConfigStore

    text = (conf_dir() / group / f"{option}.yaml").read_text()
    first = yaml.safe_load(text)["defaults"][0]
    name = re.fullmatch(r"/schema/\w+/(\w+)@_here_", first).group(1)
    node = ConfigStore.instance().load(f"schema/{group}/{name}.yaml").node
    return OmegaConf.get_type(node)


OPTIONS = {g: sorted(p.stem for p in (conf_dir() / g).glob("*.yaml")) for g in GROUPS}
# (group, option, field, type) for every field of every option; top-level seed too
LEAVES = [(g, o, f.name, f.type) for g in GROUPS for o in OPTIONS[g]
          for f in dataclasses.fields(_schema_of(g, o))] + [(None, None, "seed", "int")]
assert {lf[2] for lf in LEAVES} >= {"lr", "max_norm", "hidden_size", "seq_len", "freeze"}


# ---- hostile values ---------------------------------------------------------------------

NUMBERS = ["0", "-1", "1", "-0.0", "0.5", "1.5", "3", "1e308", "1e309", "-1e309", "1e-320",
           "nan", "NaN", "inf", "-inf", "+inf", "9223372036854775807",
           "9223372036854775808", "18446744073709551616", "-9223372036854775809",
           "99999999999999999999999", "1_000", "0x10", "true", "false", "null", "2**63",
           "100000", "1000000000"]
STRINGS = ["''", '""', "' '", "'\\n'", "'\\t'", "é", "日本語", "🙂", "'a\u0000b'",
           "'\u202eevil'", "${oc.env:HOME}", "${oc.env:SEQBENCH_SURELY_UNSET}",
           "${oc.env:SEQBENCH_SURELY_UNSET,0.5}", "${foo}", "${oc.decode:'1.5'}",
           "${oc.decode:'[1, 2]'}", "${oc.select:seed,3}", "${now:%Y}", "${hydra:runtime.cwd}",
           "${hydra:job.name}", "${seed}", "${task}", "${optim.lr}", "'${oc.env:HOME}'",
           "\\${foo}", "${oc.create:{a: 1}}", "${oc.dict.keys:optim}",
           "'; touch PWNED'", "$(touch PWNED)", "'`touch PWNED`'", "'|touch PWNED'",
           "../../etc", "/etc/passwd", "a/b", "..", ".", "/", "~", "'" + "x" * 300 + "'",
           "x" * 5000, "[1,2]", "[]", "{a:1}", "{}", "[[1]]", "[embed.*]", "[nope.*]",
           "['*']", "'__import__(\"os\").system(\"touch PWNED\")'",
           "os.system", "builtins.eval", "'!!python/object/apply:os.system [touch PWNED]'",
           "&a", "*a", "'#'", "a,b", "a=b", "'a,b'", "\"${oc.env:HOME}\""]
VALUES = st.one_of(st.sampled_from(NUMBERS), st.sampled_from(STRINGS),
                   st.text(max_size=12), st.integers().map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr))
# values a field of some type accepts, so that accepted configs are exercised as well
PLAUSIBLE = st.sampled_from(["1", "2", "4", "8", "16", "0", "0.1", "0.5", "0.9", "1.0", "true",
                             "false", "null", "[]", "[embed.*]", "cpu", "auto", "stop"])
BAD_OPTIONS = ["", "nope", "../x", "../../conf/train", "/etc/passwd", "SGD", "sgd ", " sgd",
               "sgd/..", ".", "..", "sgd.yaml", "${oc.env:HOME}", "null", "[sgd]", "{a:1}",
               "adam,sgd", "../task/adding", "../optim/sgd", "schema/optim/sgd",
               "'sgd'", "glob(*)", "choice(sgd)", "range(1,3)"]
HYDRA_GROUPS = ["hydra/launcher", "hydra/sweeper", "hydra/job_logging", "hydra/hydra_logging",
                "hydra/help", "hydra/output", "sweep", "+sweep", "schema/optim", "hydra"]
HYDRA_KEYS = ["hydra.run.dir", "hydra.job.name", "hydra.output_subdir", "hydra.verbose",
              "hydra.job_logging.root.level", "hydra.job.chdir", "hydra.mode",
              "+hydra.callbacks.x._target_", "hydra.searchpath", "hydra.sweep.dir",
              "+hydra.job.env_set.LD_PRELOAD", "+hydra.job.env_set.FOO",
              "hydra.launcher._target_", "hydra.job_logging.handlers.console.class",
              "hydra.job_logging.handlers.console.stream", "+hydra.job_logging.filters.x.()",
              "hydra.job_logging.formatters.simple.format"]
MALFORMED = ["=x", "=", "==", "key", "key==", "a.b.=1", "+", "~", "++", "+=1", "~=1", ".=1",
             "a..b=1", "optim.=1", "@=1", "optim@=x", "optim@foo=sgd", "optim@_global_=sgd",
             "hydra=1", "hydra.=1", "'q'=1", "a b=1", "optim=sgd,adam", "optim=glob(*)",
             "seed=range(1,3)", "seed=1,2", "seed=[1,2]", "seed=interval(0,1)",
             "seed=shuffle(1,2)", "optim=choice(sgd,adam)", "seed=int(3.5)", "~seed",
             "~optim", "~optim.lr", "~trainer", "++seed=1", "+seed=1", "++optim.lr=1",
             "+optim.lr=1", "~optim.lr=0.003", "~hydra", "-m", "--multirun", "-x",
             "--cfg=job", "--info=bogus", "_target_=os.system", "+_target_=os.system",
             "optim._target_=os.system", "+optim._target_=os.system", "seqbench_train=x",
             "task.name=__import__('os').system('touch PWNED')", "trainer.freeze=x"]
UNKNOWN = st.from_regex(r"(trainer|task|model|optim|clip|nope|_target_)(\.[a-z_]{1,8}){0,2}",
                        fullmatch=True)


@st.composite
def leaf_overrides(draw) -> list[str]:
    """A group option and a hostile value for one of its fields (a known key)."""
    group, option, key, _ = draw(st.sampled_from(LEAVES))
    prefix = draw(st.sampled_from(["", "", "", "+", "++", "~"]))
    value = draw(st.one_of(VALUES, PLAUSIBLE))
    full = key if group is None else f"{group}.{key}"
    out = [] if group is None else [f"{group}={option}"]
    out.append(f"~{full}" if prefix == "~" and draw(st.booleans()) else
               f"{prefix}{full}={value}")
    return out


@st.composite
def hostile_overrides(draw) -> list[str]:
    parts: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["leaf", "leaf", "leaf", "group", "hydra_group",
                                     "hydra_key", "malformed", "unknown"]))
        if kind == "leaf":
            parts += draw(leaf_overrides())
        elif kind == "group":
            group = draw(st.sampled_from(GROUPS))
            option = draw(st.one_of(st.sampled_from(OPTIONS[group]),
                                    st.sampled_from(BAD_OPTIONS)))
            parts.append(f"{group}={option}")
        elif kind == "hydra_group":
            group = draw(st.sampled_from(HYDRA_GROUPS))
            option = draw(st.sampled_from(["basic", "joblib", "seqbench", "none", "demo",
                                           *BAD_OPTIONS]))
            parts.append(f"{group}={option}")
        elif kind == "hydra_key":
            parts.append(f"{draw(st.sampled_from(HYDRA_KEYS))}={draw(VALUES)}")
        elif kind == "malformed":
            parts.append(draw(st.sampled_from(MALFORMED)))
        else:
            parts.append(f"{draw(UNKNOWN)}={draw(VALUES)}")
    return parts


# ---- the independent check of an accepted config ----------------------------------------

@cache
def _task(task_yaml: str):
    return build_task(OmegaConf.create(task_yaml))


def assert_run_pieces_build(overrides: list[str]) -> None:
    """What Trainer.__init__ builds from the config, built here (the model on the meta
    device): an accepted config must not fail a second after the run directory exists."""
    from seqbench.clipping import build_clipper
    from seqbench.optim import build_optimizer, build_schedule
    from seqbench.train import resolve_device

    cfg = compose(overrides, with_hydra=True)
    with open_dict(cfg):
        del cfg["hydra"]
    OmegaConf.resolve(cfg)
    t = cfg.trainer
    task = build_task(cfg.task) if cfg.task.name == "text_file" else _task(
        OmegaConf.to_yaml(cfg.task))
    with torch.device("meta"):
        model = task.build_model(cfg.model)
    named = list(model.named_parameters())
    frozen = frozen_names([n for n, _ in named], list(t.freeze)) if t.freeze else []
    named = [(n, p) for n, p in named if n not in frozen]
    optimizer = build_optimizer([p for _, p in named], cfg.optim)
    build_schedule(optimizer, cfg.optim, int(t.max_steps))
    build_clipper(cfg.clip, named)
    torch.Generator().manual_seed(int(cfg.seed))
    resolve_device(t.device)
    assert int(t.log_every) >= 1 and int(t.max_steps) >= 1
    assert 0 <= int(t.threads) <= 1024  # torch.set_num_threads crashes far above this
    assert TASKS.get(cfg.task.name)  # the name selects a registered task


# ---- in-process: the CLI's checks in front of Hydra ------------------------------------

@pytest.fixture
def no_training(monkeypatch):
    """Record the Hydra app call instead of training (the only part replaced here)."""
    calls = []
    monkeypatch.setattr(seqbench.app, "train_app", lambda: calls.append(list(sys.argv)))
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    return calls


def run_main(argv, capsys) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as e:  # the CLI returns its status; a SystemExit is a finding
        pytest.fail(f"SystemExit({e.code}) escaped main({argv!r})")
    out = capsys.readouterr()
    return rc, out.out, out.err


def assert_one_line_errors(rc: int, err: str, argv) -> None:
    assert rc in (0, 2), (argv, rc, err)
    assert "Traceback" not in err, (argv, err)
    if rc == 2:
        lines = err.splitlines()
        assert lines, argv
        for line in lines:
            assert LINE.fullmatch(line), (argv, line)
            assert line.isprintable(), (argv, line)


@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(overrides=hostile_overrides())
# one example per kind of bug found; REGRESSIONS below pins the exact line of each
@example(overrides=["optim.lr=${oc.env:HOME}"])  # was: InterpolationValidationError
@example(overrides=["task.name=adding"])  # was: ConfigAttributeError in the task builder
@example(overrides=["trainer.threads=65536"])  # was: accepted, torch segfaulted
@example(overrides=["optim=../task/adding"])  # was: loaded conf/task/adding.yaml
@example(overrides=["hydra/launcher=glob(*)"])  # was: HydraException in the new check
@example(overrides=["hydra.job.name=../../x"])  # was: wrote ../../x.log outside the run
def test_train_overrides_exit_0_or_2_with_one_line_each(overrides, no_training, capsys,
                                                        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    no_training.clear()  # the fixtures are shared by every example of one test
    argv = ["train", *overrides]
    rc, out, err = run_main(argv, capsys)
    event(f"exit {rc}")
    assert_one_line_errors(rc, err, argv)
    assert not list(tmp_path.iterdir()), argv  # nothing written, not even on exit 0
    if rc == 0 and not any(a.startswith("-") for a in overrides):
        assert no_training, argv  # an accepted command line reaches Hydra
        assert_run_pieces_build(overrides)
    elif rc == 2:
        assert not no_training, argv


@settings(max_examples=12, deadline=None, derandomize=True, database=None)
@given(overrides=st.lists(leaf_overrides(), min_size=1, max_size=2).map(
    lambda parts: [o for p in parts for o in p]))
def test_check_config_returns_lines_or_a_config_that_builds(overrides):
    lines = check_config(overrides)
    assert all(isinstance(x, str) and x and x.isprintable() for x in lines), lines
    if not lines:
        assert_run_pieces_build(overrides)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(overrides=hostile_overrides())
def test_many_more_hostile_overrides(overrides, no_training, capsys, tmp_path, monkeypatch):
    test_train_overrides_exit_0_or_2_with_one_line_each.hypothesis.inner_test(
        overrides, no_training, capsys, tmp_path, monkeypatch)


# ---- regressions, one per bug found: the exact line --------------------------------------

REGRESSIONS = [
    (["optim.lr=${oc.env:HOME}"], "optim.lr=${oc.env:HOME}: must be a number (it resolves to"),
    (["task.name=${foo}"], "task.name=${foo}: cannot be resolved: Interpolation key 'foo'"),
    (["seed=${seed}"], "seed=${seed}: cannot be resolved: Recursive interpolation"),
    (["task=text_file", "task.path=${oc.env:SEQBENCH_SURELY_UNSET}"],
     "task.path=${oc.env:SEQBENCH_SURELY_UNSET}: cannot be resolved: \"Environment variable"),
    (["task.name=adding"], "task.name=adding: one of enwik8, ptb_char, text8, tinyshakespeare"),
    (["clip.method=value"], "clip.method=value: one of norm with these clip settings"),
    (["optim.name=nope"], "optim.name=nope: one of adam with these optim settings"),
    (["seed=18446744073709551616"], "seed=18446744073709551616: integers must be in"),
    (["trainer.threads=65536"], "trainer.threads=65536: must be in [0, 1024]"),
    (["trainer.log_every=1000000000000"], "trainer.log_every=1000000000000: must be in"),
    (["model.hidden_size=1000000"], "model.hidden_size=1000000: too large: about 4,"),
    (["model.hidden_size=100000000000"], "model.hidden_size=100000000000: too large"),
    (["task=regression_mlp", "model=mlp", "task.n_samples=2147483648"],
     "task=regression_mlp: cannot be built with these sizes (MemoryError"),
    (["optim=../task/adding"], "optim=../task/adding: one of adam, adamw, rmsprop, sgd"),
    (["task=../task/adding"], "task=../task/adding: one of adding, copy,"),
    (["optim="], "optim='': one of adam, adamw, rmsprop, sgd"),
    (["+hydra.callbacks.x._target_=os.system"], "hydra.callbacks.x={'_target_': 'os.system'}"
                                                 ": not allowed"),
    (["hydra.searchpath=[pkg://os]"], "hydra.searchpath=pkg://os: only file:// directories"),
    (["hydra.job_logging.root.level=NOPE"], "hydra.job_logging.root.level=NOPE: one of DEBUG"),
    (["+hydra.job_logging.handlers.x.class=subprocess.run"],
     "hydra.job_logging.handlers.x.class=subprocess.run: one of logging.StreamHandler"),
    (["hydra.job_logging.handlers.console.stream=ext://os.system"],
     "hydra.job_logging.handlers.console.stream=ext://os.system: one of ext://sys.stdout"),
    (["+hydra.job.env_set.LD_PRELOAD=/tmp/x.so"], "hydra.job.env_set.LD_PRELOAD=/tmp/x.so: "
                                                  "not allowed"),
    (["hydra.job.name=../../x"], "hydra.job.name=../../x: a file name"),
    (["hydra.output_subdir=../x"], "hydra.output_subdir=../x: a file name"),
    (["hydra.run.dir=${oc.env:SEQBENCH_SURELY_UNSET}"],
     "hydra.run.dir=${oc.env:SEQBENCH_SURELY_UNSET}: cannot be resolved"),
    (["hydra.run.dir=" + "x" * 300], "hydra.run.dir=" + "x" * 300 + ": a directory path"),
    (["trainer.device='a\nb'"], "trainer.device='a\\nb': one of auto, cpu, cuda"),
    (["optim=sgd,adam"], "optim=sgd,adam: one value"),
    (["=x"], "override==x: expected KEY=VALUE or GROUP=OPTION"),
    (["+optim.lr=1"], "optim.lr=1: already set; use optim.lr=1 (without +)"),
    (["trainer=0"], "trainer=0: one of default"),  # was: ValueError inside Hydra
    (["--cfg", "optim.lr=1"], "option=--cfg: needs one of job, hydra, all"),  # was: usage
    (["--info", "bogus"], "--info=bogus: one of all, config, defaults"),  # was: usage
    (["--help", "optim=../x"], "optim=../x: one of adam"),  # info flags: no value checks,
    (["--cfg", "job", "hydra.searchpath=[pkg://evilmod]"],  # but no unsafe setting either
     "hydra.searchpath=pkg://evilmod: only file://"),
    (["optim=sgd", "optim.nesterov=true"], "optim.nesterov=True: needs optim.momentum > 0"),
    (["task=text_file", "task.path=" + "x" * 300],  # was: OSError, File name too long
     "task.path=" + "x" * 300 + ": cannot be read (File name too long)"),
    # trainer.spike (seqbench.spike) and trainer.init_from without a parent (seqbench.fork)
    (["trainer.spike.steps=[5]"], "trainer.spike.steps=[5]: names no disturbance"),
    (["trainer.spike.steps=[5]", "trainer.spike.grad_factor=0"],
     "trainer.spike.grad_factor=0.0: null or a finite number > 0"),
    (["trainer.spike.steps=[5]", "trainer.spike.lr_factor=nan"],
     "trainer.spike.lr_factor=nan: null or a finite number > 0"),
    (["trainer.spike.steps=[0]", "trainer.spike.grad_factor=2"],
     "trainer.spike.steps=[0]: each step in [1, trainer.max_steps=600]"),
    (["trainer.spike.steps=[5,5]", "trainer.spike.grad_factor=2"],
     "trainer.spike.steps=[5, 5]: a list of distinct steps"),
    (["trainer.spike.lr_factor=2"], "trainer.spike.lr_factor=2.0: needs trainer.spike.steps"),
    (["trainer.spike.steps=[5]", "trainer.spike.grad_factor=2", "trainer.spike.lr_steps=3"],
     "trainer.spike.lr_steps=3: only with trainer.spike.lr_factor"),
    (["task=adding", "model=gru", "trainer.spike.steps=[5]", "trainer.spike.corrupt_batch=true"],
     "trainer.spike.corrupt_batch=True: false for task adding: only tasks whose batches"),
    (["task=regression_mlp", "model=mlp", "trainer.spike.steps=[5]",
      "trainer.spike.corrupt_batch=true"],
     "trainer.spike.corrupt_batch=True: false for task regression_mlp"),
    (["trainer.spike.steps=5"], "trainer.spike.steps=5: must be a list"),
    (["trainer.spike=1"], "trainer.spike=1: a group of keys"),
    (["trainer.init_from=nope"], "trainer.init_from=nope: no such run directory"),
    (["trainer.init_from=''"], "trainer.init_from='': a run directory"),
    (["trainer.init_from=/"], "trainer.init_from=/: keeps no checkpoint to start from"),
    (["trainer.init_optimizer=true"],
     "trainer.init_optimizer=True: only with trainer.init_from=RUN_DIR"),
    (["trainer.keep_checkpoints=[601]"],
     "trainer.keep_checkpoints=[601]: each step in [1, trainer.max_steps=600]"),
]


@pytest.mark.parametrize(("overrides", "line"), REGRESSIONS, ids=lambda v: str(v)[:50])
def test_each_bug_found_is_now_one_line(overrides, line, no_training, capsys, tmp_path,
                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_main(["train", *overrides], capsys)
    assert rc == 2 and not no_training, err
    assert err.startswith("seqbench: error: " + line), err
    assert len(err.splitlines()) == 1, err
    assert not list(tmp_path.iterdir())


# ---- forks: a parent that is missing, unusable or does not match, refused in one line --

def _files(run_dir: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(run_dir)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def parents(tmp_path_factory) -> dict[str, Path]:
    """A tiny parent keeping step 12, a damaged copy, a directory keeping nothing, and a
    parent trained on a text file that has changed since."""
    from seqbench.train import Trainer

    root = tmp_path_factory.mktemp("parents")
    Trainer(compose([*TINY, "trainer.keep_checkpoints=[12]"]), root / "p").run()
    damaged = root / "damaged"
    damaged.mkdir()
    (damaged / "checkpoint-12.pt").write_bytes(os.urandom(512))
    (root / "nothing").mkdir()
    book = root / "book.txt"
    book.write_text("the quick brown fox jumps over the lazy dog. " * 100)
    Trainer(compose([*TINY, "task=text_file", f"task.path={book}",
                     "trainer.keep_checkpoints=[12]"]), root / "text").run()
    book.write_text("THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG! " * 100)
    return {"p": root / "p", "damaged": damaged, "nothing": root / "nothing",
            "text": root / "text", "book": book}


FORK = [*TINY, "trainer.max_steps=20"]
FORKS = [  # (overrides, the line); {p} etc. are the parents above
    (["trainer.init_from={p}@7"], "trainer.init_from={p}@7: has no checkpoint at step 7; "
                                  "kept: 12"),
    (["trainer.init_from={nothing}"], "trainer.init_from={nothing}: keeps no checkpoint"),
    (["trainer.init_from={damaged}"],
     "trainer.init_from={damaged}: checkpoint-12.pt is unreadable"),
    (["trainer.init_from={p}", "model.hidden_size=32"],
     "model.hidden_size=32: must be 16 as in the parent (trainer.init_from={p}): a fork "
     "starts from its weights, data and random streams"),
    (["trainer.init_from={p}", "model=gru"], "model.cell=gru: must be \"lstm\" as in the parent"),
    (["trainer.init_from={p}", "task.seq_len=8"], "task.seq_len=8: must be 16 as in the parent"),
    (["trainer.init_from={p}", "seed=1"], "seed=1: must be 0 as in the parent"),
    (["trainer.init_from={p}", "trainer.accum_steps=2"],
     "trainer.accum_steps=2: must be 1 as in the parent"),
    (["trainer.init_from={p}", "trainer.init_optimizer=true", "optim=sgd"],
     "optim.name=sgd: must be \"adam\" as in the parent (trainer.init_from={p}): "
     "trainer.init_optimizer=true takes its optimizer's state"),
    (["trainer.init_from={p}", "trainer.max_steps=12"],
     "trainer.max_steps=12: must be > 12, the parent's step"),
    (["trainer.init_from={p}", "trainer.spike.steps=[12]", "trainer.spike.grad_factor=2"],
     "trainer.spike.steps=[12]: each step in [13, trainer.max_steps=20] (after the parent's "
     "step 12"),
    (["trainer.init_from={p}", "trainer.keep_checkpoints=[5]"],
     "trainer.keep_checkpoints=[5]: each step in [13, trainer.max_steps=20]"),
    (["trainer.init_from={p}", "hydra.run.dir={p}"],
     "trainer.init_from={p}: another run's directory, not this run's own"),
    (["trainer.init_from={text}", "task=text_file", "task.path={book}"],
     "task.path={book}: a vocabulary of 28 tokens other than the parent's "
     "(trainer.init_from={text}): the parent was trained on other data"),
]


@pytest.mark.parametrize(("overrides", "line"), FORKS, ids=lambda v: str(v)[:60])
def test_each_bad_fork_is_one_line(overrides, line, parents, no_training, capsys, tmp_path,
                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = {k: _files(p) for k, p in parents.items() if p.is_dir()}
    rc, _, err = run_main(["train", *FORK, *(o.format(**parents) for o in overrides)],
                          capsys)
    assert rc == 2 and not no_training, err
    assert err.startswith("seqbench: error: " + line.format(**parents)), err
    assert len(err.splitlines()) == 1, err
    assert not list(tmp_path.iterdir())
    assert {k: _files(p) for k, p in parents.items() if p.is_dir()} == before


def test_a_good_fork_is_accepted(parents, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_config([*FORK, f"trainer.init_from={parents['p']}@12",
                         "trainer.spike.steps=[13]", "trainer.spike.corrupt_batch=true"]) == []


ACCEPTED = [  # legitimate values that look odd: accepted, and kept as the data they are
    (["task=text_file", "task.path='__import__(\"os\").system(\"touch PWNED\")'"], None),
    (["optim.lr=${oc.env:SEQBENCH_SURELY_UNSET,0.5}"], ("optim.lr", 0.5)),
    (["optim.lr=${oc.decode:'0.25'}"], ("optim.lr", 0.25)),
    (["hydra.run.dir=/tmp/elsewhere"], None),
    (["hydra/launcher=joblib"], None),
    (["hydra.job_logging.root.level=DEBUG"], None),
    (["+hydra.job.env_set.CUDA_VISIBLE_DEVICES=0"], None),
    (["hydra.searchpath=[file:///tmp]"], None),
    (["trainer.explode_factor=inf"], ("trainer.explode_factor", float("inf"))),
    (["trainer.max_steps=9223372036854775807"], ("trainer.max_steps", 2**63 - 1)),
]


@pytest.mark.parametrize(("overrides", "expect"), ACCEPTED, ids=lambda v: str(v)[:40])
def test_odd_but_legitimate_values_are_accepted_as_data(overrides, expect, tmp_path,
                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = check_config(overrides)
    if overrides[0].startswith("task=text_file"):  # the path names no file: data, not code
        assert lines == ["task.path='__import__(\"os\").system(\"touch PWNED\")': "
                         "no such file"]
    else:
        assert lines == []
        if expect:
            cfg = compose(overrides)
            assert OmegaConf.select(cfg, expect[0]) == expect[1]
    assert not list(tmp_path.iterdir())


# ---- nothing in a config is ever imported or executed -----------------------------------

CODE_PATTERNS = [r"(?<![\w.])eval\(", r"(?<![\w.])exec\(", r"\bimportlib\.import_module",
                 r"__import__",
                 r"hydra\.utils\.instantiate", r"\binstantiate\(", r"get_class", r"get_method",
                 r"pickle\.load", r"yaml\.load\(", r"yaml\.unsafe_load", r"shell=True",
                 r"os\.system", r"register_new_resolver", r"(?<![\w.])compile\(",
                 r"allow_pickle=True", r"read_pickle", r"joblib\.load", r"marshal\.load"]


# seqbench.plugin_loader imports the modules of installed `seqbench.plugins` entry points
# (`ep.load()`, not matched above): code the user installed, never a config value.
# The exceptions, each one line of code in one file, with the reason:
ALLOWED = {
    # copies of a config composed in this process (pickle.dumps of it, in memory): 6x
    # faster than deepcopy for a 10,000-job sweep; no bytes from outside ever get here
    ("seqbench/jobconfigs.py", "cfg = pickle.loads(base)"),
    # a bundle's child process reads the spec its parent task wrote, moments before, into
    # its own submitit folder -- the parent itself was started by submitit unpickling its
    # submission from that same folder, so this adds no reader of outside bytes
    ("seqbench/bundles.py", "launcher, singleton_state, members = cloudpickle.load(f)"),
}


def test_the_code_never_evaluates_or_imports_a_config_value():
    """No eval/exec/dynamic import/instantiate/pickle in seqbench's own code, and every
    torch.load reads tensors only (weights_only=True)."""
    files = [*REPO.joinpath("seqbench").rglob("*.py"),
             *REPO.joinpath("hydra_plugins").rglob("*.py")]
    found = []
    for f in files:
        for n, line in enumerate(f.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if (str(f.relative_to(REPO)), code.strip()) in ALLOWED:
                continue
            found += [f"{f.relative_to(REPO)}:{n}: {line.strip()}"
                      for p in CODE_PATTERNS if re.search(p, code)]
            if "torch.load(" in code and "weights_only=True" not in code:
                found.append(f"{f.relative_to(REPO)}:{n}: {line.strip()}")
    assert found == []
    # the one place a config names a class: Hydra's launcher/sweeper plugins, and those
    # must live in hydra_plugins (Hydra refuses others; seqbench refuses them first)
    assert check_config(["hydra.launcher._target_=os.system"]) == [
        "hydra.launcher._target_=os.system: choose the launcher with hydra/launcher=OPTION"]


def test_no_resolver_can_run_code():
    """The interpolation resolvers a value can call once Hydra has started: OmegaConf's
    oc.* (env, select, decode -- which parses OmegaConf's grammar, not YAML tags or Python
    -- create, dict.keys/values, deprecated) and Hydra's now, hydra, python_version."""
    from hydra.core.utils import setup_globals
    from omegaconf.basecontainer import BaseContainer

    import hydra_plugins.seqbench_sweeper.sweeper  # noqa: F401 (every seqbench module)

    setup_globals()  # what hydra.main registers
    assert check_config(["optim.lr=${now:%Y}", "seed=${python_version:micro}"]) == [
        f"seed=${{python_version:micro}}: must be an integer (it resolves to "
        f"'{sys.version_info[0]}.{sys.version_info[1]}.{sys.version_info[2]}')"]
    assert set(BaseContainer._resolvers) <= {
        "oc.create", "oc.decode", "oc.deprecated", "oc.dict.keys", "oc.dict.values",
        "oc.env", "oc.select", "now", "hydra", "python_version"}


def hostile_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = str(REPO)  # also: tmp_path holds a module a pkg:// would import
    (tmp_path / "evilmod.py").write_text(f"open({MARKER + '_import'!r}, 'w').close()\n")
    return env


PAYLOADS = [  # every one would create a marker file if anything ran it
    ["task.name=__import__('os').system('touch PWNED')"],
    ["task=text_file", "task.path='$(touch PWNED)'"],
    ["optim=../../../x"],
    ["+_target_=os.system", "+command='touch PWNED'"],
    ["hydra/launcher=../../x"],
    ["+hydra.callbacks.x._target_=subprocess.run", "+hydra.callbacks.x.args=[touch,PWNED]"],
    ["+hydra.job_logging.handlers.x.class=subprocess.run",
     "+hydra.job_logging.handlers.x.args=[touch,PWNED]",
     "hydra.job_logging.root.handlers=[console,x]"],
    ["hydra.searchpath=[pkg://evilmod]"],
    ["--cfg", "job", "hydra.searchpath=[pkg://evilmod]"],  # was: imported evilmod
    ["+hydra.job.env_set.PYTHONSTARTUP=evilmod.py"],
    ["optim.lr=${oc.env:HOME}"],
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p[-1][:40])
def test_payloads_run_nothing(payload, tmp_path, monkeypatch, capsys):
    """In-process with the real Hydra app behind the checks: a payload that got through
    would train (and write runs/) or run its command (and write the marker)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # where a pkg:// search path would import
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    hostile_env(tmp_path)
    rc, _, err = run_main(["train", *payload], capsys)
    assert rc == 2 and "Traceback" not in err, err
    assert all(LINE.fullmatch(line) for line in err.splitlines()), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evilmod.py"]  # no marker, no run


def test_a_payload_through_the_real_process_runs_nothing(tmp_path):
    out = subprocess.run([sys.executable, "-m", "seqbench", "train", *PAYLOADS[5],
                          *PAYLOADS[6]], cwd=tmp_path, env=hostile_env(tmp_path),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 2 and all(LINE.fullmatch(line) for line in lines), out.stderr
    assert "hydra.callbacks.x=" in lines[0] and "handlers.x.class=subprocess.run" in lines[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evilmod.py"]


@pytest.mark.slow
@pytest.mark.parametrize("args", [*PAYLOADS,
    ["trainer.max_steps=99999999999999999999999"],
    ["seed=18446744073709551616"],
    ["trainer.threads=65536"],
    ["model.hidden_size=1000000"],
    ["task.name=adding"],
    ["clip.method=value"],
    ["hydra.job.name=../../x"],
    ["hydra.output_subdir=../x"],
    ["hydra.run.dir=${oc.env:SEQBENCH_SURELY_UNSET}"],
    ["hydra.job_logging.root.level=NOPE"],
    ["trainer.device=''"],
    ["=x"],
    ["a.b.=1"],
    ["--multirun"],
    ["task=text_file", "task.path=/dev/zero"],
    ["task=text_file", "task.path=/"],
    ["optim.lr=nan"],
    ["optim=sgd,adam"],
    ["trainer.init_from=nope"],
    ["trainer.spike.steps=[5]", "trainer.spike.grad_factor=inf"],
])
def test_hostile_argv_through_the_real_process(args, tmp_path):
    out = subprocess.run([sys.executable, "-m", "seqbench", "train", *args], cwd=tmp_path,
                         env=hostile_env(tmp_path), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert all(LINE.fullmatch(line) for line in out.stderr.splitlines()), out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evilmod.py"]


@pytest.mark.slow
def test_a_run_with_odd_but_legitimate_values_completes_inside_its_directory(tmp_path):
    """The accepted side end to end: unicode run directory, `${oc.env:...,default}`,
    a harmless string that looks like code, inf as a threshold; files only in the run."""
    book = tmp_path / "book with spaces é.txt"
    book.write_text("the quick brown fox jumps over the lazy dog\n" * 80)
    run = tmp_path / "runs" / "ü $(touch PWNED)"
    args = ["train", *TINY, "task=text_file", f"task.path='{book}'",
            "optim.lr=${oc.env:SEQBENCH_SURELY_UNSET,0.01}", "trainer.explode_factor=inf",
            f"hydra.run.dir='{run}'", "hydra.job.name=job"]
    out = subprocess.run([sys.executable, "-m", "seqbench", *args], cwd=tmp_path,
                         env=hostile_env(tmp_path), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [book.name, "evilmod.py", "runs"])
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [run.name]
    summary = (run / "summary.json").read_text()
    assert '"status": "completed"' in summary and '"optim.lr": 0.01' in summary
