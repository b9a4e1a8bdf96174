"""The LightningModule, the `clinfuse` CLI, sweeps, tracking and the prediction API."""

__all__ = ["Prognosis", "encode_ecg"]


def __getattr__(name: str):
    # Prognosis imports lightning and mlflow (seconds); load it only when asked for.
    if name == "Prognosis":
        from clinfuse.experiments.prognosis import Prognosis

        return Prognosis
    if name == "encode_ecg":
        from clinfuse.experiments.ecg_wire import encode_ecg

        return encode_ecg
    raise AttributeError(f"module 'clinfuse.experiments' has no attribute {name!r}")
