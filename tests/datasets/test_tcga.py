"""TCGA (MCAT / PORPOISE / SurvPath layout) -> cohort folder: values, splits, caching, bad input."""

from __future__ import annotations

import os
import time

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from clinfuse.datasets.genomics import GenomicsReader
from clinfuse.datasets.tabular import TabularReader
from clinfuse.datasets.tcga import DAYS_PER_MONTH, convert_tcga
from clinfuse.datasets.tcga_fixture import SIGNATURES, write_tcga_fixture
from clinfuse.datasets.wsi import WSIReader, read_slide_features

N = 12


@pytest.fixture()
def src(tmp_path):
    return write_tcga_fixture(tmp_path / "src", n_subjects=N, seed=3)


def _convert(src, out, **kw):
    args = dict(genomics=src["genomics"], signatures=src["signatures"], slides_dir=src["slides_dir"])
    return convert_tcga(src["clinical"], out, **{**args, **kw})


def _slide_file(src, slide_id):
    stem = slide_id[: -len(".svs")]
    pt = src["slides_dir"] / "pt_files" / f"{stem}.pt"
    return pt if pt.exists() else src["slides_dir"] / "h5_files" / f"{stem}.h5"


def _independent_bag(src, slide_ids):
    parts = []
    for s in slide_ids:
        path = _slide_file(src, s)
        if path.suffix == ".pt":
            parts.append(torch.load(path).numpy())
        else:
            with h5py.File(path, "r") as fh:
                parts.append(fh["features"][()])
    return np.concatenate(parts)


