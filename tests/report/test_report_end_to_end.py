"""make_report end to end: every file written, HTML self-contained, degenerate sweeps survive."""

from __future__ import annotations

import base64
import json
import re

import pandas as pd
import pytest

from seqbench.fake_runs import write_synthetic_sweep
from seqbench.report import ReportInputError, make_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_writes_every_file(report, sweep):
    for key in ("report_md", "report_html", "runs_csv", "cells_csv", "lr_summary_csv",
                "answer_csv"):
        assert report.paths[key].is_file() and report.paths[key].stat().st_size > 0
    assert set(report.figures) == {
        "lr_curves",
        "cost_to_target",
        "divergence_heatmap",
        "bpc_heatmap",
        "loss_curves",
        "grad_norms",
        "frontier",
    }
    for path in report.figures.values():
        assert path.parent.name == "figures" and path.read_bytes().startswith(PNG_MAGIC)
    # the common case: no run logged per-parameter norms, so that figure is a note
    assert set(report.skipped) == {"param_grad_norms"}
    assert "trainer.param_log_every" in report.skipped["param_grad_norms"]
    assert not (report.out_dir / "figures" / "param_grad_norms.png").exists()
    assert report.n_runs == len(sweep.truth) + 2
    assert (report.n_corrupt, report.n_incomplete) == (3, 2)
    assert report.n_found == report.n_runs + report.n_corrupt
    assert report.n_completed + report.n_diverged == len(sweep.truth)


def test_html_is_self_contained(report):
    text = report.paths["report_html"].read_text(encoding="utf-8")
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', text)
    assert len(srcs) == len(report.figures)
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert not re.search(r'(src|href)="(https?:|//|file:|figures/)', text)
    assert "<link" not in text and "<script src" not in text
    assert text.count("<script>") == 1  # the tables' sorting, inline (test_report_browser.py)
    assert "<table>" in text and "<style>" in text


def test_documents_content(report, collected):
    md = report.paths["report_md"].read_text(encoding="utf-8")
    html = report.paths["report_html"].read_text(encoding="utf-8")
    html = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:", html)
    for doc in (md, html):
        assert "Learning rates: finite, trained, sensitivity" in doc
        assert "raised the largest learning rate at which every seed trained from" in doc
        assert "Unclipped SGD diverged in" in doc
        for rel in [*collected.corrupt["run_dir"], *collected.incomplete["run_dir"]]:
            assert rel in doc
        assert "—" in doc  # missing values are shown as a dash ...
        assert "nan" not in doc.lower().replace("nan_rate", "")  # ... never as nan
    for name in report.figures:
        assert f"(figures/{name}.png)" in md
    # the headline opens the document, before any table
    assert md.index("run directories:") < md.index("| optimizer")


def test_csvs_round_trip(report, cells_df, stable_df, collected):
    c = pd.read_csv(report.paths["cells_csv"])
    assert len(c) == len(cells_df) and "n" in c.columns
    assert c["final_val_bpc_mean"].isna().sum() == cells_df["final_val_bpc_mean"].isna().sum()
    assert len(pd.read_csv(report.paths["lr_summary_csv"])) == len(stable_df)
    r = pd.read_csv(report.paths["runs_csv"])
    assert len(r) == len(collected.runs) and {"run_dir", "status", "threshold", "cell"} <= set(
        r.columns
    )


def test_cells_table_shows_n_and_never_imputes(report, cells_df):
    md = report.paths["report_md"].read_text(encoding="utf-8")
    table = md.split("## Configurations", 1)[1].split("## Figures", 1)[0]
    rows = [
        ln for ln in table.splitlines() if ln.startswith("| ") and not ln.startswith("| optimizer")
    ]
    assert len(rows) == len(cells_df)
    header = [
        h.strip()
        for h in table.splitlines()[
            [i for i, ln in enumerate(table.splitlines()) if ln.startswith("| optimizer")][0]
        ]
        .strip("|")
        .split("|")
    ]
    i_n, i_bpc, i_fin = (
        header.index("n"),
        header.index("final val bpc [95% CI]"),
        header.index("finished"),
    )
    for row in rows:
        cols = [c.strip() for c in row.strip("|").split("|")]
        assert cols[i_n].isdigit()
        if cols[i_fin] == "0":
            assert cols[i_bpc] == "—"


