"""Hostile report inputs: whatever a run directory holds, the report lists it, never raises.

The summaries are fuzzed (hypothesis): arbitrary JSON values in every field, whole
documents replaced by any JSON value or by random bytes, NaN literals, integers beyond
float range. Each generated run sits next to good runs; ``collect_runs`` must not
raise, must list the run as corrupt exactly when an independent check of the contract
(written here, not imported) says it is malformed, and must still count the good runs.
Metrics files are broken in every way a writer or a disk can break them. Run
directories with odd names must not break the report or make it write elsewhere.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from seqbench.fake_runs import write_synthetic_sweep
from seqbench.report import make_report
from seqbench.report.collect import collect_runs

GOOD = ("0000", "0001", "0002")
STATUSES = {"running", "completed", "diverged", "error", "interrupted"}
REQUIRED = (
    "schema_version", "status", "divergence", "first_nonfinite_step", "steps_completed", "config",
)
NUMERIC = (
    "first_nonfinite_step", "divergence_step", "steps_completed", "tokens_seen",
    "final_train_loss", "final_val_loss", "final_val_bpc", "best_val_bpc", "final_val_metric",
    "best_val_metric", "clip_fraction", "skipped_steps", "wall_seconds", "tokens_per_second",
)
OTHER_KEYS = ("metric", "task_success", "task_metrics", "grad_norm_pre", "error", "env")


# --------------------------------------------------------------------------- the oracle


def _has_nonfinite(v: object) -> bool:
    if isinstance(v, float):
        return not math.isfinite(v)
    if isinstance(v, dict):
        return any(_has_nonfinite(x) for x in v.values())
    if isinstance(v, list):
        return any(_has_nonfinite(x) for x in v)
    return False


#: The smallest integer that float() cannot hold: it rounds up to 2**1024.
_FLOAT_OVERFLOW = 2**1024 - 2**970


def _number(v: object) -> bool:
    if v is None:
        return True
    if type(v) is float:
        return math.isfinite(v)
    return type(v) is int and abs(v) < _FLOAT_OVERFLOW


def contract_ok(doc: object) -> bool:
    """Is ``doc`` a summary the report can read? (DESIGN.md's table, by hand.)"""
    if not isinstance(doc, dict) or _has_nonfinite(doc):
        return False
    if any(k not in doc for k in REQUIRED):
        return False
    if type(doc["schema_version"]) is not int or doc["schema_version"] != 1:
        return False
    if not isinstance(doc["status"], str) or doc["status"] not in STATUSES:
        return False
    if doc["divergence"] not in (None, "nonfinite", "exploded") or isinstance(
        doc["divergence"], bool
    ):
        return False
    if not isinstance(doc["config"], dict):
        return False
    if not all(_number(doc.get(k)) for k in NUMERIC):
        return False
    m = doc.get("metric")
    if m is not None and not (
        isinstance(m, dict)
        and isinstance(m.get("name"), str)
        and len(m["name"]) > 0
        and isinstance(m.get("unit"), str)
        and type(m.get("lower_is_better")) is bool
    ):
        return False
    if doc.get("task_success") not in (None, True, False) or type(
        doc.get("task_success")
    ) not in (type(None), bool):
        return False
    if not isinstance(doc.get("task_metrics"), (dict, type(None))):
        return False
    g = doc.get("grad_norm_pre")
    return g is None or (
        isinstance(g, dict) and all(_number(g.get(s)) for s in ("median", "p99", "max"))
    )


def test_oracle_accepts_the_generators_summaries(template):
    assert contract_ok(template)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Three good runs and a ``bad`` run directory (a copy of the first) to break."""
    base = tmp_path_factory.mktemp("hostile")
    write_synthetic_sweep(
        base, optimizers=("sgd",), lrs=[0.1], clips=(("none", None),), seeds=(0, 1, 2),
        steps=20, eval_every=10, defects=False,
    )
    shutil.copytree(base / "0000", base / "bad")
    return base


@pytest.fixture(scope="module")
def template(root) -> dict:
    return json.loads((root / "0000" / "summary.json").read_text())


def _check(root: Path, bad_expected: bool) -> None:
    res = collect_runs(root)
    assert res.n_found == 4
    assert set(GOOD) <= set(res.runs["run_dir"])
    corrupt = dict(zip(res.corrupt["run_dir"], res.corrupt["reason"], strict=True))
    if bad_expected:
        assert set(corrupt) == {"bad"}
        assert isinstance(corrupt["bad"], str) and corrupt["bad"].startswith("summary.json")
    else:
        assert corrupt == {}
        assert "bad" in set(res.runs["run_dir"])


# --------------------------------------------------------------------------- summaries

_HUGE = st.integers(min_value=-(10**400), max_value=10**400)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | _HUGE
    | st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False)
    | st.text(max_size=12)
    | st.sampled_from(["completed", "diverged", "running", "nonfinite", "exploded", ""])
)
JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=12,
)
KEYS = st.sampled_from([*REQUIRED, *NUMERIC, *OTHER_KEYS]) | st.text(max_size=10)


@st.composite
def hostile_summaries(draw, template: dict) -> tuple[bytes, object]:
    """(file bytes, decoded document or a sentinel for bytes that are not JSON)."""
    kind = draw(st.sampled_from(["set", "set", "set", "delete", "config", "document", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300)), _NOT_JSON
    if kind == "document":
        doc = draw(JSON)
    else:
        doc = json.loads(json.dumps(template))
        if kind == "set":
            for _ in range(draw(st.integers(1, 3))):
                doc[draw(KEYS)] = draw(JSON)
        elif kind == "delete":
            doc.pop(draw(st.sampled_from(sorted(doc))))
        else:  # an odd but well-typed config: any keys, any values
            doc["config"] = draw(st.dictionaries(st.text(max_size=12), JSON, max_size=6))
    return json.dumps(doc, allow_nan=True).encode(), doc


_NOT_JSON = object()


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fuzzed_summaries_are_listed_never_raised(root, template, data):
    raw, doc = data.draw(hostile_summaries(template))
    (root / "bad" / "summary.json").write_bytes(raw)
    if doc is _NOT_JSON:
        try:
            decoded = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            _check(root, bad_expected=True)
            return
        doc = decoded
    ok = contract_ok(doc)
    event("well-formed" if ok else "malformed")  # both occur: see --hypothesis-show-statistics
    _check(root, bad_expected=not ok)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00\xff\xfe binary junk \x89PNG",
        b"[1, 2, 3]",
        b'"a string"',
        b"null",
        b"{",
        b'{"status": NaN}',
        b"\xef\xbb\xbf{}",  # a byte-order mark
        b"[" * 100_000 + b"]" * 100_000,  # nesting beyond the recursion limit
        b'{"schema_version": 1, "steps_completed": ' + b"9" * 5000 + b"}",  # > 4300 digits
        b'{"x": "\\ud800"}',  # a lone surrogate: not writable as UTF-8
    ],
    ids=["empty", "binary", "list", "string", "null", "truncated", "nan", "bom", "deep",
         "long_int", "surrogate"],
)
def test_malformed_summary_files(root, template, payload):
    (root / "bad" / "summary.json").write_bytes(payload)
    _check(root, bad_expected=True)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("steps_completed", "abc"),
        ("status", 42),
        ("status", ["completed"]),  # unhashable where a string is expected
        ("divergence", {"kind": "nonfinite"}),
        ("schema_version", [1]),
        ("schema_version", 1.0),
        ("schema_version", True),
        ("config", "clip.method=none"),
        ("config", None),
        ("final_val_bpc", 10**400),  # beyond float range
        ("wall_seconds", float("inf")),  # written as Infinity
        ("grad_norm_pre", {"median": float("nan")}),
        ("task_success", 1),
        ("metric", {"name": "", "unit": "x", "lower_is_better": True}),
    ],
)
def test_wrong_types_are_corrupt(root, template, key, value):
    doc = {**template, key: value}
    (root / "bad" / "summary.json").write_bytes(json.dumps(doc, allow_nan=True).encode())
    _check(root, bad_expected=True)


def test_a_directory_named_summary_json_is_corrupt(tmp_path):
    write_synthetic_sweep(tmp_path, optimizers=("sgd",), lrs=[0.1], clips=(("none", None),),
                          seeds=(0,), steps=10, eval_every=5, defects=False)
    (tmp_path / "odd" / "summary.json").mkdir(parents=True)
    res = collect_runs(tmp_path)
    corrupt = dict(zip(res.corrupt["run_dir"], res.corrupt["reason"], strict=True))
    assert set(corrupt) == {"odd"} and "unreadable" in corrupt["odd"]
    assert list(res.runs["run_dir"]) == ["0000"]


@pytest.mark.slow
def test_odd_but_valid_summaries_make_a_report(tmp_path):
    """Valid documents with strange content: odd config keys and values, error objects."""
    sw = write_synthetic_sweep(tmp_path / "runs", optimizers=("sgd",), lrs=[0.1, 8.0],
                               clips=(("none", None), ("norm", 1.0)), seeds=(0, 1), steps=30,
                               eval_every=10, defects=False)
    oddities = [
        {"n": 3, "cell": "x", "threshold": [1], "status": "shadow", "": None},
        {"model.sizes": [64, {"a": None}], "huge": 10**300, "model.name": "ünïcødé 运行 \t|`"},
        {"task.name": "../../../escape", "optim.lr": 10**30},
    ]
    for i, extra in enumerate(oddities):
        path = sw.root / f"{i:04d}" / "summary.json"
        doc = json.loads(path.read_text())
        doc["config"] = {**doc["config"], **extra}
        doc["error"] = {"type": "RuntimeError", "lines": ["a", "b"]}
        doc["env"] = [1, "two"]
        path.write_text(json.dumps(doc))
    out = tmp_path / "out"
    before = _tree(tmp_path)
    result = make_report(sw.root, out)
    assert result.n_runs == len(sw.truth) and result.n_corrupt == 0
    assert result.skipped == {} or all("failed" not in v for v in result.skipped.values())
    assert {p for p in _tree(tmp_path) - before if not _inside(p, out)} == set()
    assert all(_inside(p, out) for p in result.written)
    assert any("escape" in p.name for p in result.figures.values())  # its own task's figures
    runs_csv = (out / "runs.csv").read_text(encoding="utf-8")
    assert "config.n" in runs_csv and "config.status" in runs_csv  # renamed, not shadowing


# --------------------------------------------------------------------------- metrics files


def _metrics(n: int = 5, **override: pa.Array) -> pa.Table:
    cols = {
        "step": pa.array(np.arange(1, n + 1), pa.int64()),
        "train_loss": pa.array(np.linspace(4, 2, n)),
        "grad_norm_pre": pa.array(np.ones(n)),
        "grad_norm_post": pa.array(np.ones(n)),
        "val_loss": pa.array([None] * (n - 1) + [2.5], pa.float64()),
    }
    for k, v in override.items():
        if v is None:
            cols.pop(k)
        else:
            cols[k] = v
    return pa.table(cols)


def _write_table(table: pa.Table):
    return lambda p: pq.write_table(table, p)


def _bytes(data: bytes):
    return lambda p: p.write_bytes(data)


def _truncated(p: Path) -> None:
    pq.write_table(_metrics(50), p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


BROKEN_METRICS = {
    "empty_file": _bytes(b""),
    "magic_only": _bytes(b"PAR1"),
    "random_bytes": _bytes(np.random.default_rng(0).bytes(4096)),
    "truncated": _truncated,
    "directory": lambda p: p.mkdir(),
    "broken_symlink": lambda p: os.symlink(p.parent / "nowhere.parquet", p),
    "no_step": _write_table(_metrics(step=None)),
    "no_train_loss": _write_table(_metrics(train_loss=None)),
    "step_strings": _write_table(_metrics(step=pa.array(list("abcde")))),
    "step_floats": _write_table(_metrics(step=pa.array([1.0, 2, 3, 4, 5]))),
    "loss_strings": _write_table(_metrics(train_loss=pa.array(["1", "2", "3", "4", "5"]))),
    "loss_lists": _write_table(_metrics(train_loss=pa.array([[1.0]] * 5))),
    "norms_strings": _write_table(_metrics(grad_norm_pre=pa.array(["x"] * 5))),
    "a_csv_file": _bytes(b"step,train_loss\n1,2.0\n"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN_METRICS))
def test_broken_metrics_files_are_corrupt(root, template, kind):
    (root / "bad" / "summary.json").write_text(json.dumps(template))
    target = root / "bad" / "metrics.parquet"
    saved = root / "bad.metrics.parquet"
    shutil.move(target, saved)
    try:
        BROKEN_METRICS[kind](target)
        res = collect_runs(root)
        corrupt = dict(zip(res.corrupt["run_dir"], res.corrupt["reason"], strict=True))
        assert set(corrupt) == {"bad"}, kind
        assert corrupt["bad"].startswith("metrics.parquet"), corrupt["bad"]
        assert set(GOOD) == set(res.runs["run_dir"])
    finally:
        if target.is_dir() and not target.is_symlink():
            target.rmdir()
        else:
            target.unlink(missing_ok=True)
        shutil.move(saved, target)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0.0, 0.999), junk=st.binary(max_size=64))
def test_any_truncation_of_a_metrics_file_is_corrupt(root, template, cut, junk):
    """Cut anywhere (then maybe junk appended): the footer is gone, the run is corrupt."""
    (root / "bad" / "summary.json").write_text(json.dumps(template))
    good = (root / "0000" / "metrics.parquet").read_bytes()
    target = root / "bad" / "metrics.parquet"
    target.write_bytes(good[: int(cut * len(good))] + junk)
    try:
        res = collect_runs(root)
        assert list(res.corrupt["run_dir"]) == ["bad"]
        assert set(GOOD) == set(res.runs["run_dir"])
    finally:
        target.write_bytes(good)


def test_zero_row_metrics_is_a_run_not_corruption(root, template):
    (root / "bad" / "summary.json").write_text(json.dumps(template))
    target = root / "bad" / "metrics.parquet"
    good = target.read_bytes()
    pq.write_table(_metrics(5).slice(0, 0), target)
    try:
        res = collect_runs(root)
        assert res.corrupt.empty
        assert res.runs.set_index("run_dir").loc["bad", "metrics_rows"] == 0
    finally:
        target.write_bytes(good)


def test_report_over_every_broken_metrics_file(tmp_path, template):
    """The whole report (figures read the files again) survives all of them at once."""
    runs = tmp_path / "runs"
    sw = write_synthetic_sweep(runs, optimizers=("sgd",), lrs=[0.1, 8.0],
                               clips=(("none", None), ("norm", 1.0)), seeds=(0, 1), steps=30,
                               eval_every=10, defects=False)
    summary = (sw.root / "0000" / "summary.json").read_text()
    for kind, make in BROKEN_METRICS.items():
        d = runs / "broken" / kind
        d.mkdir(parents=True)
        (d / "summary.json").write_text(summary)
        make(d / "metrics.parquet")
    result = make_report(runs, tmp_path / "out")
    assert result.n_corrupt == len(BROKEN_METRICS)
    assert result.n_runs == len(sw.truth)
    md = (tmp_path / "out" / "report.md").read_text()
    for kind in BROKEN_METRICS:
        assert f"broken/{kind}" in md


# --------------------------------------------------------------------------- directory names


def _tree(base: Path) -> set[Path]:
    return {Path(dp) / f for dp, _, fs in os.walk(base) for f in fs}


def _inside(path: Path, parent: Path) -> bool:
    return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(parent))


ODD_NAMES = [
    "run with spaces",
    "ünïcødé-运行-🙂",
    "a..",
    "-rf",
    "<b>&amp;`tick`|pipe",
    "new\nline",
    "x" * 240,
    os.fsdecode(b"bytes-\xff\xfe"),  # not UTF-8: a surrogate-escaped name
    "a/b/c/deep run",
]


def test_odd_run_directory_names(tmp_path):
    runs = tmp_path / "runs"
    sw = write_synthetic_sweep(runs / "src", optimizers=("sgd",), lrs=[0.1], clips=(("none",
                               None), ("norm", 1.0)), seeds=(0, 1, 2), steps=20, eval_every=10,
                               defects=False)
    sources = sorted(p for p in sw.root.iterdir() if p.is_dir())
    names = ODD_NAMES
    for i, name in enumerate(names):
        shutil.copytree(sources[i % len(sources)], runs / name)
    # one odd-named run is corrupt, so its name is printed in the documents
    (runs / "new\nline" / "summary.json").write_text("{")
    hidden = runs / "..hidden"  # names starting with "." are skipped, like .hydra
    shutil.copytree(sources[0], hidden)
    out = tmp_path / "report out"
    before = _tree(tmp_path)
    result = make_report(runs, out)
    assert result.n_found == len(sources) + len(names)
    # the broken summary, and the name that is not UTF-8 (it cannot be a table cell)
    assert result.n_corrupt == 2 and result.n_runs == result.n_found - 2
    assert all(_inside(p, out) for p in result.written)
    assert {p for p in _tree(tmp_path) - before if not _inside(p, out)} == set()
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "`new\\nline`" in md  # escaped, on one line
    csv = (out / "runs.csv").read_text(encoding="utf-8")
    assert "run with spaces" in csv and "ünïcødé-运行-🙂" in csv
    assert "bytes-" not in csv
    assert "`bytes-\\xff\\xfe` — the directory name is not valid UTF-8" in md
    assert "..hidden" not in csv