def test_labels_tabular_and_genomics_match_the_source(src, tmp_path):
    out = _convert(src, tmp_path / "out")
    clin = pd.read_csv(src["clinical"], dtype={"case_id": str})
    per_case = clin.drop_duplicates("case_id").set_index("case_id")
    labels = pd.read_parquet(out / "labels.parquet").set_index("patient_id")
    assert list(labels.index) == list(per_case.index) and set(labels.columns) == {"time", "event"}
    np.testing.assert_allclose(labels["time"], per_case["survival_months"] * 30.4375)
    assert DAYS_PER_MONTH == 365.25 / 12
    np.testing.assert_array_equal(labels["event"], 1 - per_case["censorship"])  # censorship 1 = censored

    tab = TabularReader(out, labels.index).fit(labels.index.tolist())
    assert sorted(tab.spec()["numeric_features"]) == ["age", "is_female"]
    assert sorted(tab.spec()["categorical_features"]) == ["oncotree_code", "site"]  # no ids, outcomes, 'train'
    table = pd.read_parquet(out / "tabular.parquet").set_index("patient_id")
    np.testing.assert_array_equal(table["age"], per_case["age"])

    gen_src = pd.read_csv(src["genomics"], dtype={"case_id": str}).set_index("case_id")
    reader = GenomicsReader(out, labels.index)
    assert not reader.has(per_case.index[-1])  # the fixture's last case has no genomics
    reader.fit([p for p in labels.index if reader.has(p)])
    spec = reader.spec()
    genes_src = [c[: -len("_rnaseq")] for c in gen_src.columns if c.endswith("_rnaseq")]
    assert spec["genes"] == genes_src + [g + "_cnv" for g in genes_src]
    assert spec["mutations"] == ["TP53", "KRAS", "PIK3CA", "PTEN"]
    case = per_case.index[0]
    x = gen_src[[f"{g}_rnaseq" for g in genes_src] + [f"{g}_cnv" for g in genes_src]].to_numpy(float)
    z = (x[0] - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    np.testing.assert_allclose(reader.get(case)["expression"], z, rtol=1e-5, atol=1e-6)
    mut_cols = [c for c in gen_src if c.endswith("_mut")]
    np.testing.assert_array_equal(reader.get(case)["mutations"], gen_src.loc[case, mut_cols])
    # signature families: each lists the family's genes and their copy number, by position in `genes`
    for family, members in SIGNATURES.items():
        expected = sorted(spec["genes"].index(g) for m in members for g in (m, m + "_cnv"))
        assert sorted(spec["gene_groups"][family]) == expected


def test_cnv_can_be_dropped(src, tmp_path):
    out = _convert(src, tmp_path / "out", cnv="drop")
    cols = pd.read_csv(out / "genomics.csv").columns
    assert not any("cnv" in c for c in cols) and sum(c.endswith("_rnaseq") for c in cols) == 8
    assert not pd.read_csv(out / "gene_groups.csv")["gene"].str.contains("cnv").any()


def test_wsi_bags_concatenate_every_slide_of_a_case(src, tmp_path):
    out = _convert(src, tmp_path / "out")
    clin = pd.read_csv(src["clinical"], dtype={"case_id": str})
    reader = WSIReader(out, max_patches=10_000)
    reader.fit([clin["case_id"].iloc[0]])
    for case, rows in clin.groupby("case_id"):
        bag = reader.get(case)["features"]
        np.testing.assert_array_equal(bag, _independent_bag(src, rows["slide_id"]))
    assert clin.groupby("case_id").size().max() > 1  # several slides per case, .pt and .h5 both used
    paths = pd.read_csv(out / "wsi" / "slides.csv")["path"]
    assert paths.str.endswith(".pt").any() and paths.str.endswith(".h5").any()


def test_splits_are_by_case_seeded_and_stratified(src, tmp_path):
    a = pd.read_csv(_convert(src, tmp_path / "a", seed=1) / "splits.csv", dtype=str)
    b = pd.read_csv(_convert(src, tmp_path / "b", seed=1) / "splits.csv", dtype=str)
    pd.testing.assert_frame_equal(a, b)
    assert a["patient_id"].is_unique and len(a) == N
    labels = pd.read_parquet(tmp_path / "a" / "labels.parquet").set_index("patient_id")
    test = a.loc[a["split"] == "test", "patient_id"]
    assert 0 < labels.loc[test, "event"].sum() < len(test) or len(test) < 3


def test_given_split_csv_is_used(src, tmp_path):
    cases = pd.read_csv(src["clinical"], dtype={"case_id": str})["case_id"].unique()
    split = np.array(["train"] * (N - 4) + ["val"] * 2 + ["test"] * 2)
    pd.DataFrame({"case_id": cases, "split": split}).to_csv(tmp_path / "s.csv", index=False)
    out = _convert(src, tmp_path / "out", splits=tmp_path / "s.csv")
    got = pd.read_csv(out / "splits.csv", dtype=str)
    assert got["patient_id"].tolist() == list(cases) and got["split"].tolist() == split.tolist()
    pd.DataFrame({"case_id": cases[:-1], "split": split[:-1]}).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(ValueError, match=rf"short.csv.*{cases[-1]}.*no split"):
        _convert(src, tmp_path / "out2", splits=tmp_path / "short.csv")


def test_second_call_reuses_and_changed_input_reconverts(src, tmp_path, capsys):
    out = _convert(src, tmp_path / "out")
    before = os.stat(out / "labels.parquet").st_mtime_ns
    time.sleep(0.01)
    _convert(src, tmp_path / "out")
    assert os.stat(out / "labels.parquet").st_mtime_ns == before
    assert "reusing converted cohort" in capsys.readouterr().out
    clin = pd.read_csv(src["clinical"], dtype={"case_id": str})
    case = clin.loc[0, "case_id"]
    clin.loc[clin["case_id"] == case, "age"] = 33.0  # every slide row of the case
    clin.to_csv(src["clinical"], index=False)
    _convert(src, tmp_path / "out")
    assert os.stat(out / "labels.parquet").st_mtime_ns != before
    assert pd.read_parquet(out / "tabular.parquet").set_index("patient_id").loc[case, "age"] == 33.0


# ---------------------------------------------------------------------- bad input, one test each
def _edit_clinical(src, **changes):
    clin = pd.read_csv(src["clinical"], dtype={"case_id": str})
    for col, (row, value) in changes.items():
        clin[col] = clin[col].astype(object)
        clin.loc[row, col] = value
    clin.to_csv(src["clinical"], index=False)
    return clin


def test_missing_column(src, tmp_path):
    pd.read_csv(src["clinical"]).drop(columns="censorship").to_csv(src["clinical"], index=False)
    with pytest.raises(ValueError, match=r"tcga_clinical.csv.*missing required column.*censorship"):
        _convert(src, tmp_path / "out")


@pytest.mark.parametrize("months", [0.0, -3.0])
def test_non_positive_survival_months(src, tmp_path, months):
    case = _edit_clinical(src, survival_months=(4, months)).loc[4, "case_id"]
    with pytest.raises(ValueError, match=rf"tcga_clinical.csv.*'survival_months' must be > 0.*{case}"):
        _convert(src, tmp_path / "out")


def test_censorship_not_0_1(src, tmp_path):
    clin = _edit_clinical(src, censorship=(5, 2))
    with pytest.raises(ValueError, match=rf"tcga_clinical.csv.*'censorship' must be 0/1.*{clin.loc[5, 'case_id']}"):
        _convert(src, tmp_path / "out")


def test_survival_differing_between_slides_of_a_case(src, tmp_path):
    clin = pd.read_csv(src["clinical"], dtype={"case_id": str})
    row = int(np.flatnonzero(clin["case_id"].duplicated())[0])
    _edit_clinical(src, survival_months=(row, 999.0))
    with pytest.raises(ValueError, match=rf"'survival_months' differs.*{clin.loc[row, 'case_id']}"):
        _convert(src, tmp_path / "out")


def test_duplicate_case_in_genomics(src, tmp_path):
    gen = pd.read_csv(src["genomics"], dtype={"case_id": str})
    pd.concat([gen, gen.iloc[[2]]]).to_csv(src["genomics"], index=False)
    with pytest.raises(ValueError, match=rf"tcga_genomics.csv.*'case_id' has duplicate.*{gen.loc[2, 'case_id']}"):
        _convert(src, tmp_path / "out")


def test_slide_without_feature_file_is_skipped_with_a_warning(src, tmp_path):
    clin = pd.read_csv(src["clinical"], dtype={"case_id": str})
    sizes = clin.groupby("case_id", sort=False).size()
    multi, single = sizes[sizes > 1].index[0], sizes[sizes == 1].index[0]
    gone_multi = clin.loc[clin["case_id"] == multi, "slide_id"].iloc[0]
    gone_single = clin.loc[clin["case_id"] == single, "slide_id"].iloc[0]
    for s in (gone_multi, gone_single):
        _slide_file(src, s).unlink()
    with pytest.warns(UserWarning) as record:
        out = _convert(src, tmp_path / "out")
    messages = [str(w.message) for w in record]
    assert any("no feature file" in m and gone_multi in m and gone_single in m for m in messages), messages
    assert any(single in m and "absent" in m for m in messages), messages
    reader = WSIReader(out, max_patches=10_000)
    reader.fit([multi])
    kept = clin.loc[(clin["case_id"] == multi) & (clin["slide_id"] != gone_multi), "slide_id"]
    np.testing.assert_array_equal(reader.get(multi)["features"], _independent_bag(src, kept))
    assert not reader.has(single)  # its only slide is gone: wsi absent, the case itself stays
    assert single in pd.read_parquet(out / "labels.parquet")["patient_id"].tolist()


@pytest.mark.parametrize("suffix", [".pt", ".h5"])
def test_corrupt_slide_file_fails_at_read_time_naming_file_and_case(src, tmp_path, suffix):
    clin = pd.read_csv(src["clinical"], dtype={"case_id": str})
    files = [(c, _slide_file(src, s)) for c, s in zip(clin["case_id"], clin["slide_id"])]
    case, path = next((c, p) for c, p in files[3:] if p.suffix == suffix)  # not the first slide (read for F)
    path.write_bytes(b"not a slide file")
    out = _convert(src, tmp_path / "out")  # conversion only records paths
    reader = WSIReader(out)
    reader.fit([clin["case_id"].iloc[0]])
    with pytest.raises(ValueError, match=rf"{path.name}.*{case}.*corrupt"):
        reader.get(case)


def test_signature_gene_missing_from_genomics_warns_naming_it(src, tmp_path):
    sig = pd.read_csv(src["signatures"])
    sig.loc[len(sig)] = ["NOTAGENE"] + [np.nan] * (sig.shape[1] - 1)
    sig.to_csv(src["signatures"], index=False)
    with pytest.warns(UserWarning, match="NOTAGENE"):
        out = _convert(src, tmp_path / "out")
    assert "NOTAGENE" not in pd.read_csv(out / "gene_groups.csv")["gene"].tolist()


@pytest.mark.parametrize(
    "value, message",
    [({"a": torch.zeros(2, 3)}, "one tensor"), (torch.zeros(4, 3, dtype=torch.int64), "floating point"),
     (torch.zeros(5), r"\(P>0, F\)"), (torch.tensor([[1.0, float("nan")]]), "NaN")],
)
def test_pt_reader_validates_content(tmp_path, value, message):
    torch.save(value, tmp_path / "s.pt")
    with pytest.raises(ValueError, match=rf"s.pt \(case X\).*{message}"):
        read_slide_features(tmp_path / "s.pt", where="(case X)")


def test_pt_reader_reads_float16_as_float32(tmp_path):
    x = torch.randn(6, 4, dtype=torch.float16)
    torch.save(x, tmp_path / "s.pt")
    got = read_slide_features(tmp_path / "s.pt", feature_dim=4)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, x.float().numpy())


