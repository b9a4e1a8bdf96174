"""The LightningModule, the `clinfuse` CLI, sweeps, tracking and the prediction API."""

__all__ = ["Prognosis", "encode_ecg", "encode_slides", "encode_wsi"]


def __getattr__(name: str):
    # Prognosis imports lightning and mlflow (seconds); load it only when asked for.
    if name == "Prognosis":
        from clinfuse.experiments.prognosis import Prognosis

        return Prognosis
    if name in ("encode_ecg", "encode_slides", "encode_wsi"):
        from clinfuse.experiments import wire

        return getattr(wire, name)
    raise AttributeError(f"module 'clinfuse.experiments' has no attribute {name!r}")
