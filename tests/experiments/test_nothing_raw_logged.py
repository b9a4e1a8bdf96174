"""What ``clinfuse fit`` records (MLflow store, artifacts, the prediction model, checkpoints) holds no
note text, no name from one patient's notes and no patient id."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from clinfuse.experiments.cli import cli_main

REPO = Path(__file__).resolve().parents[2]
SECRET = "smithjohn mrn48213"


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_fit_logs_no_note_text_names_or_patient_ids(synthetic_cohort, tmp_path, monkeypatch):
    cohort = tmp_path / "cohort"
    shutil.copytree(synthetic_cohort, cohort)
    splits = pd.read_parquet(cohort / "splits.parquet") if (cohort / "splits.parquet").exists() else pd.read_csv(cohort / "splits.csv")
    notes = pd.read_parquet(cohort / "notes.parquet")
    train_with_notes = sorted(set(splits.loc[splits["split"] == "train", "patient_id"]) & set(notes["patient_id"]))
    pid = train_with_notes[0]
    notes.loc[notes["patient_id"] == pid, "text"] += f" seen by dr {SECRET}."
    notes.to_parquet(cohort / "notes.parquet", index=False)

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cli_main(["fit", "--config", str(REPO / "experiments" / "quickstart.yaml"), "--data.root", str(cohort),
              "--data.synth_if_missing=false", "--data.batch_size=32", "--data.max_patches=32",
              "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"])

    recorded = _files(work)  # mlflow.db, mlartifacts/ (checkpoint, config, figures, prognosis model), checkpoints/
    assert any(p.name == "mlflow.db" for p in recorded) and any(p.suffix == ".ckpt" for p in recorded)
    assert any(p.name == "MLmodel" for p in recorded)
    texts = [t.encode() for t in notes["text"].str.lower().head(20)]
    ids = [p.encode() for p in splits["patient_id"].astype(str)]
    for path in recorded:
        data = path.read_bytes().lower()
        for word in SECRET.split():
            assert word.encode() not in data, f"{word!r} (one patient's note) found in {path}"
        assert not any(t in data for t in texts), f"a note's text found in {path}"
        leaked = [i for i in ids if i in data]
        assert not leaked, f"patient ids {leaked[:5]} found in {path}"
