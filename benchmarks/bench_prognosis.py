"""Latency and throughput of ``Prognosis.predict`` on a quickstart-sized model.

    python benchmarks/bench_prognosis.py [--patients 600] [--epochs 1] [--system-allocator]

Trains the quickstart architecture (d_model 64, TransformerFusion, survival) briefly on a synthetic
cohort, builds the predictor, then times ``predict`` on raw records, with and without the leave-one-modality-out
contributions, for two input forms: files (WFDB records and .h5 bags read inside the call) and the
form a REST client sends (the ECG as an in-memory signal, the time series as columns; WSI bags as
files, then as in-memory arrays): one patient (p50/p90 over repeats; all six modalities) and batches of 256. Last, the
whole cohort folder scored by ``Prognosis.predict_cohort`` (the restored readers, batches of 256).
Several single-threaded server processes together: ``bench_prognosis_workers.py``.

Measured (2 CPU cores shared with another job, load average 0.8-1.5; two runs each, alternating
with the code before packed fusion and batched ECG resampling):

| inputs | contributions | one patient p50 (ms) | batch 256 (patients/s) | before: p50 (ms) | before: batch |
|---|---|---|---|---|---|
| from files | yes | 8.3-8.7 | 272-274 | 13.0-13.9 | 63-66 |
| from files | no | 6.6-6.9 | 384-398 | 8.2-8.7 | 206-213 |
| in-memory ECG, columnar series | yes | 6.6 | 403-407 | 10.8-11.4 | 68-71 |
| in-memory ECG, columnar series | no | 4.9 | 757-762 | 6.4-6.8 | 272-274 |

Later, on an otherwise idle machine: 7.9 / 6.6 / 6.1 / 4.8 ms and 287 / 417 / 429 / 769 patients/s
(rows in the same order); ``predict_cohort``: 1,164 patients/s without contributions, 512 with.

Where an in-memory batch of 256 goes (same machine, 2026-12-01, third session): parsing and
validating the raw inputs 177 ms; collating + running the model on the parsed batch 134 ms without
contributions (1,916 patients/s for that part alone) and 428 ms with them (598 patients/s). So on 2
cores the model part by itself is below 2,000 patients/s; the target cannot be met here whatever
the parsing costs. Overlapping the parsing of the next 32-128 patients with the model on the
current ones in a thread was tried and was slower (292 ms -> 343-435 ms: the GIL), as were
DataLoader worker processes for ``predict_cohort``.

In-memory slides (2026-12-01, fourth session; slides as ``{"features": array}`` instead of
``.h5`` paths, the other inputs as before): one patient 4.6 ms p50 (5.9 with contributions); batch
256: 937 patients/s without contributions (731 with slide files in the same run), 479 with them.
Parsing + validation of the batch fell from 177 to 101 ms; collate + model 141 ms (1,820
patients/s for that part). Through the pyfunc wire DataFrame with contributions, ECG and slides as
JSON lists: 82 patients/s (182 MB); both as base64: 308 patients/s (83 MB).

At the end of that session, after the input checks its audit added (same command, idle machine):
in-memory slides 896 patients/s (450 with contributions), one patient 5.0 ms p50; parsing 111 ms,
collate + model 124 ms (2,063 patients/s for that part in this run; 1,660-2,063 over the
session's three runs); pyfunc wire 80 (lists) / 290 (base64) patients/s; ``predict_cohort`` 1,013.

Fifth session (2026-12-01, after ECG leads came to be picked in one float32 pass and resampled
without a concatenated copy; idle machine, but slower across the board than the run before): one
patient 6.1 ms p50 (7.5 with contributions); batch 256 in memory 812 patients/s (388 with them);
parsing 119 ms, collate + model 159 ms (1,605 patients/s); pyfunc wire 77 (lists) / 271 (base64);
``predict_cohort`` 998 / 448. ``parse_break``-style timing of the ECG part alone: lead picking
34 -> 21-25 ms, resampling 30 -> 32-37 ms (the blocks are now transposed views).

Ninth session (2026-12-02): the allocator. Profiling the model part showed the 32 MB activations of
the slide encoder and the ECG stem page-faulted in afresh on every batch (glibc returns such blocks to
the system when they are freed). ``clinfuse.experiments.cpu_allocator.keep_freed_memory``, which
the serving and scoring processes now apply, keeps them. Two runs each way, alternating (this
machine was slower than the fifth session's throughout), with it / with ``--system-allocator``:

| inputs | contributions | one patient p50 (ms) | batch 256 (patients/s) | glibc defaults: p50 | batch |
|---|---|---|---|---|---|
| from files | yes | 10.5 / 12.5 | 158 / 184 | 13.6 / 13.9 | 126 / 147 |
| from files | no | 8.7 / 9.7 | 405 / 377 | 10.4 / 13.9 | 228 / 208 |
| in-memory ECG and slides | yes | 7.2 / 7.9 | 559 / 490 | 9.6 / 9.8 | 201 / 223 |
| in-memory ECG and slides | no | 4.1 / 6.9 | 1,059 / 1,124 | 8.5 / 8.0 | 719 / 726 |

Model part of the in-memory batch of 256: 132 / 121 ms (1,937 / 2,123 patients/s) against 214 / 183
ms; parsing 78-104 ms either way; pyfunc wire (base64) 251 / 286 against 222 / 211 patients/s;
``predict_cohort`` 932 / 939 without contributions either way, 422 / 446 with them against 295 / 298.
The batch-256 target stays out of reach on 2 cores: parsing alone plus the model part is ~200 ms.

Sixteenth session (2026-12-03; leaner ECG, time-series and fusion inference paths; idle machine,
two runs): rows in the order of the first table, with slides in memory last: 6.2 / 6.0, 5.0 / 5.1,
5.9 / 6.0, 4.6 / 4.7, 5.3 / 5.5, 4.0 / 4.2 ms and 469 / 442, 749 / 749, 580 / 547, 968 / 967,
690 / 652, 1,299 / 1,272 patients/s; parsing 87-91 ms, collate + model 89-91 ms (2,816-2,882
patients/s for that part). ``--precision bf16-mixed``: 4.0 -> 5.2 ms for one patient, 1,266
patients/s for the in-memory batch (level with float32 on two threads; it pays in single-threaded
workers, ``bench_prognosis_workers.py``).

The REST path (the earlier run, slides still as file paths): ``PrognosisPyfunc.predict`` on the wire DataFrame of 256 in-memory
records with contributions: 147 patients/s with the ECG as JSON lists (75.7 MB of JSON, most of
the time in ``json.loads``), 309 patients/s with the ECG as base64 float32
(``clinfuse.experiments.encode_ecg``; 55.6 MB).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import lightning
import numpy as np
import pandas as pd
import torch

from clinfuse.datasets.datamodule import ClinicalDataModule
from clinfuse.datasets.synthetic import generate_cohort
from clinfuse.experiments.cohort_records import records_from_cohort
from clinfuse.experiments.cpu_allocator import keep_freed_memory
from clinfuse.experiments.inference_precision import PRECISIONS
from clinfuse.experiments.module import ClinFuseModule
from clinfuse.experiments.prognosis import Prognosis, PrognosisPyfunc
from clinfuse.experiments.prognosis_inputs import finish_items


def _times(fn, reps: int) -> np.ndarray:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return np.array(out)


def train_predictor(work: Path, patients: int, epochs: int) -> tuple[Prognosis, ClinicalDataModule, Path]:
    """The quickstart architecture (d_model 64, default encoders and fusion, survival) trained for
    ``epochs`` on a ``patients``-patient synthetic cohort written under ``work``; its predictor."""
    root = generate_cohort(work / "cohort", n_patients=patients, seed=0, show_progress=False)
    lightning.seed_everything(0, verbose=False)
    dm = ClinicalDataModule(str(root))
    model = ClinFuseModule(spec=dm.spec, d_model=64)
    trainer = lightning.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False,
                                enable_checkpointing=False, enable_model_summary=False, default_root_dir=work)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(work / "model.ckpt")
    return Prognosis.from_training(work / "model.ckpt", dm), dm, root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patients", type=int, default=600)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--system-allocator", action="store_true",
                   help="leave glibc's malloc thresholds as they are (the default applies keep_freed_memory, "
                        "as the serving and scoring processes do)")
    p.add_argument("--precision", choices=PRECISIONS, default="32-true",
                   help="Prognosis.precision of the timed predictor (bf16-mixed: bfloat16 matrix products)")
    a = p.parse_args()
    allocator = "glibc defaults" if a.system_allocator else (
        "keep_freed_memory" if keep_freed_memory() else "keep_freed_memory unavailable (no glibc)")
    work = Path(tempfile.mkdtemp(prefix="clinfuse-prognosis-"))
    prog, dm, root = train_predictor(work, a.patients, a.epochs)
    prog.precision = a.precision

    ids = list(dm.cohort.splits["test"]) + list(dm.cohort.splits["val"]) + list(dm.cohort.splits["train"])
    records = records_from_cohort(root, ids)
    slide_files = [in_memory(r, slides=False) for r in records]
    memory = [in_memory(r) for r in records]  # what a REST client sends: no file reads in the call
    full = next(i for i, r in enumerate(records) if len(r) == 7)  # patient_id + all six modalities
    rows = []
    for label, recs in (("from files", records), ("in-memory ECG, columnar series, slide files", slide_files),
                        ("in-memory ECG and slides, columnar series", memory)):
        for contrib in (True, False):
            one = [recs[full]]
            prog.predict(one, contributions=contrib)  # warm-up
            t1 = _times(lambda: prog.predict(one, contributions=contrib), a.reps)
            b = _times(lambda: prog.predict(recs[:256], contributions=contrib), 3)
            rows.append((label, "yes" if contrib else "no", f"{1000 * np.median(t1):.1f}",
                         f"{1000 * np.quantile(t1, 0.9):.1f}", f"{256 / np.median(b):.0f}"))
    # where the in-memory batch's time goes: parsing + validating the raw inputs vs the model on
    # the already-collated batch (encoders, fusion, head, survival curves)
    batch = memory[:256]
    split = {}
    for contrib in (False, True):
        items = [prog._items(r)[1] for r in batch]
        finish_items(prog.states, items)
        used = [[m for m in prog.modalities if m in its] for its in items]
        parse = np.median(_times(lambda: finish_items(prog.states, [prog._items(r)[1] for r in batch]), 3))
        model_s = np.median(_times(lambda: prog._predict_batch(prog._batch(items), used, (30, 90, 365), contrib), 3))
        split[contrib] = (parse, model_s)
    # the REST path: MLflow's wire DataFrame (one JSON string per modality), ECG as JSON lists vs base64
    wire_rate = {}
    py = PrognosisPyfunc()
    py.prognosis = prog
    for form in ("lists", "base64"):
        frame = wire_frame(memory[:256], prog.modalities, form)
        megabytes = sum(frame[c].dropna().str.len().sum() for c in frame.columns if c != "patient_id") / 1e6
        t = np.median(_times(lambda: py.predict(None, frame), 3))
        wire_rate[form] = (256 / t, megabytes)
    n_all = len(ids)
    prog.predict_cohort(root, show_progress=False)  # warm-up: readers' caches exist from training
    cohort_rate = {c: n_all / np.median(_times(lambda c=c: prog.predict_cohort(root, contributions=c, show_progress=False), 3))
                   for c in (True, False)}
    tab_only = {"patient_id": "tab-only", "tabular": records[full]["tabular"]}
    tab = _times(lambda: prog.predict([tab_only]), a.reps)
    print(f"\nquickstart architecture, {a.patients} patients, torch threads {torch.get_num_threads()}, precision {a.precision}; "
          f"allocator: {allocator}; targets: one patient p50 <= 10 ms, batch 256 >= 2,000 patients/s")
    print("\n| inputs | contributions | one patient p50 (ms) | p90 (ms) | batch 256 (patients/s) |\n|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(f"\none patient, tabular only, contributions: p50 {1000 * np.median(tab):.1f} ms")
    for contrib, (parse, model_s) in split.items():
        print(f"in-memory batch of 256, contributions {'yes' if contrib else 'no'}: parsing + validation "
              f"{1000 * parse:.0f} ms, collate + model {1000 * model_s:.0f} ms ({256 / model_s:.0f} patients/s "
              f"for the model part alone)")
    for form, (rate, megabytes) in wire_rate.items():
        print(f"MLflow pyfunc on the wire DataFrame (JSON strings, as `mlflow models serve` receives them), ECG and slides as "
              f"{form}: {rate:.0f} patients/s at batch 256, with contributions ({megabytes:.1f} MB of JSON)")
    print(f"cohort folder scored by the readers (Prognosis.predict_cohort, batches of 256, all {n_all} patients): "
          f"{cohort_rate[False]:.0f} patients/s without contributions, {cohort_rate[True]:.0f} with")


def wire_frame(records: list[dict], modalities: list[str], ecg_form: str) -> pd.DataFrame:
    """The MLflow wire DataFrame of in-memory records: the ECG and the slides as JSON lists or as base64 floats."""
    from clinfuse.experiments import encode_ecg, encode_wsi

    def cell(m: str, v):
        if m == "ecg":
            v = encode_ecg(v["signal"], v["fs"], v["leads"]) if ecg_form == "base64" else {**v, "signal": np.asarray(v["signal"]).tolist()}
        if m == "wsi":
            v = [encode_wsi(s["features"]) if ecg_form == "base64" else {"features": s["features"].tolist()} for s in v]
        return json.dumps(v, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))

    return pd.DataFrame([{"patient_id": r["patient_id"], **{m: cell(m, r[m]) for m in modalities if m in r}} for r in records])


def in_memory(record: dict, slides: bool = True) -> dict:
    """The same record with the ECG as an in-memory signal, the time series as columns and (with
    ``slides``) each slide's patch features as an in-memory array."""
    import wfdb

    from clinfuse.datasets.wsi import read_slide_features

    out = dict(record)
    if "ecg" in out:
        rec = wfdb.rdrecord(str(out["ecg"]))
        out["ecg"] = {"signal": rec.p_signal.T, "fs": rec.fs, "leads": list(rec.sig_name)}
    if slides and "wsi" in out:
        paths = out["wsi"] if isinstance(out["wsi"], list) else [out["wsi"]]
        out["wsi"] = [{"features": read_slide_features(p)} for p in paths]
    if "timeseries" in out:
        ts = out["timeseries"]
        out["timeseries"] = {k: [e[k] for e in ts] for k in ("time", "variable", "value")}
    return out


if __name__ == "__main__":
    main()
