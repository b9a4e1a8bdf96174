"""The printed model-vs-oracle table says what its columns are, and no ratio where it means nothing."""

from __future__ import annotations

from clinfuse.experiments.oracle import format_comparison


def test_ratio_by_hand_and_notes():
    text = format_comparison({"test/c_index": 0.7}, {"c_index_full": 0.8, "c_index_observed": 0.75}, "survival",
                             ["tabular", "ecg"], ["tabular", "ecg"])
    row = next(line for line in text.splitlines() if line.startswith("c_index"))
    assert row.split() == ["c_index", "0.7000", "0.8000", "0.7500", "0.875"]
    assert "Bayes-optimal" in text and "Chance is 0.5" in text and "reads" not in text
    assert "not from which are missing" in text  # what oracle(observed) does not use


def test_fewer_loaded_modalities_are_named_and_auprc_has_no_ratio():
    oracle = {"auroc_full": 0.9, "auroc_observed": 0.8, "auprc_full": 0.7, "auprc_observed": 0.6}
    text = format_comparison({"test/auroc": 0.72, "test/auprc": 0.5}, oracle, "binary", ["tabular"], ["tabular", "wsi"])
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith(("auroc", "auprc"))}
    assert rows["auroc"][-1] == "0.800" and rows["auprc"][-1] == "-"
    assert "this model reads ['tabular'] of the cohort's ['tabular', 'wsi']: oracle(observed) is given those" in text


def test_oracle_observed_is_given_the_modalities_the_data_module_loads(synthetic_cohort):
    import pandas as pd

    from clinfuse.datasets.datamodule import ClinicalDataModule
    from clinfuse.datasets.synthetic.oracle_subsets import oracle_for_modalities
    from clinfuse.experiments.metrics import harrell_c_index
    from clinfuse.experiments.oracle import oracle_metrics

    labels = pd.read_parquet(synthetic_cohort / "labels.parquet").set_index("patient_id")
    splits = pd.read_csv(synthetic_cohort / "splits.csv")
    test = splits.loc[splits["split"] == "test", "patient_id"].tolist()
    t, e = labels.loc[test, "time"].to_numpy(), labels.loc[test, "event"].to_numpy()

    def c(table):
        return harrell_c_index(table.set_index("patient_id").loc[test, "risk_observed"].to_numpy(), t, e)

    two = oracle_metrics(ClinicalDataModule(str(synthetic_cohort), modalities=["tabular", "genomics"]), "survival")
    every = oracle_metrics(ClinicalDataModule(str(synthetic_cohort), max_patches=32), "survival")
    assert two["c_index_observed"] == c(oracle_for_modalities(synthetic_cohort, ["tabular", "genomics"]))
    assert every["c_index_observed"] == c(pd.read_parquet(synthetic_cohort / "oracle.parquet"))
    assert two["c_index_full"] == every["c_index_full"] and two["c_index_observed"] < every["c_index_observed"]


def test_per_cause_oracle_observed_is_left_out_when_the_model_reads_fewer_modalities(tmp_path):
    from clinfuse.datasets.datamodule import ClinicalDataModule
    from clinfuse.datasets.synthetic import generate_cohort
    from clinfuse.experiments.oracle import oracle_metrics

    root = generate_cohort(tmp_path / "c", n_patients=120, seed=1, wsi_patches=(4, 8), ecg_fs=100, ecg_seconds=2.0,
                           n_causes=2, show_progress=False)
    every = oracle_metrics(ClinicalDataModule(str(root), max_patches=8, ecg_seconds=2.0), "survival")
    two = oracle_metrics(ClinicalDataModule(str(root), modalities=["tabular", "genomics"]), "survival")
    assert {"c_index_cause1_observed", "c_index_cause2_observed"} <= set(every)
    assert not any(k.startswith("c_index_cause") and k.endswith("_observed") for k in two)
    assert two["c_index_cause1_full"] == every["c_index_cause1_full"]
    test = {"test/c_index": 0.6, "test/c_index_cause1": 0.6, "test/c_index_cause2": 0.6}
    text = format_comparison(test, two, "survival", ["genomics", "tabular"], ["tabular", "genomics", "wsi"])
    row = next(line for line in text.splitlines() if line.startswith("c_index_cause1"))
    assert row.split()[3] == "-" and "-: no oracle(observed) for the modalities this model reads" in text
    assert "-: no oracle" not in format_comparison(test, every, "survival")
