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
from jobs.common.tracking import tracking_uri


def command(argv: Sequence[str] | None = None) -> list[str]:
    """The ``mlflow ui`` command line for the config in ``argv``."""
    config = to_dict(load_config("ui", argv))
    if not isinstance(config["port"], int) or not 0 < config["port"] < 65536:
        raise ConfigError(f"port must be a TCP port number (1-65535), got {config['port']!r}")
    if not isinstance(config["workers"], int) or config["workers"] < 1:
        raise ConfigError(f"workers must be at least 1, got {config['workers']!r}")
    mlflow = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    cmd = [mlflow, "ui", "--backend-store-uri", tracking_uri(config["mlflow"]), "--host", config["host"],
           "--port", str(config["port"]), "--workers", str(config["workers"])]
    if config["allowed_hosts"]:
        cmd += ["--allowed-hosts", config["allowed_hosts"]]
    return cmd


def serve(argv: Sequence[str] | None = None) -> None:
    """Replace this process with ``mlflow ui``."""
    cmd = command(argv)
    print(f"MLflow UI: http://{cmd[cmd.index('--host') + 1]}:{cmd[cmd.index('--port') + 1]}  ({' '.join(cmd)})",
          flush=True)
    os.execv(cmd[0], cmd)


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(serve, argv)


if __name__ == "__main__":
    main()
