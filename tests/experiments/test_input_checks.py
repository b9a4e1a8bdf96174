"""Warnings for inputs far outside the training distribution: by hand, and through the predictor."""

from __future__ import annotations

import numpy as np

from clinfuse.experiments.input_checks import MAX_LISTED, out_of_range

TAB = {"fitted": {"numeric_features": ["age", "creatinine"], "mean": [60.0, 1.1], "std": [15.0, 0.35]}}


def test_tabular_unit_error_is_named_with_value_and_distance():
    z = np.array([(70 - 60) / 15, (97.0 - 1.1) / 0.35], dtype=np.float32)
    item = {"numeric": z, "numeric_observed": np.array([True, True]), "categorical": np.zeros(0, int)}
    (msg,) = out_of_range("tabular", TAB, item)
    assert msg.startswith("tabular.creatinine: 97 is +274 training sd from the training mean 1.1")
    item["numeric_observed"] = np.array([True, False])  # a missing value (stored as 0 anyway) is never judged
    assert out_of_range("tabular", TAB, item) == []
    assert out_of_range("tabular", TAB, None) == [] and out_of_range("ecg", TAB, {"signal": 1}) == []


def test_timeseries_and_genomics_most_extreme_first_and_capped():
    ts = {"fitted": {"variables": ["hr", "lactate"], "mean": [80.0, 1.5], "std": [10.0, 0.5]}}
    item = {"values": np.array([0.5, 12.0, -30.0]), "variables": np.array([0, 1, 0]), "times": np.zeros(3)}
    assert out_of_range("timeseries", ts, item) == [
        "timeseries.hr: -220 is -30 training sd from the training mean 80 (unit?)",
        "timeseries.lactate: 7.5 is +12 training sd from the training mean 1.5 (unit?)",
    ]
    n = MAX_LISTED + 3
    gen = {"fitted": {"genes": [f"G{i}" for i in range(n)], "mean": [5.0] * n, "std": [1.0] * n}}
    warns = out_of_range("genomics", gen, {"expression": np.arange(11.0, 11.0 + n), "mutations": np.zeros(0)})
    assert len(warns) == MAX_LISTED + 1 and warns[0].startswith(f"genomics.G{n - 1}_rnaseq")
    assert warns[-1] == "genomics: 3 more value(s) beyond 10 training sd"
    assert out_of_range("genomics", gen, {"expression": np.full(n, 9.9)}) == []


def test_predictor_reports_and_still_predicts(trained_prognosis, monkeypatch):
    prog, record = trained_prognosis
    fine = prog.predict([record])[0]
    assert fine["input_warnings"] == []
    tab = dict(record["tabular"], creatinine=97.0)  # umol/L sent to a mg/dL model
    bad = prog.predict([{**record, "patient_id": "units", "tabular": tab}])[0]
    assert "error" not in bad and np.isfinite(bad["risk"])
    assert len(bad["input_warnings"]) == 1 and bad["input_warnings"][0].startswith("tabular.creatinine: 97 is +")
    monkeypatch.setattr(prog, "max_input_sd", 1e6)
    assert prog.predict([{**record, "tabular": tab}])[0]["input_warnings"] == []


def test_ecg_amplitude_times_and_vocabulary_by_hand():
    ecg = {"fitted": {"amplitude_mv": 0.2}}
    rng = np.random.default_rng(0)
    signal = rng.normal(scale=0.2, size=(3, 500))
    item = {"signal": signal, "lead_mask": np.array([True, True, False])}
    assert out_of_range("ecg", ecg, item) == []
    (msg,) = out_of_range("ecg", ecg, {**item, "signal": signal * 1000})  # microvolts sent as millivolts
    amplitude = float(np.median((signal * 1000)[:2].std(axis=1)))  # the two present leads
    assert msg == (f"ecg.signal: median lead amplitude (sd) {amplitude:.4g} mV is {amplitude / 0.2:.3g}x the "
                   f"training records' 0.2 mV (unit? the signal must be in mV)")
    assert out_of_range("ecg", ecg, {**item, "signal": signal / 1000})  # volts sent as millivolts
    assert out_of_range("ecg", {"fitted": {}}, item) == []  # a predictor saved before the statistic: not checked

    ts = {"fitted": {"variables": ["hr"], "mean": [80.0], "std": [10.0], "horizon_hours": 48.0}}
    events = {"values": np.zeros(3), "variables": np.zeros(3, int), "times": np.array([1.0, 30.0, 90.0])}
    assert out_of_range("timeseries", ts, events) == []
    minutes = {**events, "times": events["times"] * 60}
    assert out_of_range("timeseries", ts, minutes) == [
        "timeseries.time: 2 event(s) up to 5400 h, past 2x the training horizon of 48 h (unit? times must be hours from admission)"]

    notes = {"config": {"tokenizer": "words"}, "fitted": {}}
    ids = np.array([[5, 1, 1, 0], [1, 7, 1, 1]])
    item = {"token_ids": ids, "token_mask": ids != 0, "note_times": np.zeros(2)}
    assert out_of_range("notes", notes, item) == ["notes: 5 of 7 words (71%) are not in the model's vocabulary (another language or note format?)"]
    assert out_of_range("notes", {"config": {"tokenizer": "bpe"}, "fitted": {}}, item) == []


