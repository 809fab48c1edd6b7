"""The report's smoothness section (issue 23, part 3): tables checked against numbers
computed here from what the test wrote, not through the report's code.

One small synthetic sweep (sgd, lr 0.1 and 8, no clipping and norm 1, 3 seeds: the lr 8
runs diverge) is reported twice: before and after the test gives its runs a smoothness
probe (smoothness.parquet + summary.json ``smoothness``). The runs of one configuration
get summaries written before the warning existed (no ``warning``), one diverged run has
no probe at all, and one run's probes hold a NaN and a zero (not drawn).
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats

from seqbench.fake_runs import write_synthetic_sweep
from seqbench.report import make_report
from seqbench.report import smoothness as sm
from seqbench.report.collect import collect_runs
from seqbench.report.figures import registry
from seqbench.report.layout import Layout, enrich
from seqbench.report.sentences import smoothness as text
from seqbench.report.stats import cells

EVERY = 5
KS = (1.5, 2.0, 3.0, 5.0, 10.0)
NO_WARNING = ("norm", 0.1)  # the configuration whose summaries predate the warning
NO_PROBE = "0006"  # a diverged run without a single probe


def _rules(status: str, seed: int, steps: int) -> dict:
    """Hand-made outcomes: seed 0 diverged too early / fired falsely at k <= 2; seed 1
    warned at k <= 3 (lead 10, 5, 5) and was missed above; seed 2 missed / quiet."""
    out = []
    for k in KS:
        step = lead = None
        if status == "diverged":
            if seed == 0:
                outcome = "too_early"
            elif seed == 1 and k <= 3:
                lead = 10 if k == 1.5 else 5
                outcome, step = "warned", steps - lead
            else:
                outcome = "missed"
        elif seed == 0 and k <= 2:
            outcome, step = "false_alarm", 20
        else:
            outcome = "quiet"
        out.append({"k": k, "step": step, "lead_steps": lead, "outcome": outcome})
    armed = None if status == "diverged" and seed == 0 else 4 * EVERY
    return {"min_history": 3, "default_k": 2.0, "armed_at_step": armed,
            "L": out, "grad": [dict(r) for r in out]}


def _add_probe(d, rng, key, seed: int, status: str, steps: int, bad: bool) -> dict:
    """smoothness.parquet and the summary's object for one run; the written values."""
    too_early = status == "diverged" and seed == 0  # fewer probes than arm the rule
    n = 0 if d.name == NO_PROBE else min(steps // EVERY, 2 if too_early else steps)
    step = EVERY * np.arange(1, n + 1)
    grad = np.exp(rng.normal(0.0, 0.6, n))
    slope = 0.5 if key[0] == "none" else 0.2
    smooth = 0.3 + slope * grad * np.exp(rng.normal(0.0, 0.1, n))
    if bad and n >= 3:
        smooth[1], grad[2] = np.nan, 0.0
    if n:
        pq.write_table(pa.table({"step": pa.array(step, pa.int64()), "probe_grad_norm": grad,
                                 "update_norm": np.ones(n), "smoothness": smooth,
                                 "probe_loss": np.ones(n)}), d / sm.SMOOTHNESS_FILE)
    ok = np.isfinite(grad) & np.isfinite(smooth) & (grad > 0) & (smooth > 0)
    g, s = grad[ok], smooth[ok]
    obj = {"n": int(n), "n_used": int(ok.sum()),
           "median_L": float(np.median(s)) if len(s) else None,
           "spearman_log": None, "fit": None}
    if len(g) >= 3:
        obj["spearman_log"] = {"rho": float(stats.spearmanr(g, s).statistic), "n": len(g)}
    if len(g) >= 2:
        res = stats.theilslopes(s, g, 0.95, method="joint")
        obj["fit"] = {"method": "theil_sen", "L0": float(res[1]), "L1": float(res[0]),
                      "L1_ci95": [float(res[2]), float(res[3])], "ci": "sen", "n": len(g)}
    if key != NO_WARNING:
        obj["warning"] = _rules(status, seed, steps)
    return obj


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """(root, report without smoothness, report with it, the objects written per run)."""
    root = tmp_path_factory.mktemp("smooth")
    sw = write_synthetic_sweep(root / "runs", optimizers=("sgd",), lrs=(0.1, 8.0),
                               clips=(("none", None), ("norm", 1.0)), seeds=(0, 1, 2),
                               steps=40, eval_every=10, defects=False, hydra=False)
    for rec in sw.truth.to_dict("records"):  # the probe's interval, in both reports
        path = sw.root / rec["run_dir"] / "summary.json"
        summary = json.loads(path.read_text())
        summary["config"]["trainer.smoothness_every"] = EVERY
        path.write_text(json.dumps(summary))
    # two figures of the report's eleven keep it fast: the smoothness one and another
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry, "_FIGURES", {k: v for k, v in registry._FIGURES.items()
                                          if k in ("lr_curves", "smoothness")})
        before = make_report(sw.root, root / "before")
        written = _add_probes(sw)
        after = make_report(sw.root, root / "after")
    return sw.root, before, after, written


