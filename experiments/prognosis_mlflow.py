"""The prognosis predictor as an MLflow pyfunc model (``mlflow models serve`` serves it over REST).

MLflow wire format (:class:`PrognosisPyfunc`): a DataFrame with one row per patient, a string column
``patient_id`` and one column per modality holding that modality's raw value, either as a JSON
string, e.g. ``{"patient_id": "p1", "tabular": "{\\"age\\": 61}", "ecg": "\\"/data/ecg/p1\\""}``,
or as the JSON value itself, ``{"patient_id": "p1", "tabular": {"age": 61}, "ecg": "/data/ecg/p1"}``
(parsed once, by the server: faster for large values); a string that is not JSON text (a file
path) is taken as the plain string. Null/absent column = modality absent. The output is a
DataFrame, one row per patient: ``patient_id``, ``error`` (null when fine) and ``prediction`` (the
JSON string of :meth:`Prognosis.predict`'s dict, ``Infinity`` written as ``null``). Inference params
(a request's ``"params"``): ``horizons``, ``contributions``, ``feature_contributions``. Send an
in-memory ECG as base64 floats (:func:`clinfuse.experiments.wire.encode_ecg`; JSON float lists are
slow to parse), best at the model's rate (``resample_to``), and slides cut to the patches the model
reads (:func:`clinfuse.experiments.wire.encode_slides`).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import mlflow
import numpy as np
import orjson
import pandas as pd


def params_signature():
    """The logged model's signature: no input schema (the modality columns are optional JSON
    strings) and the inference params ``horizons`` (days), ``contributions`` and
    ``feature_contributions``. MLflow ignores any param a model was not logged with, with only a
    log warning, so they must be declared here."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    return ModelSignature(params=ParamSchema([
        ParamSpec("horizons", "double", [30.0, 90.0, 365.0], (-1,)),
        ParamSpec("contributions", "boolean", True),
        ParamSpec("feature_contributions", "boolean", False),
    ]))


def input_example(states: dict[str, dict]) -> pd.DataFrame | None:
    """A one-patient wire DataFrame for the logged model's ``input_example`` (MLflow stores it as
    ``serving_input_example.json``, the body a REST client can copy): tabular data only, each
    numeric column at its training mean and each categorical one at its first level, so it
    holds no patient's values. None when the model has no tabular modality."""
    fitted = (states.get("tabular") or {}).get("fitted")
    if not fitted:
        return None
    values: dict[str, Any] = {c: round(float(m), 3) for c, m in zip(fitted["numeric_features"], fitted["mean"])}
    values.update({c: levels[0] for c, levels in fitted.get("levels", {}).items() if levels})
    return pd.DataFrame([{"patient_id": "example", "tabular": json.dumps(values)}])


def _requirements() -> list[str]:
    """Pinned requirements of the logged model (skips MLflow's slow inference by import tracing)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for dist in ("clinfuse", "torch", "lightning", "mlflow", "pandas", "numpy", "scikit-survival", "wfdb", "h5py", "scipy", "polars",
                 "pybase64", "orjson"):
        try:
            reqs.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            pass
    return reqs


def _json_safe(value: Any) -> Any:
    """Replace inf/NaN by None and make keys strings, so the result is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        if value and type(value[0]) is float:  # survival curves: hundreds of floats per patient
            try:
                if math.isfinite(sum(value)):  # all numbers and finite (TypeError: something else in it)
                    return value
            except TypeError:
                pass
        return [_json_safe(v) for v in value]
    return value


