"""Load on the served translator: concurrent clients POST batches of real sentences to
``mlflow models serve`` (started by ``jobs.serve``) on 127.0.0.1 for a fixed time.

    python bench/serve.py CHECKPOINT --sources FILE [--clients 8] [--seconds 60] [--batch 8]
                          [--params '{"beam": 1}' ...]

The checkpoint is logged as the pyfunc model into a temporary MLflow store and served from there.
For each parameter set (default: the model's own decode settings, then greedy) every client sends
``--batch`` sentences per request, cycling through ``--sources`` from its own offset, for
``--seconds``. Reports requests, failures, sentences/s and p50/p99 request latency, with the CPU.
Ends with one line of JSON.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from measure import cpu_name  # noqa: E402


def read_sources(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict, timeout: float = 120) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, {}
    except OSError:
        return 0, {}


def load(url: str, sources: list[str], clients: int, seconds: float, batch: int, params: dict) -> dict:
    """``clients`` threads posting ``batch`` sentences at a time for ``seconds``."""
    latencies: list[float] = []
    failures, sentences = [0], [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(offset: int) -> None:
        position = offset
        while time.perf_counter() < deadline:
            texts = [sources[(position + i) % len(sources)] for i in range(batch)]
            position += batch
            started = time.perf_counter()
            status, answer = post(url, {"inputs": texts, "params": params})
            took = time.perf_counter() - started
            ok = status == 200 and len(answer.get("predictions", [])) == len(texts)
            with lock:
                if ok:
                    latencies.append(took)
                    sentences[0] += len(texts)
                else:
                    failures[0] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i * len(sources) // clients,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None  # noqa: E731
    return {
        "params": params,
        "requests": len(latencies) + failures[0],
        "failed": failures[0],
        "sentences": sentences[0],
        "seconds": round(wall, 1),
        "sentences_per_sec": round(sentences[0] / wall, 2),
        "latency_p50_s": round(pick(0.5), 3) if ordered else None,
        "latency_p99_s": round(pick(0.99), 3) if ordered else None,
        "latency_mean_s": round(statistics.mean(ordered), 3) if ordered else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--sources", type=Path, required=True, help="source sentences, one per line (.gz too)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--batch", type=int, default=8, help="sentences per request")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument(
        "--params",
        type=json.loads,
        nargs="+",
        default=[{}, {"beam": 1}],
        help="request parameter sets, one load phase each ({} = the model's settings)",
    )
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    from jobs.common.checkpoint import BUNDLE_FILE, Bundle
    from jobs.common.model_registry import log_model

    sources = read_sources(args.sources)
    store = Path(tempfile.mkdtemp(prefix="rnnmt-bench-serve-"))
    uri = f"sqlite:///{store / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(
        experiment_id=mlflow.create_experiment("bench-serve", artifact_location=(store / "artifacts").as_uri())
    )
    file = Path(args.checkpoint)
    file = file / BUNDLE_FILE if file.is_dir() else file
    with mlflow.start_run():
        model_uri = log_model(mlflow, file, Bundle.load(file)).model_uri
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobs.serve",
            f"model={model_uri}",
            f"port={port}",
            f"workers={args.workers}",
            f"mlflow.tracking_uri={uri}",
        ],
        cwd=PROJECT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/invocations"
    try:
        started = time.perf_counter()
        while post(url, {"inputs": sources[:1]}, timeout=5)[0] != 200:  # up, and the model loaded
            if server.poll() is not None or time.perf_counter() - started > 300:
                raise SystemExit("the server did not start")
            time.sleep(1)
        phases = [load(url, sources, args.clients, args.seconds, args.batch, params) for params in args.params]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    for p in phases:
        print(
            f"params {json.dumps(p['params'])}: {p['requests']} requests ({p['failed']} failed), "
            f"{p['sentences_per_sec']} sentences/s, latency p50 {p['latency_p50_s']} s p99 {p['latency_p99_s']} s",
            flush=True,
        )
    print(
        json.dumps(
            {
                "checkpoint": str(args.checkpoint),
                "cpu": cpu_name(),
                "cpus": os.cpu_count(),
                "clients": args.clients,
                "batch": args.batch,
                "workers": args.workers,
                "decode": Bundle.load(file).decode_settings().to_dict(),
                "phases": phases,
            }
        )
    )


if __name__ == "__main__":
    main()
