"""A small seeded fake MIMIC-IV (+ MIMIC-IV-ECG) download in the real layout, for tests and demos.

Files (all ``.csv.gz``, real column names): ``hosp/patients``, ``hosp/admissions``,
``hosp/labevents``, ``hosp/d_labitems``, ``icu/icustays``, ``icu/chartevents``, ``icu/d_items``,
``note/discharge``, ``note/radiology``; and ``<ecg>/record_list.csv`` with 12-lead 500 Hz 10 s WFDB
records under ``files/p<4 digits>/p<subject>/s<study>/<study>``. The data are built to exercise
the converter: second ICU stays, stays shorter than 48 h, in-hospital and later deaths, and lab /
chart events, notes and ECGs both before and after the 48 h prediction time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import wfdb

ECG_LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
LAB_ITEMS = {50912: "Creatinine", 50813: "Lactate"}  # 51006 is left out of d_labitems on purpose
CHART_ITEMS = {220045: "Heart Rate", 220179: "Non Invasive Blood Pressure systolic"}
LAB_HOURS = (-30.0, -10.0, 5.0, 20.0, 47.0, 60.0)  # from ICU intime: -30 h is before the lookback, 60 h after 48 h
CHART_HOURS = (1.0, 24.0, 47.5, 49.0, 100.0)
NOTE_HOURS = (10.0, 50.0)  # radiology reports; the 50 h one is after the prediction time
ECG_HOURS = (-30.0, 5.0, 60.0)  # only the 5 h one lies in [intime - 24 h, intime + 48 h]
_FMT = "%Y-%m-%d %H:%M:%S"


def _ts(t: datetime | None) -> str | None:
    return None if t is None else t.strftime(_FMT)


def ecg_signal(study_id: int, fs: int = 500, seconds: float = 10.0) -> np.ndarray:
    """The ``(S, 12)`` signal (mV) written for ``study_id``: lead k is a 1 Hz sine of amplitude a*(k+1)."""
    t = np.arange(int(fs * seconds)) / fs
    a = 0.1 + (study_id % 7) * 0.05
    return np.stack([a * (k + 1) * np.sin(2 * np.pi * t) for k in range(12)], axis=1)


def write_mimic_iv_fixture(out: str | Path, n_subjects: int = 12, seed: int = 0) -> tuple[Path, Path]:
    """Write a fake MIMIC-IV to ``out/mimic-iv`` and a fake MIMIC-IV-ECG to ``out/mimic-iv-ecg``.

    Subject ``i`` (``subject_id = 10000000 + i``): one admission and ICU stay; every 4th subject
    (``i % 4 == 3``) a second, later admission with its own stay. ICU length ``1.5`` days when
    ``i % 5 == 4`` (excluded: shorter than 48 h) else ``2.5 + i % 9`` days. In-hospital death at
    ICU out time - 1 h when ``i % 6 == 1``; death 100 days after discharge when ``i % 6 == 5``.
    ECGs for ``i % 3 == 0`` at ``ECG_HOURS`` from intime.

    Args:
        out: the folder to write into (created).
        n_subjects: number of subjects.
        seed: seed of the random parts (ages, admission times, event values, gender).

    Returns:
        ``(mimic_root, ecg_root)``.
    """
    rng = np.random.default_rng(seed)
    root, ecg_root = Path(out) / "mimic-iv", Path(out) / "mimic-iv-ecg"
    for sub in ("hosp", "icu", "note"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ecg_root.mkdir(parents=True, exist_ok=True)
    patients, admissions, stays, labs, charts, rads, discharges, ecgs = ([] for _ in range(8))
    for i in range(n_subjects):
        sid = 10000000 + i
        anchor_year = 2150 + i
        base = datetime(anchor_year + 1, 1, 10, 8) + timedelta(hours=int(rng.integers(0, 200)))
        n_adm = 2 if i % 4 == 3 else 1
        dod = None
        for a in range(n_adm):
            hadm, stay = 20000000 + 10 * i + a, 30000000 + 10 * i + a
            admit = base + timedelta(days=60 * a)
            intime = admit + timedelta(hours=2)
            los = 1.5 if i % 5 == 4 else 2.5 + i % 9
            outtime = intime + timedelta(days=los)
            discharge = outtime + timedelta(hours=30)
            death = None
            if i % 6 == 1 and a == n_adm - 1:
                death = outtime - timedelta(hours=1)
                discharge = death
                dod = death.replace(hour=0, minute=0, second=0)
            elif i % 6 == 5 and a == n_adm - 1:
                dod = (discharge + timedelta(days=100)).replace(hour=0, minute=0, second=0)
            admissions.append({
                "subject_id": sid, "hadm_id": hadm, "admittime": _ts(admit), "dischtime": _ts(discharge),
                "deathtime": _ts(death), "admission_type": ["EW EMER.", "URGENT", "ELECTIVE"][(i + a) % 3],
                "admission_location": "EMERGENCY ROOM", "discharge_location": "DIED" if death else "HOME",
                "insurance": ["Medicare", "Other"][i % 2], "language": "ENGLISH", "marital_status": "SINGLE",
                "race": ["WHITE", "BLACK/AFRICAN AMERICAN", "ASIAN"][i % 3], "edregtime": None, "edouttime": None,
                "hospital_expire_flag": int(death is not None),
            })
            stays.append({"subject_id": sid, "hadm_id": hadm, "stay_id": stay,
                          "first_careunit": ["Medical Intensive Care Unit (MICU)", "Surgical ICU (SICU)"][i % 2],
                          "last_careunit": "Medical Intensive Care Unit (MICU)",
                          "intime": _ts(intime), "outtime": _ts(outtime), "los": los})
            for h in LAB_HOURS:
                for item in (*LAB_ITEMS, 51006):
                    empty = item == 50813 and h == 5.0  # a text-only result: valuenum empty
                    labs.append({"labevent_id": len(labs) + 1, "subject_id": sid, "hadm_id": hadm,
                                 "specimen_id": len(labs), "itemid": item,
                                 "charttime": _ts(intime + timedelta(hours=h)),
                                 "storetime": None, "value": "see comment" if empty else "x",
                                 "valuenum": None if empty else round(float(rng.normal(2.0, 0.5)), 3),
                                 "valueuom": "mg/dL", "flag": None})
            for h in CHART_HOURS:
                for item in CHART_ITEMS:
                    charts.append({"subject_id": sid, "hadm_id": hadm, "stay_id": stay, "caregiver_id": 1,
                                   "charttime": _ts(intime + timedelta(hours=h)), "storetime": None, "itemid": item,
                                   "value": "v", "valuenum": round(float(rng.normal(90, 10)), 1),
                                   "valueuom": "bpm", "warning": 0})
            for k, h in enumerate(NOTE_HOURS):
                rads.append({"note_id": f"{sid}-RR-{a}{k}", "subject_id": sid, "hadm_id": hadm, "note_type": "RR",
                             "note_seq": k, "charttime": _ts(intime + timedelta(hours=h)), "storetime": None,
                             "text": f"Chest x-ray {k} of stay {stay}: "
                                     f"{'clear lungs' if k == 0 else 'LATE effusion'}."})
            discharges.append({"note_id": f"{sid}-DS-{a}", "subject_id": sid, "hadm_id": hadm, "note_type": "DS",
                               "note_seq": 1, "charttime": _ts(discharge), "storetime": None,
                               "text": f"Discharge summary of admission {hadm}: LEAKED outcome."})
            if i % 3 == 0 and a == 0:
                for k, h in enumerate(ECG_HOURS):
                    study = 40000000 + 10 * i + k
                    rel = f"files/p{str(sid)[:4]}/p{sid}/s{study}/{study}"
                    (ecg_root / rel).parent.mkdir(parents=True, exist_ok=True)
                    wfdb.wrsamp(str(study), fs=500, units=["mV"] * 12, sig_name=ECG_LEADS,
                                p_signal=ecg_signal(study), fmt=["16"] * 12, write_dir=str((ecg_root / rel).parent))
                    ecgs.append({"subject_id": sid, "study_id": study, "file_name": study,
                                 "ecg_time": _ts(intime + timedelta(hours=h)), "path": rel})
        patients.append({"subject_id": sid, "gender": "FM"[int(rng.integers(0, 2))],
                         "anchor_age": int(rng.integers(20, 90)), "anchor_year": anchor_year,
                         "anchor_year_group": "2017 - 2019", "dod": None if dod is None else dod.strftime("%Y-%m-%d")})
    d_lab = [{"itemid": k, "label": v, "fluid": "Blood", "category": "Chemistry"} for k, v in LAB_ITEMS.items()]
    d_items = [{"itemid": k, "label": v, "abbreviation": v[:3], "linksto": "chartevents",
                "category": "Routine Vital Signs",
                "unitname": "bpm", "param_type": "Numeric", "lownormalvalue": None, "highnormalvalue": None}
               for k, v in CHART_ITEMS.items()]
    tables = {"hosp/patients": patients, "hosp/admissions": admissions, "hosp/labevents": labs,
              "hosp/d_labitems": d_lab, "icu/icustays": stays, "icu/chartevents": charts, "icu/d_items": d_items,
              "note/radiology": rads, "note/discharge": discharges}
    for name, rows in tables.items():
        pd.DataFrame(rows).to_csv(root / f"{name}.csv.gz", index=False)
    pd.DataFrame(ecgs, columns=["subject_id", "study_id", "file_name", "ecg_time", "path"]).to_csv(
        ecg_root / "record_list.csv", index=False)
    return root, ecg_root
