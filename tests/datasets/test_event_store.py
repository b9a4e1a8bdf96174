"""The on-disk event store behind TimeseriesReader: order detection, reuse, rebuild, pickling."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

import clinfuse.datasets.event_store as store_module
import clinfuse.datasets.timeseries as ts_module
from clinfuse.datasets.event_store import CACHE_DIR, open_store
from clinfuse.datasets.timeseries import TimeseriesReader


def _events(n_patients: int = 30, per: int = 9, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in rng.permutation(n_patients):  # patients grouped, but NOT in id order
        t = np.sort(rng.integers(0, 5, per)).astype(float)  # ties
        rows.append(pd.DataFrame({"patient_id": f"p{i}", "time": t,
                                  "variable": rng.choice(["hr", "sbp", "lact"], per), "value": rng.normal(size=per)}))
    return pd.concat(rows, ignore_index=True)


def _as_dict(reader: TimeseriesReader) -> dict[str, dict[str, np.ndarray]]:
    return {p: reader.get(p) for p in reader.patient_ids}


def _assert_same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for p in a:
        for k in ("times", "variables", "values"):
            np.testing.assert_array_equal(a[p][k], b[p][k], err_msg=f"{p} {k}")


def test_grouped_file_is_not_sorted_and_matches_a_shuffled_copy(tmp_path, monkeypatch):
    """A file grouped by patient keeps its patient order on disk (no sort step); a row-shuffled
    copy of the same events is sorted and gives identical per-patient arrays."""
    monkeypatch.setattr(ts_module, "_BATCH_ROWS", 11)  # runs of one patient cross batch boundaries
    df = _events()
    grouped, shuffled = tmp_path / "g", tmp_path / "s"
    grouped.mkdir(), shuffled.mkdir()
    df.to_parquet(grouped / "timeseries.parquet", index=False)
    df.iloc[np.random.default_rng(1).permutation(len(df))].to_parquet(shuffled / "timeseries.parquet", index=False)
    sorts = []
    real_sort = store_module._sort_files
    monkeypatch.setattr(store_module, "_sort_files", lambda out: (sorts.append(out), real_sort(out)))
    train = [f"p{i}" for i in range(20)]
    a = TimeseriesReader(grouped, max_events=100).fit(train)
    assert sorts == []
    assert [p.decode() for p in a._store.patients] == list(dict.fromkeys(df["patient_id"]))  # file order kept
    b = TimeseriesReader(shuffled, max_events=100).fit(train)
    assert len(sorts) == 1
    sa, sb = a.state_dict()["fitted"], b.state_dict()["fitted"]
    assert sa["variables"] == sb["variables"] and sa["horizon_hours"] == sb["horizon_hours"]
    np.testing.assert_allclose(sa["mean"] + sa["std"], sb["mean"] + sb["std"], rtol=1e-12)  # summation order
    # ties differ between the two files' orders only where one patient has equal times; compare
    # times exactly and (time, variable, value) as sets per time
    for p in a.patient_ids:
        x, y = a.get(p), b.get(p)
        np.testing.assert_array_equal(x["times"], y["times"])
        kx = sorted(zip(x["times"], x["variables"], x["values"]))
        ky = sorted(zip(y["times"], y["variables"], y["values"]))
        assert kx == ky


def test_store_is_reused_then_rebuilt_when_the_file_changes(tmp_path, monkeypatch):
    df = _events()
    df.to_parquet(tmp_path / "timeseries.parquet", index=False)
    first = _as_dict(TimeseriesReader(tmp_path).fit(["p1", "p2", "p3"]))
    stores = list((tmp_path / CACHE_DIR).iterdir())
    assert len(stores) == 1 and (stores[0] / "meta.json").exists()

    def no_build(*a, **k):
        raise AssertionError("store rebuilt although the file did not change")

    monkeypatch.setattr(store_module, "_build", no_build)
    _assert_same(first, _as_dict(TimeseriesReader(tmp_path).fit(["p1", "p2", "p3"])))
    monkeypatch.undo()
    df.loc[df["patient_id"] == "p4", "value"] += 100.0  # same size, new content
    df.to_parquet(tmp_path / "timeseries.parquet", index=False)
    second = TimeseriesReader(tmp_path).fit(["p1", "p2", "p3"])
    assert not np.allclose(second.get("p4")["values"], first["p4"]["values"])
    assert [s.name for s in (tmp_path / CACHE_DIR).iterdir()] != [stores[0].name]
    assert len(list((tmp_path / CACHE_DIR).iterdir())) == 1  # the stale store is removed


def test_unknown_patient_is_caught_on_a_reused_store(tmp_path):
    _events().to_parquet(tmp_path / "timeseries.parquet", index=False)
    TimeseriesReader(tmp_path)
    with pytest.raises(ValueError, match=r"timeseries\.parquet.*p7"):
        TimeseriesReader(tmp_path, known_ids=[f"p{i}" for i in range(30) if i != 7])


def test_from_state_and_pickled_reader_in_another_process(tmp_path):
    _events().to_parquet(tmp_path / "timeseries.parquet", index=False)
    reader = TimeseriesReader(tmp_path, max_events=4).fit([f"p{i}" for i in range(15)])
    want = _as_dict(reader)
    assert all(len(v["times"]) == 4 for v in want.values())  # most recent 4 of 9
    _assert_same(want, _as_dict(TimeseriesReader.from_state(tmp_path, reader.state_dict())))
    _assert_same(want, _as_dict(pickle.loads(pickle.dumps(reader))))
    code = (
        "import pickle, sys, numpy as np\n"
        "r = pickle.loads(sys.stdin.buffer.read())\n"
        "print(float(sum(np.abs(r.get(p)['values']).sum() for p in r.patient_ids)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(reader), capture_output=True, check=True)
    total = sum(np.abs(v["values"]).sum() for v in want.values())
    assert float(out.stdout) == pytest.approx(float(total), rel=1e-6)


def test_unseen_variable_patient_becomes_absent_and_refit_restores_it(tmp_path):
    df = pd.DataFrame({"patient_id": ["a", "a", "b", "c"], "time": [0.0, 1.0, 0.0, 2.0],
                       "variable": ["hr", "hr", "temp", "hr"], "value": [1.0, 3.0, 37.0, 2.0]})
    df.to_parquet(tmp_path / "timeseries.parquet", index=False)
    reader = TimeseriesReader(tmp_path)
    with pytest.warns(UserWarning, match=r"dropping 1 events.*temp"):
        reader.fit(["a", "c"])
    assert reader.get("b") is None and reader.patient_ids == ["a", "c"]
    np.testing.assert_allclose(reader.get("a")["values"], [-1.2247449, 1.2247449], rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reader.fit(["a", "b"])  # now "temp" is a training variable
    assert reader.patient_ids == ["a", "b", "c"] and reader.get("b")["variables"].tolist() == [1]


def test_unwritable_cache_folder_falls_back_to_a_temporary_store(tmp_path, monkeypatch):
    _events().to_parquet(tmp_path / "timeseries.parquet", index=False)
    (tmp_path / CACHE_DIR).write_text("not a folder")  # mkdir fails whoever runs the test
    with pytest.warns(UserWarning, match="not writable"):
        reader = TimeseriesReader(tmp_path).fit(["p1", "p2"])
    assert len(reader.get("p3")["times"]) == 9
    folder = reader._store.folder
    assert folder.name.startswith("clinfuse-events-") and (folder / "meta.json").exists()
    del reader
    import gc

    gc.collect()
    assert not folder.exists()  # the temporary store goes with its reader (it was left in /tmp)


def test_open_store_names_the_file_for_bad_rows(tmp_path, monkeypatch):
    df = _events()
    df.loc[40, "time"] = np.inf
    df.to_parquet(tmp_path / "timeseries.parquet", index=False)
    with pytest.raises(ValueError, match=rf"timeseries\.parquet.*'time'.*{df.loc[40, 'patient_id']}"):
        open_store(tmp_path / "timeseries.parquet", batch_rows=16)
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / CACHE_DIR).iterdir())  # no leftovers


class _Items(__import__("torch").utils.data.Dataset):
    def __init__(self, reader, ids):
        self.reader, self.ids = reader, ids

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return self.reader.get(self.ids[i])


def test_forked_dataloader_workers_read_the_same_events(tmp_path):
    """Workers forked after the reader opened its descriptor open their own and read the same."""
    import torch

    _events().to_parquet(tmp_path / "timeseries.parquet", index=False)
    reader = TimeseriesReader(tmp_path).fit([f"p{i}" for i in range(15)])
    ids = reader.patient_ids
    want = [reader.get(p) for p in ids]  # opens the descriptor in this process first
    loader = torch.utils.data.DataLoader(_Items(reader, ids), batch_size=None, num_workers=2,
                                         multiprocessing_context="fork")
    got = list(loader)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        for k in ("times", "variables", "values"):
            np.testing.assert_array_equal(np.asarray(g[k]), w[k])


def test_null_patient_id_names_its_file_rows(tmp_path):
    df = _events()
    df["patient_id"] = df["patient_id"].astype(object)
    df.loc[[37, 40], "patient_id"] = None
    df.to_parquet(tmp_path / "timeseries.parquet", index=False)
    with pytest.raises(ValueError, match=r"timeseries\.parquet: column 'patient_id' is null in row\(s\) \[37, 40\]"):
        open_store(tmp_path / "timeseries.parquet", batch_rows=16)  # rows of the third batch: offset counted
