"""The prognosis prediction API: a trained model + its fitted preprocessing + a Breslow baseline.

``Prognosis.from_training(ckpt, datamodule)`` builds a predictor, ``save(folder)`` writes
``model.ckpt``, ``preprocessing.json`` (``Cohort.state_dict()``), ``baseline.json`` (survival task),
``meta.json`` and ``model_card.md`` (:mod:`clinfuse.experiments.model_card`); ``Prognosis.load(folder_or_mlflow_uri)`` restores it with no data folder.
``predict(records)`` takes raw per-patient inputs (formats: :mod:`clinfuse.experiments.prognosis_inputs`).

The MLflow pyfunc wrapper and its wire format: :mod:`clinfuse.experiments.prognosis_mlflow`.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from clinfuse.datasets.reader import read_json_object
from clinfuse.encoders.base import ModalityTokens
from clinfuse.experiments.input_checks import DEFAULT_MAX_SD, out_of_range
from clinfuse.experiments.inference_precision import check_precision, precision_context
# PrognosisPyfunc must stay importable from here: models logged before it moved name prognosis.PrognosisPyfunc
from clinfuse.experiments.prognosis_mlflow import PrognosisPyfunc, _BadJSON, _requirements, input_example, params_signature, records_from_frame
from clinfuse.experiments.prognosis_inputs import collate_shell, finish_items, raw_to_item
from clinfuse.experiments.survival_curves import BreslowBaseline

#: the public names (records_from_frame is re-exported from prognosis_mlflow)
__all__ = ["Prognosis", "PrognosisPyfunc", "records_from_frame"]

FORMAT_VERSION = 1
#: the keys of a predictor folder's ``model.ckpt`` (see :meth:`Prognosis.save`)
PREDICTOR_CHECKPOINT_KEYS = ("state_dict", "hyper_parameters", "hparams_name", "pytorch-lightning_version")


class Prognosis:
    """Predicts risk, survival curves and per-modality contributions from raw patient inputs.

    Args:
        model: a trained ``ClinFuseModule`` (moved to the CPU and put in eval mode here: prediction
            runs on the CPU).
        preprocessing: ``Cohort.state_dict()`` of the data the model was trained on.
        baseline: the Breslow baseline (survival task), else None.
        checkpoint_path: the checkpoint the model was loaded from (informative: :meth:`save`
            writes the model held in memory).
    """

    def __init__(self, model, preprocessing: dict, baseline: BreslowBaseline | None, checkpoint_path: str | Path,
                 summary: dict | None = None) -> None:
        self.model = model.cpu().eval()  # the API collates on the CPU and reads outputs with numpy
        #: aggregate training-data summary and test metric (:mod:`clinfuse.experiments.model_card`)
        self.summary = summary
        self.preprocessing = preprocessing
        self.states = preprocessing["modalities"]
        self.modalities = list(model.modalities)
        self.baseline = baseline
        self.checkpoint_path = Path(checkpoint_path)
        self.max_input_sd = DEFAULT_MAX_SD
        self.precision = "32-true"
        self._shells = {m: collate_shell(self.states[m], model.hparams.spec.get(m)) for m in self.modalities}

    @property
    def max_input_sd(self) -> float:
        """Inputs beyond this many training sd from the training mean get an ``input_warnings`` entry."""
        return self._max_input_sd

    @max_input_sd.setter
    def max_input_sd(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"max_input_sd must be a number > 0 (training sd), got {value!r}")
        self._max_input_sd = float(value)

    @property
    def precision(self) -> str:
        """``"32-true"`` (default) or ``"bf16-mixed"``: encoders and fusion with bfloat16 matrix
        products, faster on CPUs with AMX/AVX512-BF16; risks differ from float32's by a few
        thousandths (:mod:`clinfuse.experiments.inference_precision`)."""
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        self._precision = check_precision(value)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_training(cls, checkpoint_path: str | Path, datamodule) -> "Prognosis":
        """Build from a checkpoint and the ``ClinicalDataModule`` it was trained with.

        The preprocessing is the checkpoint's saved data-module state when present (else the data
        module's); the Breslow baseline is fitted on the training split's predicted log-risks
        (eval mode, deterministic WSI patches).

        Raises:
            ValueError: ``checkpoint_path`` is no readable ClinFuseModule checkpoint, or the data
                module differs from the checkpoint's (other modalities, spec or fitted statistics:
                :func:`~clinfuse.experiments.training_match.check_training_data`).
            TypeError: ``datamodule`` is not a data module.
        """
        from clinfuse.datasets.dataset import ClinicalDataset, Collator
        from clinfuse.experiments.module import ClinFuseModule

        from clinfuse.experiments.training_match import check_training_data

        try:
            ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        except Exception as err:  # torch raises UnpicklingError, RuntimeError, OSError... on a non-checkpoint
            raise ValueError(f"{checkpoint_path}: not a readable checkpoint: {type(err).__name__}: {err}") from err
        if not isinstance(ckpt, dict) or "hyper_parameters" not in ckpt:
            raise ValueError(f"{checkpoint_path}: not a Lightning checkpoint of a ClinFuseModule (no hyper_parameters)")
        saved = ckpt.get(type(datamodule).__qualname__) or {}
        # another cohort, modalities or split would fit the baseline on the wrong patients, silently
        check_training_data(checkpoint_path, ckpt["hyper_parameters"].get("spec") or {}, saved.get("preprocessing"), datamodule)
        preprocessing = saved.get("preprocessing") or datamodule.preprocessing_state()
        model = ClinFuseModule.load_from_checkpoint(checkpoint_path, map_location="cpu", weights_only=False).eval()
        baseline = None
        if model.task == "survival" and not model.objective.discrete:
            cohort = datamodule.cohort
            data = ClinicalDataset(cohort, "train", training=False)
            loader = torch.utils.data.DataLoader(data, batch_size=256, collate_fn=Collator(cohort.readers))
            risks, times, events = [], [], []
            with torch.no_grad():
                for batch in loader:
                    risks.append(model(batch["inputs"])[0].float().numpy())
                    times.append(batch["labels"]["time"].numpy())
                    events.append(batch["labels"]["event"].numpy())
            baseline = BreslowBaseline().fit(np.concatenate(risks), np.concatenate(times), np.concatenate(events))
        from clinfuse.experiments.model_card import training_summary

        return cls(model, preprocessing, baseline, checkpoint_path, training_summary(model, datamodule))

    def save(self, path: str | Path) -> Path:
        """Write the predictor folder; returns it.

        ``model.ckpt`` is written from the model in memory and holds what prediction needs only
        (:data:`PREDICTOR_CHECKPOINT_KEYS`): not the training checkpoint's optimizer and loop state,
        nor its callback and data-module settings, which name the training site's folders. So a
        loaded or unpickled predictor saves again after its source folder is gone.
        """
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        self._write_checkpoint(out / "model.ckpt")
        (out / "preprocessing.json").write_text(json.dumps(self.preprocessing))
        if self.baseline is not None:
            (out / "baseline.json").write_text(json.dumps(self.baseline.state_dict()))
        meta = {
            "format_version": FORMAT_VERSION,
            "task": self.model.task,
            "modalities": self.modalities,
            "spec": self.model.hparams.spec,
            "fusion": type(self.model.fusion).__name__,
            "has_baseline": self.baseline is not None,
            "summary": self.summary,
        }
        (out / "meta.json").write_text(json.dumps(meta, indent=2))
        from clinfuse.experiments.model_card import render

        (out / "model_card.md").write_text(render(self, self.summary))
        return out

    def _write_checkpoint(self, path: Path) -> None:
        """A Lightning-loadable checkpoint of :attr:`model` (weights + hyperparameters), written to a
        temporary file first so that re-saving over the folder it was loaded from is safe."""
        import lightning

        ckpt = {
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "hyper_parameters": dict(self.model.hparams),
            "hparams_name": "kwargs",
            "pytorch-lightning_version": lightning.__version__,
        }
        tmp = path.with_name(f".{path.name}.partial")
        torch.save(ckpt, tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path, precision: str = "32-true") -> "Prognosis":
        """Load a folder written by :meth:`save`, an MLflow URI (``runs:/``, ``models:/``) of a
        model logged by :meth:`log_to_mlflow`, or a local copy of such an MLflow model folder.
        ``precision``: see :attr:`precision`.

        The checkpoint is unpickled with ``weights_only=False`` (hyperparameters may hold
        component classes such as a fusion head): load only folders you trust.
        """
        from clinfuse.experiments.module import ClinFuseModule

        folder = Path(path)
        if not folder.is_dir() and (":/" in str(path)):  # runs:/, models:/, s3://, file://...
            store = mlflow.get_tracking_uri()
            if str(path).startswith(("runs:/", "models:/")) and store.startswith("sqlite:///"):
                db = Path(store.removeprefix("sqlite:///"))
                if not db.is_file():  # MLflow would create an empty store there, then not find the run
                    raise ValueError(f"{path}: no MLflow store at {db}; run from the folder holding the "
                                     f"training runs' mlflow.db, or set MLFLOW_TRACKING_URI")
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=str(path)))
            found = [p.parent for p in local.rglob("meta.json")]
            if not found:
                raise ValueError(f"{path}: no prognosis folder (meta.json) among the downloaded artifacts")
            folder = found[0]
        elif folder.is_dir() and not (folder / "meta.json").is_file() and (folder / "MLmodel").is_file():
            # the MLflow model folder (what `mlflow models serve -m` takes) holds the predictor inside
            found = sorted(p.parent for p in folder.rglob("meta.json"))
            folder = found[0] if found else folder
        for name in ("model.ckpt", "preprocessing.json", "meta.json"):
            if not (folder / name).is_file():
                raise ValueError(f"{folder}: not a prognosis folder, {name} is missing")
        meta = read_json_object(folder / "meta.json")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{folder / 'meta.json'}: format_version {meta.get('format_version')} != {FORMAT_VERSION}")
        preprocessing = read_json_object(folder / "preprocessing.json")
        if not isinstance(preprocessing.get("modalities"), dict):
            raise ValueError(f"{folder / 'preprocessing.json'}: no 'modalities' preprocessing state (a damaged or foreign file)")
        try:
            model = ClinFuseModule.load_from_checkpoint(folder / "model.ckpt", map_location="cpu", weights_only=False)
        except Exception as err:  # torch/Lightning raise many types on a damaged or foreign file
            raise ValueError(f"{folder / 'model.ckpt'}: not a readable ClinFuseModule checkpoint: "
                             f"{type(err).__name__}: {err}") from err
        baseline = None
        if meta.get("has_baseline"):
            if not (folder / "baseline.json").is_file():
                raise ValueError(f"{folder}: meta.json says the predictor has a Breslow baseline, baseline.json is missing")
            baseline = BreslowBaseline.from_state(read_json_object(folder / "baseline.json"))
        prognosis = cls(model, preprocessing, baseline, folder / "model.ckpt", meta.get("summary"))
        prognosis.precision = precision
        return prognosis

    # ------------------------------------------------------------------ prediction
    def _items(self, record: Any) -> tuple[str, dict[str, Any], list[str]]:
        """One record -> (patient id, modality -> item, the parsers' notices for ``input_warnings``);
        ValueError naming patient and field."""
        if not isinstance(record, dict):
            raise ValueError(f"record must be a dict, got {type(record).__name__}")
        pid = record.get("patient_id")
        if not isinstance(pid, str) or not pid:
            raise ValueError(f"field 'patient_id': a non-empty string is required, got {pid!r}")
        unknown = sorted(set(record) - set(self.modalities) - {"patient_id"})
        if unknown:
            raise ValueError(f"patient {pid}: field(s) {unknown}: unknown modality; the model uses {self.modalities}")
        items, notices = {}, []  # notices: the parsers' notes on doubtful inputs, for input_warnings
        for m in self.modalities:
            if record.get(m) is None:
                continue
            try:
                if isinstance(record[m], _BadJSON):
                    raise ValueError(str(record[m]))
                item = raw_to_item(m, self.states[m], record[m], pid, notices)
            except (ValueError, TypeError, OSError) as err:
                raise ValueError(f"patient {pid}: {err}") from err
            if item is not None:
                items[m] = item
        return pid, items, [_notice(n) for n in notices]

    def _batch(self, items: Sequence[dict[str, Any]]) -> dict[str, dict[str, torch.Tensor]]:
        return {m: self._shells[m].collate([it.get(m) for it in items]) for m in self.modalities}

    def _outputs(self, tokens: dict[str, ModalityTokens], drop: Sequence[str | None]) -> tuple[torch.Tensor, Any]:
        """Fusion + task head on already-encoded tokens, once per entry of ``drop`` (None = all
        modalities, ``m`` = without ``m``), in ONE batched pass: variant ``v`` of patient ``b`` is
        row ``v * B + b`` with the dropped modality marked absent (contract rule 1: the same as
        omitting it). Encoders are per modality, so leave-one-out reuses the tokens.

        Shapes:
            tokens[m].tokens: (B, N_m, D) -> out (V, B) or (V, B, K) with V = len(drop)
        """
        from clinfuse.fusion.late import late_average

        b, rep = next(iter(tokens.values())).batch_size, len(drop)
        stacked = {}
        for m, t in tokens.items():
            tok, mask = t.tokens.repeat(rep, 1, 1), t.mask.repeat(rep, 1)  # (V * B, N, D), (V * B, N)
            times = t.times.repeat(rep, 1) if t.times is not None else None
            for v in (v for v, d in enumerate(drop) if d == m):  # variant v drops m: absent there
                tok[v * b : (v + 1) * b] = 0
                mask[v * b : (v + 1) * b] = False
                if times is not None:
                    times[v * b : (v + 1) * b] = 0
            stacked[m] = ModalityTokens(tok, mask, mask.any(1), times)
        if getattr(self.model.fusion, "late", False):
            fused = self.model.fusion(stacked)
            out = late_average(self.model.head, fused, self.model.fusion.modalities)
        else:
            fused = self.model.fusion.pooled_output(stacked)  # the head reads pooled only
            out = self.model.head(fused.pooled)
        out = out.float()
        return out.reshape(len(drop), b, *out.shape[1:]), fused

    def predict(
        self, records: Sequence[dict], horizons: Sequence[float] = (30, 90, 365), contributions: bool = True,
        feature_contributions: bool = False, batch_size: int = 256, show_progress: bool | None = None,
    ) -> list[dict]:
        """Predict for raw patient records (any subset of modalities each).

        Args:
            records: one dict per patient (formats: :mod:`clinfuse.experiments.prognosis_inputs`).
            horizons: times (the cohort's time unit, days for the built-in cohorts) for ``survival_at``.
            contributions: compute the leave-one-modality-out contributions (one extra fusion
                pass per present modality, batched into one call).
            feature_contributions: also the leave-one-out contribution of each observed tabular
                value and of each time-series variable, ``feature_contributions: {"tabular":
                {column: delta}, "timeseries": {variable: delta}}``
                (:mod:`clinfuse.experiments.feature_contributions`; one fusion pass each).
            batch_size: records parsed and predicted together; memory grows with it (a 256-patient
                batch of the quickstart model holds ~60 MB of ECG and slide tensors), the results
                do not depend on it (patients never mix; a matrix kernel may round a row's last
                float bit differently by its place in the batch).
            show_progress: a progress bar over the batches; None (default): only for 8 batches or more.

        Returns one dict per record, in order: ``patient_id``, ``modalities_used``, ``risk``
        (log-risk for Cox, minus the expected number of bins survived for discrete-time models,
        logit for classification; ``probability`` or ``probabilities`` for classification),
        ``contributions`` (modality -> risk with all present modalities minus risk without it),
        ``trajectory`` (sequential heads: ``[{"step", "risk"}]`` from the initial state through
        each present modality) and, for survival, ``survival_curve``, ``median_survival`` (inf
        when it is not reached within the model's time range: the curve is still above 0.5 at its
        last time; discrete-time models read S linearly between their bin ends) and ``survival_at`` (all-cause); competing-risks models
        add ``cumulative_incidence`` (``times`` + ``cause_<r>`` lists) and ``incidence_at``
        (``cause_<r>`` -> horizon -> CIF); ``input_warnings``: values beyond ``max_input_sd``
        training sd (:mod:`clinfuse.experiments.input_checks`), predicted anyway, the parsers'
        notices, horizons past the last training event, a record without any modality. A bad record gives
        ``{"patient_id", "error"}`` instead and does not affect the others.
        """
        horizons = self.check_horizons(horizons)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(records, dict):
            raise ValueError("records must be a list of patient dicts; got one dict (wrap it in a list)")
        if isinstance(records, pd.DataFrame):  # iterating a DataFrame yields its column names
            raise ValueError("records must be a list of patient dicts, got a DataFrame: for the MLflow wire format "
                             "(JSON strings per modality) use clinfuse.experiments.prognosis_mlflow.records_from_frame(df)")
        if isinstance(records, (str, bytes)) or not isinstance(records, Iterable):
            raise ValueError(f"records must be a list of patient dicts, got {type(records).__name__}")
        for name, flag in (("contributions", contributions), ("feature_contributions", feature_contributions)):
            if not isinstance(flag, (bool, np.bool_)):  # "no" / "false" would be truthy
                raise ValueError(f"{name} must be True or False, got {flag!r}")
        records = list(records)
        starts = range(0, len(records), batch_size)
        quiet = (len(starts) < 8) if show_progress is None else not show_progress
        results: list[dict] = []
        for lo in tqdm(starts, desc="predicting", unit="batch", disable=quiet):
            results += self._predict_records(records[lo:lo + batch_size], horizons, contributions, feature_contributions)
        notice = self.horizon_notice(horizons)
        for r in results:
            if notice and "error" not in r:
                r["input_warnings"].append(notice)
        return results

    def _predict_records(
        self, records: list[dict], horizons: Sequence[float], contributions: bool, feature_contributions: bool
    ) -> list[dict]:
        """:meth:`predict` for one batch of records (parsed, collated and run together)."""
        results: list[dict] = [{} for _ in records]
        good, items, notices = [], [], []
        for i, record in enumerate(records):
            try:
                pid, its, notes = self._items(record)
            except ValueError as err:
                pid = record.get("patient_id") if isinstance(record, dict) else None
                results[i] = {"patient_id": pid, "error": str(err)}
                continue
            good.append((i, pid))
            items.append(its)
            notices.append(notes)
        if not good:
            return results
        finish_items(self.states, items)  # resample all ECGs in one batch
        warns = [notes + [w for m, it in its.items() for w in out_of_range(m, self.states[m], it, self.max_input_sd)]
                 for notes, its in zip(notices, items)]
        used = [[m for m in self.modalities if m in its] for its in items]
        for w, u in zip(warns, used):
            if not u:  # e.g. a client whose every column serialised to null: a prediction from nothing
                w.append(f"no modality given (the model uses {self.modalities}): this prediction uses no patient data")
        rows = self._predict_batch(self._batch(items), used, horizons, contributions, feature_contributions)
        for (i, pid), w, row in zip(good, warns, rows):
            if "error" in row:
                results[i] = {"patient_id": pid, "error": f"patient {pid}: {row['error']}", "input_warnings": w}
                continue
            results[i] = {"patient_id": pid, **row, "input_warnings": w}
        return results

    @property
    def last_event_time(self) -> float | None:
        """The latest time the survival estimate is informed by: the last training event time of
        the Breslow baseline (Cox heads) or the last finite bin end (discrete heads); None for
        classification."""
        if self.baseline is not None and self.baseline.event_times is not None and len(self.baseline.event_times):
            return float(self.baseline.event_times[-1])
        objective = getattr(self.model, "objective", None)
        if objective is not None and objective.discrete:
            return float(objective.edges[-2])
        return None

    def check_horizons(self, horizons: Sequence[float]) -> tuple[float, ...]:
        """``horizons`` as floats; ValueError for a non-finite or negative one, and a warning for
        those past :attr:`last_event_time`, where S(t) is only carried forward (flat), not estimated."""
        if isinstance(horizons, (str, bytes)):
            raise ValueError(f"horizons must be a list of numbers, got the string {horizons!r}")
        try:
            if any(isinstance(h, (bool, np.bool_)) for h in horizons):  # True would be the horizon 1.0
                raise TypeError
            values = tuple(dict.fromkeys(float(h) for h in horizons))  # in order, each once
        except (TypeError, ValueError):
            raise ValueError(f"horizons must be numbers, got {horizons!r}") from None
        bad = [h for h in values if not np.isfinite(h) or h < 0]
        if bad:
            raise ValueError(f"horizons must be finite and >= 0, got {bad}")
        notice = self.horizon_notice(values)
        if notice:
            warnings.warn(notice, stacklevel=3)
        return values

    def horizon_notice(self, horizons: Sequence[float]) -> str | None:
        """The notice for horizons past :attr:`last_event_time` (None when there is none); also
        each prediction's ``input_warnings`` entry, so that a REST client sees it too."""
        end = self.last_event_time
        past = [h for h in horizons if end is not None and h > end]
        if not past:
            return None
        what = ("last training event time" if self.baseline is not None
                else "last time-bin end (later training events all fall in its open last bin)")
        return (f"horizons {[f'{h:g}' for h in past]} are past the model's {what} ({end:g}): "
                f"survival there is the value at {end:g} carried forward, not an estimate")

    def predict_cohort(self, root: str | Path, **kwargs: Any) -> pd.DataFrame:
        """Score the patients of a cohort folder (``docs/formats.md``): one row per patient.

        See :func:`clinfuse.experiments.prognosis_cohort.predict_cohort` for the arguments.
        """
        from clinfuse.experiments.prognosis_cohort import predict_cohort

        return predict_cohort(self, root, **kwargs)

    def _predict_batch(
        self, batch: dict[str, dict[str, torch.Tensor]], used: Sequence[Sequence[str]],
        horizons: Sequence[float], contributions: bool, feature_contributions: bool = False,
        raw_outputs: list | None = None,
    ) -> list[dict[str, Any]]:
        """Predictions for one collated batch; ``used[b]`` = patient ``b``'s present modalities.

        Returns one dict per patient: everything :meth:`predict` returns but ``patient_id``. The
        batch's raw task-head outputs (with every modality) are appended to ``raw_outputs`` when given.
        """
        used_any = [m for m in self.modalities if any(m in u for u in used)] if contributions else []
        drop = [None, *used_any]
        with torch.inference_mode():
            with precision_context(self.precision):
                tokens = self.model.encode(batch, check_finite=False)  # non-finite outputs: per-patient errors below
                tokens = {m: t.float() for m, t in tokens.items()}  # what feature contributions read
                raw, fused = self._outputs(tokens, drop)  # (V, B[, K]) float32
                steps = None
                if fused.per_step:  # read in the same precision as raw: the last step is the risk
                    from clinfuse.fusion.multimodn import step_predictions

                    steps = step_predictions(fused, lambda h: self.model.head(h).float())[: raw.shape[1]]  # (B, S[, K])
            risk_all = torch.stack([self.model.risk(o) for o in raw])  # (V, B)
            traj = None
            if steps is not None:
                traj = self.model.risk(steps.flatten(0, 1)).reshape(steps.shape[:2]).float()  # (B, S)
                order = list(getattr(self.model.fusion, "last_order", None) or self.modalities)
            # inputs far outside the training ranges can overflow the model's float32 arithmetic:
            # those patients get an error, the others their predictions
            n = raw.shape[1]
            finite = torch.isfinite(raw[0].reshape(n, -1)).all(1) & torch.isfinite(risk_all[0].reshape(n, -1)).all(1)  # (B,)
            if not bool(finite.all()):
                raw, risk_all = torch.nan_to_num(raw), torch.nan_to_num(risk_all)
            surv = self._survival(raw[0], risk_all[0], horizons)
        out, risk = raw[0], risk_all[0]
        if raw_outputs is not None:
            raw_outputs.append(out)
        per_value: dict[str, list] = {}
        if feature_contributions:
            from clinfuse.experiments.feature_contributions import BY_MODALITY

            per_value = {m: fn(self, batch, tokens, risk) for m, fn in BY_MODALITY.items() if m in batch}
        rows = []
        for b, present in enumerate(used):
            if not finite[b]:
                rows.append({"modalities_used": list(present), "error": (
                    "the model's output is not finite for this patient: inputs far outside the training ranges "
                    "overflow its arithmetic (see input_warnings)")})
                continue
            res: dict[str, Any] = {"modalities_used": list(present)}
            res.update(self._readout(out[b], risk[b]))
            if contributions:
                res["contributions"] = {m: _tolist(risk[b] - risk_all[1 + used_any.index(m), b]) for m in present}
            if feature_contributions:
                res["feature_contributions"] = {m: rows_m[b] for m, rows_m in per_value.items() if rows_m[b]}
            if traj is not None:
                steps = [{"step": "initial", "risk": _tolist(traj[b, 0])}]
                steps += [{"step": m, "risk": _tolist(traj[b, k + 1])} for k, m in enumerate(order) if m in present]
                res["trajectory"] = steps
            if surv:
                res["survival_curve"] = {"times": surv["times"], "survival": surv["curve"][b].tolist()}
                res["median_survival"] = float(surv["median"][b])
                res["survival_at"] = {h: float(s) for h, s in zip(horizons, surv["at"][b])}
                if "cif" in surv:  # competing risks: each cause's cumulative incidence
                    causes = [f"cause_{r}" for r in range(1, surv["cif"].shape[1] + 1)]
                    res["cumulative_incidence"] = {"times": surv["times"],
                                                   **{c: surv["cif"][b, r].tolist() for r, c in enumerate(causes)}}
                    res["incidence_at"] = {c: {h: float(v) for h, v in zip(horizons, surv["cif_at"][b, r])}
                                           for r, c in enumerate(causes)}
            rows.append(res)
        return rows

    def survival_matrix(self, out: torch.Tensor, times: Sequence[float]) -> np.ndarray:
        """S(t | x) of every patient at ``times``, from raw task-head outputs (survival models).

        Shapes:
            out: (n,) Cox log-risk or (n, n_outputs) discrete logits; times: (T,) -> (n, T)
        """
        objective = getattr(self.model, "objective", None)
        if objective is None:
            raise ValueError(f"survival curves need a survival model; this one's task is {self.model.task!r}")
        t = np.asarray(times, dtype=float)
        if self.baseline is not None:
            return self.baseline.survival(self.model.risk(out).numpy(), t)
        return objective.survival(out, torch.as_tensor(t, dtype=torch.float64)).numpy()

    def _survival(self, out: torch.Tensor, risk: torch.Tensor, horizons: Sequence[float]) -> dict[str, Any]:
        """Survival curve, median and survival at ``horizons`` (Breslow for Cox, bins otherwise)."""
        objective = getattr(self.model, "objective", None)
        if self.baseline is not None:
            r = risk.numpy()
            return {
                "times": self.baseline.event_times.tolist(),
                "curve": self.baseline.survival(r, self.baseline.event_times),
                "median": self.baseline.median_survival(r),
                "at": self.baseline.survival_at(r, list(horizons)),
            }
        if objective is not None and objective.discrete:
            ends = objective.edges[1:-1]  # (K - 1,) finite bin ends
            h = torch.tensor(list(horizons), dtype=torch.float64)
            surv = {
                "times": ends.tolist(),
                "curve": objective.survival_at_bin_ends(out)[:, :-1].numpy(),
                "median": objective.median(out).numpy(),
                "at": objective.survival(out, h).numpy(),
            }
            if objective.competing:  # (B, R, K - 1) and (B, R, H)
                surv["cif"] = objective.cumulative_incidence(out)[..., :-1].numpy()
                surv["cif_at"] = objective.cumulative_incidence_at(out, h).numpy()
            return surv
        return {}

    def _readout(self, out: torch.Tensor, risk: torch.Tensor) -> dict[str, Any]:
        task = self.model.task
        if task == "survival":
            return {"risk": float(risk)}
        if task == "binary":
            return {"risk": float(out), "probability": float(torch.sigmoid(out))}
        return {"risk": out.tolist(), "probabilities": torch.softmax(out, -1).tolist()}

    # ------------------------------------------------------------------ MLflow
    def log_to_mlflow(self, artifact_path: str = "prognosis", **kwargs: Any):
        """Log as an MLflow pyfunc model in the active run (one is started if none); returns
        ``mlflow.pyfunc.log_model``'s ModelInfo (``.model_uri`` loads it back).

        ``kwargs`` go to ``mlflow.pyfunc.log_model``; ``model_config={"precision": "bf16-mixed"}``
        makes the served model predict in that precision (``$CLINFUSE_PRECISION`` of the serving
        process overrides it)."""
        config = kwargs.get("model_config") or {}
        if "precision" in config:
            check_precision(config["precision"], warn=False)  # refused now, not when a server loads it
        kwargs.setdefault("pip_requirements", _requirements())
        kwargs.setdefault("signature", params_signature())  # without a params schema MLflow drops params
        example = input_example(self.states)
        if example is not None:  # MLflow checks it by predicting it, and serves it as the request example
            kwargs.setdefault("input_example", example)
        quiet = _DropMessages("Passing a Python object as `python_model`", "Validating input example")
        logger = logging.getLogger("mlflow.pyfunc")
        logger.addFilter(quiet)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                folder = self.save(Path(tmp) / "prognosis")
                return mlflow.pyfunc.log_model(
                    name=artifact_path, python_model=PrognosisPyfunc(), artifacts={"prognosis": str(folder)}, **kwargs
                )
        finally:
            logger.removeFilter(quiet)


class _DropMessages(logging.Filter):
    """Drops MLflow log records a user cannot act on when clinfuse logs its model: the generic
    CloudPickle caution (the pyfunc class is clinfuse's own, loaded from the installed package) and
    the note that the input example is being validated."""

    def __init__(self, *starts: str) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.starts)


def _notice(message: str) -> str:
    """A parser's warning (``field 'x.y': text``) as an ``input_warnings`` entry (``x.y: text``)."""
    text = str(message)
    return text[len("field '"):].replace("': ", ": ", 1) if text.startswith("field '") else text


def _tolist(x: torch.Tensor) -> float | list[float]:
    return float(x) if x.ndim == 0 else x.tolist()
