"""The default MLflow logger resolves its store when the run starts, so a logged config holds no paths."""

from __future__ import annotations

import yaml

from clinfuse.experiments.tracking import WorkdirMLFlowLogger, default_logger_config


def test_the_default_logger_logs_into_the_working_directory_it_starts_in(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = default_logger_config()
    assert "tracking_uri" not in config["init_args"] and "artifact_location" not in config["init_args"]
    assert "/" not in yaml.safe_dump(config["init_args"])  # nothing of this machine's folders
    for name in ("a", "b"):  # the same config, started in two folders
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        logger = WorkdirMLFlowLogger(**config["init_args"])
        assert logger._tracking_uri == f"sqlite:///{tmp_path / name / 'mlflow.db'}"
        assert logger._artifact_location == str(tmp_path / name / "mlartifacts")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    assert WorkdirMLFlowLogger(**config["init_args"])._tracking_uri == f"sqlite:///{tmp_path / 'elsewhere.db'}"
    given = WorkdirMLFlowLogger(tracking_uri=f"sqlite:///{tmp_path / 'given.db'}", artifact_location="/x")
    assert given._tracking_uri.endswith("given.db") and given._artifact_location == "/x"
