"""Latency and throughput of ``Prognosis.predict`` on a quickstart-sized model.

    python benchmarks/bench_prognosis.py [--patients 600] [--epochs 1]

Trains the quickstart architecture (d_model 64, TransformerFusion, survival) briefly on a synthetic
cohort, builds the predictor, then times from raw records (files read and preprocessed inside the
call, leave-one-modality-out contributions included): one patient (p50/p90 over repeats; all six
modalities, and tabular only), and batches of 256 (patients/s).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lightning
import numpy as np
import torch

from clinfuse.datasets.datamodule import ClinicalDataModule
from clinfuse.datasets.synthetic import generate_cohort
from clinfuse.experiments.cohort_records import records_from_cohort
from clinfuse.experiments.module import ClinFuseModule
from clinfuse.experiments.prognosis import Prognosis


def _times(fn, reps: int) -> np.ndarray:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return np.array(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patients", type=int, default=600)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--reps", type=int, default=30)
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clinfuse-prognosis-"))
    root = generate_cohort(work / "cohort", n_patients=a.patients, seed=0, show_progress=False)
    lightning.seed_everything(0, verbose=False)
    dm = ClinicalDataModule(str(root))
    model = ClinFuseModule(spec=dm.spec, d_model=64)
    trainer = lightning.Trainer(max_epochs=a.epochs, logger=False, enable_progress_bar=False,
                                enable_checkpointing=False, enable_model_summary=False, default_root_dir=work)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(work / "model.ckpt")
    prog = Prognosis.from_training(work / "model.ckpt", dm)

    ids = list(dm.cohort.splits["test"]) + list(dm.cohort.splits["val"]) + list(dm.cohort.splits["train"])
    records = records_from_cohort(root, ids)
    full = next(r for r in records if len(r) == 7)  # patient_id + all six modalities
    tab_only = {"patient_id": "tab-only", "tabular": full["tabular"]}
    prog.predict([full])  # warm-up
    one = _times(lambda: prog.predict([full]), a.reps)
    tab = _times(lambda: prog.predict([tab_only]), a.reps)
    batch = records[:256]
    b256 = _times(lambda: prog.predict(batch), 3)
    rows = [
        ("one patient, 6 modalities: p50 / p90 (ms)", f"{1000 * np.median(one):.1f} / {1000 * np.quantile(one, 0.9):.1f}"),
        ("one patient, tabular only: p50 / p90 (ms)", f"{1000 * np.median(tab):.1f} / {1000 * np.quantile(tab, 0.9):.1f}"),
        ("batch of 256 (mixed modalities): patients/s", f"{256 / np.median(b256):.0f}"),
        ("torch threads", torch.get_num_threads()),
        ("targets", "p50 <= 10 ms; >= 2,000 patients/s"),
    ]
    print("\n| quantity | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    main()
