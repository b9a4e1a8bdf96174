"""The LightningModule, the `clinfuse` CLI, sweeps, tracking and the prediction API."""