def _add_probes(sw) -> dict[str, dict]:
    rng = np.random.default_rng(7)
    written = {}
    for rec in sw.truth.to_dict("records"):
        d = sw.root / rec["run_dir"]
        summary = json.loads((d / "summary.json").read_text())
        key = (rec["clip.method"], rec["optim.lr"])
        obj = _add_probe(d, rng, key, rec["seed"], rec["status"], rec["steps_completed"],
                         bad=rec["run_dir"] == "0000")
        summary["smoothness"] = obj
        (d / "summary.json").write_text(json.dumps(summary))
        written[rec["run_dir"]] = {**obj, "key": key, "status": rec["status"]}
    return written


def _by_key(written: dict) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for obj in written.values():
        out.setdefault(obj["key"], []).append(obj)
    return out


def _t95(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t interval; one value: no interval."""
    v = np.asarray(values, float)
    if len(v) < 2:
        return (v[0] if len(v) else math.nan), math.nan, math.nan
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return v.mean(), v.mean() - half, v.mean() + half


def test_per_configuration_table_matches_the_summaries(sweep):
    _, _, after, written = sweep
    table = pd.read_csv(after.paths["smoothness_csv"])
    assert len(table) == 4
    for key, objs in _by_key(written).items():
        row = table[(table["clip.method"] == key[0]) & (table["optim.lr"] == key[1])]
        assert len(row) == 1, key
        row = row.iloc[0]
        assert row["n_runs"] == len(objs) == 3
        assert row["n_probed"] == sum(o["n_used"] > 0 for o in objs)
        rhos = [o["spearman_log"]["rho"] for o in objs if o["spearman_log"]]
        assert row["n_rho"] == len(rhos)
        assert row["n_rho_positive"] == sum(r > 0 for r in rhos)
        assert row["rho_median"] == pytest.approx(np.median(rhos))
        mean, lo, hi = _t95(rhos)
        lo, hi = (lo, hi) if math.isnan(lo) else (max(lo, -1.0), min(hi, 1.0))  # ρ's range
        assert (row["rho_mean"], row["rho_lo"], row["rho_hi"]) == pytest.approx(
            (mean, lo, hi), nan_ok=True)
        l1 = [o["fit"]["L1"] for o in objs if o["fit"]]
        assert row["n_fit"] == len(l1)
        assert row["L1_median"] == pytest.approx(np.median(l1))
        assert (row["L1_mean"], row["L1_lo"], row["L1_hi"]) == pytest.approx(_t95(l1), nan_ok=True)
        assert row["n_L1_above_0"] == sum(o["fit"]["L1_ci95"][0] > 0 for o in objs if o["fit"])
        assert row["L0_median"] == pytest.approx(np.median([o["fit"]["L0"] for o in objs
                                                            if o["fit"]]))
        med = [o["median_L"] for o in objs if o["median_L"] is not None]
        assert row["median_L_median"] == pytest.approx(np.median(med))
        assert row["probe_every"] == EVERY
    # the run without a probe counts in runs, not in probed
    none8 = table[(table["clip.method"] == "none") & (table["optim.lr"] == 8.0)].iloc[0]
    assert (none8["n_runs"], none8["n_probed"]) == (3, 2)


def _expected_warning(written: dict, k: float) -> dict[tuple, dict]:
    out: dict[tuple, dict] = {}
    for key, objs in _by_key(written).items():
        rules = [next(r for r in o["warning"]["L"] if r["k"] == k) for o in objs
                 if "warning" in o]
        if not rules:
            continue
        outs = [r["outcome"] for r in rules]
        out[key] = {
            "n_diverged": sum(x in ("warned", "missed", "too_early") for x in outs),
            "n_warned": outs.count("warned"), "n_missed": outs.count("missed"),
            "n_too_early": outs.count("too_early"), "n_false_alarm": outs.count("false_alarm"),
            "n_not_diverged": sum(x in ("false_alarm", "quiet") for x in outs),
            "leads": [r["lead_steps"] for r in rules if r["outcome"] == "warned"]}
    return out


def test_warning_table_per_configuration(sweep):
    root, _, after, written = sweep
    runs = enrich(collect_runs(root).runs)
    cells_df = cells(runs)
    layout = Layout.of(runs, cells_df)
    probe = sm.probe_runs(runs, root)
    assert probe.default_k == 2.0
    warn = sm.warning_cells(probe, cells_df, layout)
    expected = _expected_warning(written, 2.0)
    assert NO_WARNING not in expected and len(expected) == 3
    assert set(warn["signal"]) == {"L", "grad"} and len(warn) == 2 * len(expected)
    for key, exp in expected.items():
        for sig in ("L", "grad"):
            row = warn[(warn["clip.method"] == key[0]) & (warn["optim.lr"] == key[1])
                       & (warn["signal"] == sig)].iloc[0]
            for col in ("n_diverged", "n_warned", "n_missed", "n_too_early", "n_false_alarm",
                        "n_not_diverged"):
                assert row[col] == exp[col], (key, sig, col)
            if exp["leads"]:
                assert row["lead_median"] == np.median(exp["leads"])
            else:
                assert math.isnan(row["lead_median"])
    md = after.paths["report_md"].read_text()
    assert "### Early warning per configuration at k = 2" in md


def _wilson(k: int, n: int) -> tuple[float, float]:
    z = 1.959964
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half) if k else 0.0, min(1.0, centre + half) if k < n else 1.0


def test_sensitivity_over_k_is_pooled_over_runs(sweep):
    root, _, _, written = sweep
    runs = enrich(collect_runs(root).runs)
    sens = sm.warning_sensitivity(sm.probe_runs(runs, root))
    assert list(sens["k"]) == [*KS, *KS] and list(sens["signal"]) == ["L"] * 5 + ["grad"] * 5
    for k in KS:
        per = _expected_warning(written, k).values()
        div = sum(e["n_diverged"] for e in per)
        early = sum(e["n_too_early"] for e in per)
        warned = sum(e["n_warned"] for e in per)
        fa, nd = sum(e["n_false_alarm"] for e in per), sum(e["n_not_diverged"] for e in per)
        row = sens[(sens["signal"] == "L") & (sens["k"] == k)].iloc[0]
        assert (row["n_diverged"], row["n_too_early"], row["n_armed"]) == (div, early,
                                                                            div - early)
        assert (row["n_warned"], row["n_false_alarm"], row["n_not_diverged"]) == (warned, fa, nd)
        assert (row["warned_lo"], row["warned_hi"]) == pytest.approx(_wilson(warned, div - early))
        assert (row["false_alarm_lo"], row["false_alarm_hi"]) == pytest.approx(_wilson(fa, nd))
    # the hand-made outcomes, spelled out once
    row = sens[(sens["signal"] == "L") & (sens["k"] == 2.0)].iloc[0]
    assert (row["n_warned"], row["n_armed"], row["n_too_early"], row["n_false_alarm"]) == \
        (2, 4, 2, 1)


def test_sentences_state_counts_and_limits(sweep):
    _, _, after, _ = sweep
    md = after.paths["report_md"].read_text()
    section = md.split(f"## {text.HEADING}", 1)[1].split("## Incomplete run directories")[0]
    assert "12 of the 12 runs that completed or diverged ran with a probe every 5 steps" \
        in section
    assert "1 run had none (all diverged before their first probe)" in section
    assert "Early warning from L̂ (k = 2: a probe above 2× the running median" in section
    assert ("of 6 diverged runs it warned of 2, a median of 5 steps ahead, missed 2 and 2 came "
            "too early; of the 4 it was armed for, it warned of 2 of 4 (95% Wilson interval "
            "0.15–0.85)") in section
    assert "false alarms in 1 of 3" in section
    assert "Too early: 2 runs diverged by step" in section
    assert "(at its 4th probe: step 20 for most runs)" in section
    assert "3 runs with summaries written before the warning existed" in section
    assert "What this does not show" in section
    assert "fitted L1, mean over seeds" in section  # clipped vs unclipped, per lr


def test_figure_pools_seeds_per_configuration_and_drops_bad_probes(sweep):
    root, _, after, written = sweep
    assert after.figures["smoothness"].name == "smoothness.png"
    md = after.paths["report_md"].read_text()
    # in the smoothness section, not among the task's figures
    head, section = md.split(f"## {text.HEADING}", 1)
    assert "figures/smoothness.png" in section and "figures/smoothness.png" not in head
    assert "2 probes with a non-finite or non-positive" in section
    from seqbench.report.figures.smoothness import smoothness_figure

    runs = enrich(collect_runs(root).runs)
    cells_df = cells(runs)
    plot = smoothness_figure(runs, cells_df, root, Layout.of(runs, cells_df))
    cell_of = runs.set_index("run_dir")["cell"]
    for rel, obj in written.items():
        drawn = plot.data[plot.data["run_dir"] == rel]
        assert len(drawn) == obj["n_used"], rel
        assert (drawn["cell"] == cell_of[rel]).all()
    assert (plot.data["smoothness"] > 0).all() and (plot.data["probe_grad_norm"] > 0).all()
    assert plot.data["cell"].nunique() == 4
    html = after.paths["report_html"].read_text()
    assert '<h2 id="smoothness">' in html and 'href="#smoothness"' in html
    assert 'href="#smoothness-warning"' in html and 'id="smoothness"><img' in html


def test_a_report_without_the_probe_has_no_section_and_is_unchanged(sweep):
    _, before, after, _ = sweep
    md_before = before.paths["report_md"].read_text()
    assert f"## {text.HEADING}" not in md_before and "smoothness.png" not in md_before
    assert "smoothness_csv" not in before.paths and "smoothness" not in before.figures
    assert not (before.out_dir / "smoothness.csv").exists()
    assert not (before.out_dir / "figures" / "smoothness.png").exists()
    # the section is purely additive: without it, the report reads as before
    md_after = after.paths["report_md"].read_text()
    cut = re.sub(rf"\n## {text.HEADING}\n.*?(?=## Incomplete run directories)", "",
                 md_after, flags=re.S)
    assert cut == md_before
    html_after = after.paths["report_html"].read_text()
    cut = re.sub(r'<h2 id="smoothness">.*?(?=<h2 id="incomplete-runs">)', "", html_after,
                 flags=re.S)
    cut = re.sub(r' · <a href="#smoothness">.*?(?= · <a href="#incomplete-runs">)', "", cut)
    assert cut == before.paths["report_html"].read_text()


def test_summaries_without_warning_give_no_warning_table(sweep):
    root, _, _, _ = sweep
    runs = enrich(collect_runs(root).runs)
    cells_df = cells(runs)
    probe = sm.probe_runs(runs, root)
    probe.runs["has_warning"] = False
    probe.rules = probe.rules.iloc[0:0]
    assert sm.warning_cells(probe, cells_df, Layout.of(runs, cells_df)).empty
    assert sm.warning_sensitivity(probe).empty
    said = text.warning_sentences(probe, sm.warning_sensitivity(probe))
    assert said == ["No run recorded the early-warning rule (12 runs with summaries written "
                    "before it existed), so there is no warning table."]


def test_odd_but_valid_warning_fields_are_missing_values(tmp_path):
    """The validator checks the rules' fields, not ``default_k`` or ``armed_at_step``: a
    summary with text there still reports (those values as missing, the default k used)."""
    sw = write_synthetic_sweep(tmp_path / "runs", optimizers=("sgd",), lrs=(0.1,),
                               clips=(("none", None),), seeds=(0,), steps=20, eval_every=10,
                               defects=False, hydra=False)
    path = sw.root / "0000" / "summary.json"
    summary = json.loads(path.read_text())
    summary["smoothness"] = {"n": 4, "median_L": 0.5, "spearman_log": None, "fit": None,
                             "warning": {**_rules("completed", 0, 20), "default_k": "two",
                                         "armed_at_step": [20]}}
    path.write_text(json.dumps(summary))
    runs = enrich(collect_runs(sw.root).runs)
    assert len(runs) == 1
    probe = sm.probe_runs(runs, sw.root)
    assert probe.runs["default_k"].isna().all() and probe.runs["armed_at_step"].isna().all()
    assert probe.default_k == 2.0 and len(probe.rules) == 10
    part = text.SmoothnessPart.of(runs, cells(runs), sw.root, Layout.of(runs, cells(runs)))
    assert part is not None and part.warning_heading.endswith("at k = 2")
    assert any("false alarms in 1 of 1" in s for s in part.sentences)