def _loads(text: str) -> Any:
    """``json.loads(text)``, parsed by orjson where it can (a 256-patient request: ~80 MB of JSON
    strings, 72 -> 42 ms). orjson refuses some text Python's json reads (``NaN``/``Infinity``
    literals, numbers beyond a double, lone surrogates); those, and text that is not JSON at all,
    go to ``json.loads``, so every value reaches the input checks as before and every error is
    Python's ``JSONDecodeError``. One difference is left: an integer beyond 64 bits comes back as a
    float (the checks then read it as that float, as they would the integer)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def dumps_prediction(prediction: dict) -> str:
    """One prediction as strict JSON text: ``_json_safe`` (inf/NaN -> null, keys as strings), then
    orjson (256 predictions with survival curves and contributions: 48 -> 4 ms against
    ``json.dumps``; the same values, written shorter: ``1e-05`` as ``0.00001``)."""
    return orjson.dumps(_json_safe(prediction), option=orjson.OPT_SERIALIZE_NUMPY).decode()


def records_from_frame(df: pd.DataFrame) -> list[dict]:
    """The wire DataFrame (one row per patient, JSON-string modality columns) -> records.

    An empty frame is an empty request (no records). A JSON string may arrive wrapped in a 0-d
    numpy array (MLflow's ``inputs`` request form) and is unwrapped first.
    """
    if df.empty:
        return []
    if "patient_id" not in df.columns:
        raise ValueError(f"input needs a 'patient_id' column; got {list(df.columns)}")
    records = []
    for row in df.to_dict("records"):
        pid = row.pop("patient_id")
        missing = pid is None or (isinstance(pid, float) and math.isnan(pid))
        rec: dict[str, Any] = {"patient_id": None if missing else str(pid)}  # None: that row's error names it
        for key, value in row.items():
            if isinstance(value, np.ndarray) and value.ndim == 0 or isinstance(value, np.generic):
                value = value.item()
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            try:
                rec[key] = _loads(value) if isinstance(value, str) else value
            except json.JSONDecodeError as err:
                # a plain string sent as a JSON value (a file path) is not JSON text; what looks like
                # a JSON object, list or string (or nothing) and fails to parse is a mistake to report
                looks_like_json = value.strip()[:1] in ("{", "[", '"', "")
                rec[key] = _BadJSON(f"field '{key}': not valid JSON: {err}") if looks_like_json else value
        records.append(rec)
    return records


def serving_precision(model_config: dict | None) -> str:
    """The precision a served model predicts in: ``$CLINFUSE_PRECISION``, else the logged
    ``model_config["precision"]``, else ``"32-true"``; ValueError naming where a bad value came from."""
    from clinfuse.experiments.inference_precision import check_precision

    env = os.environ.get("CLINFUSE_PRECISION")
    source, value = ("CLINFUSE_PRECISION", env) if env else ("model_config['precision']", (model_config or {}).get("precision", "32-true"))
    try:
        return check_precision(value)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


class _BadJSON(str):
    """A wire value that failed to parse; the transforms reject it with this message."""


class PrognosisPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc wrapper of :class:`Prognosis` (wire format: module docstring).

    Loading it applies :func:`clinfuse.experiments.cpu_allocator.keep_freed_memory` to the process
    (it is meant to serve): freed tensor memory is kept for the next batch, not handed back.

    The arithmetic precision (:attr:`Prognosis.precision <clinfuse.experiments.prognosis.Prognosis.precision>`)
    is the environment variable ``CLINFUSE_PRECISION`` of the serving process when set (chosen
    where the hardware is known: ``CLINFUSE_PRECISION=bf16-mixed mlflow models serve ...``), else
    the logged ``model_config={"precision": ...}`` (:meth:`Prognosis.log_to_mlflow` passes it
    through), else ``"32-true"``.
    """

    def load_context(self, context) -> None:
        from clinfuse.experiments.prognosis import Prognosis

        from clinfuse.experiments.cpu_allocator import keep_freed_memory

        keep_freed_memory()  # a serving process: reuse freed tensor memory (module docstring)
        precision = serving_precision(getattr(context, "model_config", None))
        self.prognosis = Prognosis.load(context.artifacts["prognosis"], precision=precision)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        params = params or {}
        try:
            records = records_from_frame(df)
            horizons = tuple(params.get("horizons", (30, 90, 365)))
            preds = self.prognosis.predict(records, horizons=horizons,
                                           contributions=bool(params.get("contributions", True)),
                                           feature_contributions=bool(params.get("feature_contributions", False)),
                                           show_progress=False)
        except ValueError as err:
            # a request-level mistake (no patient_id column, bad horizons): every row gets the message.
            # Raised, MLflow's server would answer "unexpected error" with a stack trace, or echo the
            # whole input (patient data) into its message and logs
            ids = df["patient_id"].tolist() if "patient_id" in df.columns else [None] * len(df)
            rows = [{"patient_id": pid, "error": f"clinfuse: {err}", "prediction": None} for pid in ids]
            return pd.DataFrame(rows, columns=["patient_id", "error", "prediction"])
        rows = [
            {
                "patient_id": p.get("patient_id"),
                "error": p.get("error"),
                "prediction": None if "error" in p else dumps_prediction(p),
            }
            for p in preds
        ]
        return pd.DataFrame(rows, columns=["patient_id", "error", "prediction"])