def test_report_is_deterministic(sweep, report, tmp_path):
    again = make_report(sweep.root, tmp_path / "again")
    assert again.paths["report_md"].read_text() == report.paths["report_md"].read_text()
    assert again.paths["cells_csv"].read_text() == report.paths["cells_csv"].read_text()


def test_input_errors(tmp_path):
    with pytest.raises(ReportInputError, match=str(tmp_path / "missing")):
        make_report(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportInputError, match="no run directories"):
        make_report(tmp_path / "empty", tmp_path / "out")


@pytest.mark.parametrize(
    ("kwargs", "skipped"),
    [
        ({"stability": 1e-4}, {"bpc_heatmap", "frontier", "cost_to_target"}),  # all diverged
        # one learning rate only: heatmaps of one-lr panels are left to the tables
        ({"lrs": (0.1,)}, {"bpc_heatmap", "divergence_heatmap"}),
        ({"clips": (("none", None), ("value", 1.0))}, set()),  # no norm runs
        ({"clips": (("norm", 1.0),), "optimizers": ("adam",)}, set()),  # no unclipped baseline
        (
            {"seeds": (0,), "lrs": (0.1,), "clips": (("none", None),), "optimizers": ("sgd",)},
            set(),
        ),  # one run
    ],
)
def test_degenerate_sweeps(tmp_path, kwargs, skipped):
    sw = write_synthetic_sweep(
        tmp_path / "runs",
        steps=12,
        eval_every=4,
        defects=False,
        hydra=False,
        param_every=4,  # the per-layer figure must survive degenerate sweeps too
        **{"seeds": (0, 1), **kwargs},
    )
    res = make_report(sw.root, tmp_path / "out")
    assert set(res.skipped) == skipped
    assert all(note.startswith("skipped:") for note in res.skipped.values())
    assert all(p.is_file() for p in res.paths.values())
    md = res.paths["report_md"].read_text()
    if "bpc_heatmap" in skipped and "stability" in kwargs:
        assert "No run finished" in md


def test_only_corrupt_runs(tmp_path):
    d = tmp_path / "runs" / "job"
    d.mkdir(parents=True)
    (d / "summary.json").write_text("{oops")
    res = make_report(tmp_path / "runs", tmp_path / "out")
    assert res.n_corrupt == 1 and res.n_runs == 0 and not res.figures
    assert set(res.skipped) == {
        "lr_curves",
        "cost_to_target",
        "divergence_heatmap",
        "bpc_heatmap",
        "loss_curves",
        "grad_norms",
        "param_grad_norms",
        "frontier",
    }
    assert "job" in res.paths["report_html"].read_text()


def test_rerender_removes_stale_figures(tmp_path):
    ok = write_synthetic_sweep(
        tmp_path / "ok", seeds=(0,), steps=12, eval_every=4, defects=False, hydra=False
    )
    bad = write_synthetic_sweep(
        tmp_path / "bad",
        seeds=(0,),
        steps=12,
        eval_every=4,
        defects=False,
        hydra=False,
        stability=1e-4,
    )
    out = tmp_path / "out"
    make_report(ok.root, out)
    assert (out / "figures" / "frontier.png").exists()
    make_report(bad.root, out)
    assert not (out / "figures" / "frontier.png").exists()


def test_configs_without_clip_or_optimizer_keys(tmp_path):
    """Another task's config may lack clip.* or optim.*: the report degrades, never crashes."""
    sw = write_synthetic_sweep(
        tmp_path / "runs",
        optimizers=("sgd",),
        lrs=(0.1, 2.0),
        seeds=(0, 1),
        steps=12,
        eval_every=4,
        defects=False,
        hydra=False,
        param_every=4,
    )
    for i, path in enumerate(sorted(sw.root.glob("*/summary.json"))):
        data = json.loads(path.read_text())
        drop = ("clip.", "optim.name") if i % 2 == 0 else ("clip.", "optim.")
        data["config"] = {k: v for k, v in data["config"].items() if not k.startswith(drop)}
        path.write_text(json.dumps(data))
    res = make_report(sw.root, tmp_path / "out")
    assert res.skipped == {}
    assert all(p.is_file() for p in res.paths.values())