def test_wsi_bag_from_another_extractor_by_hand():
    rng = np.random.default_rng(0)
    train = rng.normal(loc=0.5, scale=2.0, size=(5000, 16))
    fitted = {"feature_mean": train.mean(0).tolist(), "feature_std": train.std(0).tolist()}
    same = rng.normal(loc=0.5, scale=2.0, size=(300, 16))
    assert out_of_range("wsi", {"fitted": fitted}, {"features": same}) == []
    other = rng.normal(loc=20.0, scale=0.1, size=(300, 16))  # same width, another encoder's scale
    (msg,) = out_of_range("wsi", {"fitted": fitted}, {"features": other})
    assert msg.startswith("wsi.features: the bag's mean features lie a median 9.") and "another patch feature extractor" in msg
    assert out_of_range("wsi", {"fitted": {"feature_dim": 16}}, {"features": other}) == []  # saved before the statistic


def test_wsi_reader_fits_the_feature_statistics(synthetic_cohort):
    from clinfuse.datasets.cohort import Cohort
    from clinfuse.datasets.wsi import STAT_BAGS

    cohort = Cohort.load(synthetic_cohort, ["wsi"]).fit()
    reader, fitted = cohort.readers["wsi"], cohort.readers["wsi"].state_dict()["fitted"]
    train = [p for p in cohort.splits["train"] if reader.has(p)]
    ids = train[:: max(1, len(train) // STAT_BAGS)][:STAT_BAGS]
    patches = np.concatenate([reader._read_bag(p) for p in ids]).astype(np.float64)
    np.testing.assert_allclose(fitted["feature_mean"], patches.mean(0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(fitted["feature_std"], patches.std(0), rtol=1e-6)
    # the cohort's own test bags pass the check
    for pid in [p for p in cohort.splits["test"] if reader.has(p)][:10]:
        assert out_of_range("wsi", reader.state_dict(), reader.get(pid)) == []


def test_unseen_categorical_levels_are_named():
    state = {"fitted": {**TAB["fitted"], "categorical_features": ["sex", "ward"], "levels": {"sex": ["F", "M"], "ward": ["icu"]}}}
    item = {"numeric": np.zeros(2, np.float32), "numeric_observed": np.array([False, False]),
            "categorical": np.array([1, 0])}  # sex: a level not in training; ward: missing (0), never judged
    assert out_of_range("tabular", state, item) == [
        "tabular.sex: a level not seen in training (treated as unseen; training levels: ['F', 'M'])"]
    item["categorical"] = np.array([2, 2])
    assert out_of_range("tabular", state, item) == []


def test_unseen_level_reaches_the_prediction_and_cohort_scoring(trained_prognosis, synthetic_cohort, tmp_path):
    import shutil

    import pandas as pd

    prog, record = trained_prognosis
    col = next(c for c in prog.states["tabular"]["fitted"]["categorical_features"] if c in record["tabular"])
    got = prog.predict([{**record, "tabular": {**record["tabular"], col: "female"}}])[0]
    assert any(w.startswith(f"tabular.{col}: a level not seen in training") for w in got["input_warnings"])
    copy = tmp_path / "c"
    shutil.copytree(synthetic_cohort, copy, ignore=shutil.ignore_patterns("ecg", "wsi", ".clinfuse_cache"))
    tab = pd.read_parquet(copy / "tabular.parquet")
    tab[col] = tab[col].astype("string") + "_recoded"
    tab.to_parquet(copy / "tabular.parquet", index=False)
    frame = prog.predict_cohort(copy, split="test", show_progress=False)
    observed = frame["modalities_used"].str.contains("tabular")
    assert frame.loc[observed, "input_warnings"].str.contains(f"tabular.{col}: a level not seen in training").any()


def test_median_helper_equals_numpy_median():
    from clinfuse.experiments.input_checks import _median

    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 12, 13, 768):
        x = rng.normal(size=n)
        assert _median(x) == float(np.median(x))
    assert _median(np.array([4.0, 1.0, 3.0, 2.0])) == 2.5


def test_lead_sd_helper_equals_numpy_std_in_float64():
    from clinfuse.experiments.input_checks import _lead_sd

    rng = np.random.default_rng(0)
    # float32 leads with a baseline offset 25x their sd (the centring must come before squaring)
    leads = (rng.normal(scale=0.2, size=(12, 1000)) + rng.uniform(-5, 5, size=(12, 1))).astype(np.float32)
    np.testing.assert_allclose(_lead_sd(leads), leads.std(axis=1, dtype=np.float64), rtol=1e-5)
    np.testing.assert_allclose(_lead_sd(leads.astype(np.float64)), leads.astype(np.float64).std(axis=1), rtol=1e-12)
    assert _lead_sd(np.zeros((2, 5), np.float32)).tolist() == [0.0, 0.0]
