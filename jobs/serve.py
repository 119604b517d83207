"""Serve a registered (or logged) translator as a REST endpoint with ``mlflow models serve``.

    python -m jobs.serve [model=models:/rnnmt-translator@champion] [port=5001] [key=value ...]

POST ``{"inputs": ["I like cats."], "params": {"beam": 5}}`` to ``http://HOST:PORT/invocations``;
the answer is ``{"predictions": [...]}``, one translation per sentence. Binds to 127.0.0.1 unless
``host`` says otherwise, in this environment (``--env-manager local``: no new one is built). Runs
until stopped (Ctrl-C).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence

from jobs.common import cli
from jobs.common.config import ConfigError, load_config, to_dict
from jobs.common.tracking import tracking_uri


def command(argv: Sequence[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow models serve`` command line for the config in ``argv``, and its environment."""
    config = to_dict(load_config("serve", argv))
    if not isinstance(config["port"], int) or not 0 < config["port"] < 65536:
        raise ConfigError(f"port must be a TCP port number (1-65535), got {config['port']!r}")
    if not isinstance(config["workers"], int) or config["workers"] < 1:
        raise ConfigError(f"workers must be at least 1, got {config['workers']!r}")
    if not config["model"]:
        raise ConfigError("model must be set: models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/model")
    bin_dir = os.path.dirname(sys.executable)
    mlflow = shutil.which("mlflow", path=bin_dir) or "mlflow"
    cmd = [
        mlflow,
        "models",
        "serve",
        "--model-uri",
        str(config["model"]),
        "--env-manager",
        "local",
        "--host",
        config["host"],
        "--port",
        str(config["port"]),
        "--workers",
        str(config["workers"]),
    ]
    # the model URI is resolved against the tracking store (and registry) the jobs write to; the
    # server's own programs (uvicorn) are found beside this Python even in an unactivated venv
    return cmd, {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri(config["mlflow"]),
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
    }


def serve(argv: Sequence[str] | None = None) -> None:
    """Replace this process with ``mlflow models serve``."""
    cmd, env = command(argv)
    print(
        f"Serving {cmd[cmd.index('--model-uri') + 1]} at "
        f"http://{cmd[cmd.index('--host') + 1]}:{cmd[cmd.index('--port') + 1]}/invocations  ({' '.join(cmd)})",
        flush=True,
    )
    os.execve(cmd[0], cmd, env)


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(serve, argv)


if __name__ == "__main__":
    main()