def test_cohort_and_datamodule_round_trip(src, tmp_path):
    from clinfuse.datasets.cohort import Cohort
    from clinfuse.datasets.datamodule import ClinicalDataModule

    out = _convert(src, tmp_path / "out")
    cohort = Cohort.load(out).fit()
    assert cohort.modalities == ["tabular", "wsi", "genomics"]
    assert cohort.info["time_unit"] == "days" and cohort.spec()["wsi"] == {"feature_dim": 8}
    dm = ClinicalDataModule(root=str(out), batch_size=N, max_patches=10_000)
    batch = next(iter(dm.split_dataloader("train")))
    clin = pd.read_csv(src["clinical"], dtype={"case_id": str})
    per_case = clin.drop_duplicates("case_id").set_index("case_id")
    ids = batch["patient_id"]
    np.testing.assert_allclose(batch["labels"]["time"], per_case.loc[ids, "survival_months"] * 30.4375, rtol=1e-6)
    np.testing.assert_array_equal(batch["labels"]["event"], 1 - per_case.loc[ids, "censorship"])
    wsi = batch["inputs"]["wsi"]
    for i, case in enumerate(ids):
        bag = _independent_bag(src, clin.loc[clin["case_id"] == case, "slide_id"])
        np.testing.assert_array_equal(wsi["features"][i, : len(bag)].numpy(), bag)
        assert int(wsi["mask"][i].sum()) == len(bag)


def test_bad_input_leaves_an_existing_conversion_untouched(src, tmp_path):
    out = _convert(src, tmp_path / "out")
    before = pd.read_parquet(out / "labels.parquet")
    _edit_clinical(src, censorship=(0, 7))
    with pytest.raises(ValueError, match="censorship"):
        _convert(src, out)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "labels.parquet"), before)
