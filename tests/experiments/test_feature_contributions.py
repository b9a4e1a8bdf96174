"""Leave-one-out contributions of tabular values and time-series variables: equal to dropping the
key (or the variable's events) from the record."""

from __future__ import annotations

import pytest


def test_feature_contributions_equal_dropping_the_key_from_the_record(trained_prognosis):
    prog, record = trained_prognosis
    (full,) = prog.predict([record], feature_contributions=True)
    per_value = full["feature_contributions"]["tabular"]
    given = [k for k, v in record["tabular"].items() if v is not None]
    assert sorted(per_value) == sorted(given)  # every observed value, and only those
    for col in given:
        without = {**record, "tabular": {k: v for k, v in record["tabular"].items() if k != col}}
        want = full["risk"] - prog.predict([without], contributions=False)[0]["risk"]
        assert per_value[col] == pytest.approx(want, abs=1e-5), col
    assert any(abs(v) > 1e-6 for v in per_value.values())
    no_tab = prog.predict([{k: v for k, v in record.items() if k != "tabular"}], feature_contributions=True)[0]
    assert "tabular" not in no_tab["feature_contributions"] and "timeseries" in no_tab["feature_contributions"]
    assert "feature_contributions" not in prog.predict([record])[0]  # opt-in


def test_feature_contributions_in_a_batch_equal_one_patient_at_a_time(trained_prognosis, monkeypatch):
    import clinfuse.experiments.feature_contributions as fc

    prog, record = trained_prognosis
    tab = record["tabular"]
    others = [
        {**record, "patient_id": "b", "tabular": {**tab, "age": 40.0}},
        {**record, "patient_id": "c", "tabular": {k: v for k, v in tab.items() if k != "sex"}},
        {"patient_id": "d", "genomics": record["genomics"]},
    ]
    monkeypatch.setattr(fc, "CHUNK", 5)  # several fusion chunks
    together = prog.predict([record, *others], feature_contributions=True)
    for rec, got in zip([record, *others], together):
        alone = prog.predict([rec], feature_contributions=True)[0]["feature_contributions"]
        assert got["feature_contributions"].keys() == alone.keys()
        for col, v in alone.get("tabular", {}).items():
            assert got["feature_contributions"]["tabular"][col] == pytest.approx(v, abs=1e-5)


def _events(record):
    ts = record["timeseries"]
    return ts if isinstance(ts, list) else [dict(zip(ts, v)) for v in zip(*ts.values())]


def test_variable_contributions_equal_dropping_its_events(trained_prognosis):
    prog, record = trained_prognosis
    (full,) = prog.predict([record], feature_contributions=True)
    per_var = full["feature_contributions"]["timeseries"]
    events = _events(record)
    variables = sorted({e["variable"] for e in events})
    assert sorted(per_var) == variables and len(variables) >= 2
    for v in variables:
        kept = [e for e in events if e["variable"] != v]
        without = {**record, "timeseries": kept} if kept else {k: x for k, x in record.items() if k != "timeseries"}
        want = full["risk"] - prog.predict([without], contributions=False)[0]["risk"]
        assert per_var[v] == pytest.approx(want, abs=1e-5), v
    # the only variable left: dropping it is dropping the modality
    one = {**record, "timeseries": [e for e in events if e["variable"] == variables[0]]}
    (res,) = prog.predict([one], feature_contributions=True)
    assert res["feature_contributions"]["timeseries"][variables[0]] == pytest.approx(res["contributions"]["timeseries"], abs=1e-5)


def test_cohort_scoring_has_the_same_feature_columns(trained_prognosis, synthetic_cohort):
    prog, record = trained_prognosis
    frame = prog.predict_cohort(synthetic_cohort, patient_ids=[record["patient_id"]], feature_contributions=True,
                                show_progress=False)
    (want,) = prog.predict([record], feature_contributions=True)
    row = frame.iloc[0]
    for m, values in want["feature_contributions"].items():
        for name, v in values.items():
            assert row[f"feature_{m}_{name}"] == pytest.approx(v, abs=1e-5), (m, name)


def test_multiclass_contributions_are_per_class_logit_differences(synthetic_cohort, tmp_path, train_predictor):
    import numpy as np

    from clinfuse.experiments.cohort_records import records_from_cohort

    dm, prog = train_predictor(synthetic_cohort, tmp_path, ["tabular"], d_model=16, task="multiclass")
    pid = next(p for p in dm.cohort.splits["test"] if dm.cohort.readers["tabular"].get(p) is not None)
    rec = {k: v for k, v in records_from_cohort(synthetic_cohort, [pid])[0].items() if k in ("patient_id", "tabular")}
    (full,) = prog.predict([rec], feature_contributions=True)
    col, delta = next(iter(full["feature_contributions"]["tabular"].items()))
    without = {**rec, "tabular": {k: v for k, v in rec["tabular"].items() if k != col}}
    want = np.asarray(full["risk"]) - np.asarray(prog.predict([without])[0]["risk"])
    assert len(delta) == dm.n_classes
    np.testing.assert_allclose(delta, want, atol=1e-5)


def test_note_contributions_equal_dropping_the_note(trained_notes):
    prog, record = trained_notes
    (full,) = prog.predict([record], feature_contributions=True)
    per_note = full["feature_contributions"]["notes"]
    notes = sorted(record["notes"], key=lambda n: n["time"])
    assert list(per_note) == [f"{float(n['time']):g}h" for n in notes] and len(notes) >= 2
    for k, note in enumerate(notes):
        kept = [n for j, n in enumerate(notes) if j != k]
        want = full["risk"] - prog.predict([{**record, "notes": kept}], contributions=False)[0]["risk"]
        assert per_note[f"{float(note['time']):g}h"] == pytest.approx(want, abs=1e-5)


@pytest.fixture(scope="module")
def trained_notes(synthetic_cohort, tmp_path_factory, train_predictor):
    from clinfuse.experiments.cohort_records import records_from_cohort

    dm, prog = train_predictor(synthetic_cohort, tmp_path_factory.mktemp("notes"), ["tabular", "notes"],
                               data={"notes_min_patients": 1})
    reader = dm.cohort.readers["notes"]
    pid = next(p for p in dm.cohort.splits["test"] if (reader.get(p) or {}).get("note_times", ()).__len__() >= 2)
    rec = records_from_cohort(synthetic_cohort, [pid])[0]
    return prog, {k: v for k, v in rec.items() if k in ("patient_id", "tabular", "notes")}
