"""Serve the MLflow UI on the tracking store the jobs write to.

    python -m jobs.ui [key=value ...]        e.g. port=5001 mlflow.tracking_uri=sqlite:////data/mlflow.db

Binds to 127.0.0.1 unless ``host`` says otherwise. Runs until stopped (Ctrl-C).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence

from jobs.common import cli
from jobs.common.config import ConfigError, load_config, to_dict
from jobs.common.tracking import runs_page, tracking_uri


def command(argv: Sequence[str] | None = None) -> list[str]:
    """The ``mlflow ui`` command line for the config in ``argv``."""
    config = to_dict(load_config("ui", argv))
    if not isinstance(config["port"], int) or not 0 < config["port"] < 65536:
        raise ConfigError(f"port must be a TCP port number (1-65535), got {config['port']!r}")
    if not isinstance(config["workers"], int) or config["workers"] < 1:
        raise ConfigError(f"workers must be at least 1, got {config['workers']!r}")
    mlflow = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    cmd = [
        mlflow,
        "ui",
        "--backend-store-uri",
        tracking_uri(config["mlflow"]),
        "--host",
        config["host"],
        "--port",
        str(config["port"]),
        "--workers",
        str(config["workers"]),
    ]
    if config["allowed_hosts"]:
        cmd += ["--allowed-hosts", config["allowed_hosts"]]
    return cmd


def _experiment_id(argv: Sequence[str] | None) -> str | None:
    """The configured experiment's id in the tracking store, if it exists there yet."""
    import mlflow

    config = to_dict(load_config("ui", argv))["mlflow"]
    try:
        experiment = mlflow.MlflowClient(tracking_uri(config)).get_experiment_by_name(config["experiment"])
    except Exception:  # a store that cannot be read yet: the UI says why
        return None
    return experiment.experiment_id if experiment else None


def serve(argv: Sequence[str] | None = None) -> None:
    """Replace this process with ``mlflow ui``."""
    cmd = command(argv)
    base = f"http://{cmd[cmd.index('--host') + 1]}:{cmd[cmd.index('--port') + 1]}"
    print(f"MLflow UI: {runs_page(base, _experiment_id(argv))}  ({' '.join(cmd)})", flush=True)
    os.execv(cmd[0], cmd)


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(serve, argv)


if __name__ == "__main__":
    main()
