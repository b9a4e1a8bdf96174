"""Slide tables and files a user may hand in by mistake: a slide listed twice, a first training
slide of another width, an unparsable cohort.json."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from clinfuse.datasets.cohort import Cohort
from clinfuse.datasets.wsi import WSIReader


def _rewrite(path, width, n=6):
    with h5py.File(path, "w") as fh:
        fh["features"] = np.random.default_rng(0).normal(size=(n, width)).astype(np.float32)


@pytest.mark.parametrize("column", ["slide_id", "path"])
def test_a_slide_listed_twice_is_refused(tiny, column):
    slides_csv = tiny.root / "wsi" / "slides.csv"
    df = pd.read_csv(slides_csv, dtype=str)
    extra = df.iloc[[2]].copy()
    if column == "path":  # the same file under another slide id, or for another patient
        extra["slide_id"], extra["patient_id"] = "copy", "p11"
    pd.concat([df, extra]).to_csv(slides_csv, index=False)
    who = r"\['p02'\]" if column == "slide_id" else r"\['p02', 'p11'\]"
    with pytest.raises(ValueError, match=rf"slides.csv: {column} '{extra[column].iloc[0]}' is listed 2 times \(patient\(s\) {who}\)"):
        WSIReader(tiny.root)


@pytest.mark.parametrize("with_info", [True, False])
def test_a_training_slide_of_another_width_is_named_at_fit(tiny, with_info):
    reader = WSIReader(tiny.root)
    first = next(p for p in tiny.train if p in reader._slides)
    bad = reader._slides[first][-1]
    _rewrite(bad, width=5)  # the first training patient's second slide: the bag no longer stacks
    if not with_info:
        (tiny.root / "cohort.json").unlink()  # the width then comes from most training slides
    with pytest.raises(ValueError, match=rf"{bad.name} \(patient {first}\): features must be \(P>0, 4\), got \(6, 5\)"):
        WSIReader(tiny.root).fit(tiny.train)


def test_a_consistent_width_without_cohort_json_is_learned(tiny):
    (tiny.root / "cohort.json").unlink()
    assert WSIReader(tiny.root).fit(tiny.train).spec() == {"feature_dim": 4}


@pytest.mark.parametrize("text,match", [("{'n_patients': 3}", "not valid JSON: Expecting property name"),
                                        ("[1, 2]", "expected a JSON object, got list")])
def test_a_broken_cohort_json_is_named(tiny, text, match):
    (tiny.root / "cohort.json").write_text(text)
    with pytest.raises(ValueError, match=rf"cohort.json: {match}"):
        Cohort.load(tiny.root)
