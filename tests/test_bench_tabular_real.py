"""The references' design matrix and the summary of benchmarks/bench_tabular_real.py (they decide
what its rows and pooled figures mean)."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))  # it imports its sibling bench_encoders
    try:
        spec = importlib.util.spec_from_file_location("bench_tabular_real", BENCH / "bench_tabular_real.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def _folds(tmp_path_factory, name, n, folds=None):
    from clinfuse.datasets.builtin_tabular import builtin_cohort

    base = tmp_path_factory.mktemp(name)
    return [builtin_cohort(name, base / f"f{k}", fold=k, n_folds=n) for k in (folds or range(n))]


@pytest.fixture(scope="module")
def flchain_fold(tmp_path_factory):
    return _folds(tmp_path_factory, "flchain", 3, folds=[0])[0]


@pytest.fixture(scope="module")
def gbsg2_folds(tmp_path_factory):
    return _folds(tmp_path_factory, "gbsg2", 3)


def test_design_scales_on_the_fitting_patients_and_flags_blank_values(bench, flchain_fold):
    root = flchain_fold
    x, fit_ids, test_ids, labels = bench.design(root)
    raw = pd.read_parquet(root / "tabular.parquet").set_index("patient_id")
    assert not set(fit_ids) & set(test_ids) and len(fit_ids) + len(test_ids) == len(raw) == len(x)
    # z-scored with the fitting rows' mean and population sd, not the test rows'
    age = raw["age"]
    assert np.allclose(x["age"], (age - age.loc[fit_ids].mean()) / age.loc[fit_ids].std(ddof=0))
    assert abs(x.loc[fit_ids, "age"].mean()) < 1e-9 and abs(x.loc[test_ids, "age"].mean()) > 1e-4
    # creatinine is blank for some people: value 0 and the flag 1 there, the flag 0 elsewhere
    blank = raw["creatinine"].isna()
    assert blank.any() and (x.loc[blank, "creatinine"] == 0).all()
    assert x["creatinine_missing"].eq(blank.astype(float)).all()
    assert "age_missing" not in x  # only columns with a blank value get a flag
    # one-hot categorical columns without the first (reference) level
    assert [c for c in x.columns if c.startswith("sex_")] == ["sex_M"]
    assert x["sex_M"].eq((raw["sex"] == "M").astype(float)).all()
    groups = [c for c in x.columns if c.startswith("flc.grp_")]
    assert len(groups) == raw["flc.grp"].nunique() - 1 and x[groups].sum(axis=1).le(1).all()


def _rows(roots, encoder, risk_of, seeds=(0, 1)):
    rows = []
    for k, root in enumerate(roots):
        labels = pd.read_parquet(root / "labels.parquet").set_index("patient_id")
        splits = pd.read_csv(root / "splits.csv", dtype={"patient_id": str})
        test = splits.loc[splits["split"] == "test", "patient_id"].tolist()
        for s in seeds:
            risks = risk_of(labels.loc[test], np.random.default_rng(100 * k + s))
            from clinfuse.experiments.metrics import harrell_c_index

            c = harrell_c_index(risks, labels.loc[test, "time"].to_numpy(), labels.loc[test, "event"].to_numpy())
            rows.append({"cohort": "gbsg2", "split_seed": 0, "fold": k, "modality": "tabular", "encoder": encoder,
                         "seed": s, "test_c_index": c, "train_pps": 100.0, "n_params": 10, "error": "",
                         "test_risks": json.dumps(dict(zip(test, risks.tolist())))})
    return rows


def test_summary_pools_the_folds_and_corrects_for_overlapping_training_sets(bench, gbsg2_folds):
    from clinfuse.experiments.compare import corrected_resampled_t

    # the default: noise; the alternative: minus the time with a little noise, far ahead on every fold
    rows = (_rows(gbsg2_folds, "TabularMLPEncoder", lambda lab, g: g.standard_normal(len(lab)))
            + _rows(gbsg2_folds, "FTTransformerEncoder", lambda lab, g: -lab["time"].to_numpy() + g.normal(0, 300, len(lab))))
    roots = {("gbsg2", 0, k): r for k, r in enumerate(gbsg2_folds)}
    refs = {key: {"cox": 0.8} for key in roots}
    text = bench.summarize(rows, refs, roots, "TabularMLPEncoder")
    per_fold = {}
    for enc in ("TabularMLPEncoder", "FTTransformerEncoder"):
        per_fold[enc] = [np.mean([r["test_c_index"] for r in rows if r["encoder"] == enc and r["fold"] == k]) for k in range(3)]
    mean = np.mean(per_fold["FTTransformerEncoder"])
    assert f"| FTTransformerEncoder | {mean:.4f} ± {np.std(per_fold['FTTransformerEncoder'], ddof=1):.4f} |" in text
    assert "| Cox (lifelines, penalizer 0.01) | 0.8000 ± 0.0000 |" in text
    assert text.count("| split 0 fold ") == 3 and "pooled, fixed effect" in text
    splits = pd.read_csv(gbsg2_folds[0] / "splits.csv")["split"]
    st = corrected_resampled_t(np.subtract(per_fold["FTTransformerEncoder"], per_fold["TabularMLPEncoder"]),
                               int((splits == "train").sum()), int((splits == "test").sum()))
    assert st["delta"] > 0.3
    assert f"{st['delta']:+.4f}, 95% CI [{st['low']:+.4f}, {st['high']:+.4f}]" in text
    assert "ahead on 3 of 3 folds" in text


def test_table_from_an_out_csv_rebuilds_the_folds_and_prints_the_same_summary(bench, gbsg2_folds, tmp_path, monkeypatch, capsys):
    rows = (_rows(gbsg2_folds, "TabularMLPEncoder", lambda lab, g: g.standard_normal(len(lab)))
            + _rows(gbsg2_folds, "FTTransformerEncoder", lambda lab, g: -lab["time"].to_numpy() + g.normal(0, 300, len(lab))))
    out = tmp_path / "rows.csv"
    pd.DataFrame(rows).reindex(columns=bench.FIELDS).to_csv(out, index=False)
    roots = {("gbsg2", 0, k): r for k, r in enumerate(gbsg2_folds)}
    expected = bench.summarize(rows, {}, roots, "TabularMLPEncoder")
    monkeypatch.setattr(sys, "argv", ["bench_tabular_real.py", "--table-from", str(out), "--folds", "3",
                                      "--cohort-root", str(tmp_path / "folds"), "--references"])
    bench.main()
    assert capsys.readouterr().out.strip() == expected.strip()
    # the folds were rebuilt where --cohort-root says, the same patients in each test fold
    rebuilt = pd.read_csv(tmp_path / "folds" / "gbsg2-s0-f1of3" / "splits.csv")
    assert rebuilt.equals(pd.read_csv(gbsg2_folds[1] / "splits.csv"))
