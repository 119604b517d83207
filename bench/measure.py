"""What the benchmarks share: the peak memory of a process tree, the CPU, and running the jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil


class PeakMemory:
    """Peak resident memory of a process and its children, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.process] + self.process.children(recursive=True)
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def cpu_name() -> str:
    """The CPU model, as /proc/cpuinfo names it (every figure is reported with it)."""
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")


def run_job(cmd: list[str], cwd: Path) -> tuple[dict, float, int]:
    """Run a job's command line, passing its log on to stderr; returns the JSON summary it prints
    last, its wall-clock seconds (start-up included) and the peak RSS of its process tree in bytes.
    Exits with the job's status when it fails."""
    print(" ".join(cmd), file=sys.stderr, flush=True)
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")},
    )
    last = ""
    with PeakMemory(proc.pid, interval=1.0) as memory:
        for line in proc.stdout:  # the job's log, passed on; its last line is the summary
            print(line, end="", file=sys.stderr, flush=True)
            last = line if line.strip() else last
        proc.wait()
    if proc.returncode != 0:
        sys.exit(f"error: the job failed (exit {proc.returncode}); its log is above")
    return json.loads(last), time.perf_counter() - started, memory.peak


def preprocess_once(config: list[str], data_root: Path, out: Path, cwd: Path) -> Path:
    """``out``, made by ``jobs.preprocess`` with the ``config`` arguments unless it holds a
    preprocessing output already."""
    if not (out / "manifest.json").is_file():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "jobs.preprocess",
                *config,
                f"data_root={data_root}",
                f"output_dir={out}",
                "mlflow.enabled=false",
                "overwrite=true",
            ],
            cwd=cwd,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return out
