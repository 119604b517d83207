"""A cluster on one machine: a Ray head and Ray worker nodes, a Spark standalone master and workers,
and an MLflow tracking server that serves artifacts, each a process tree of its own, all bound to
127.0.0.1 on free ports, to try the multi-node path on one machine (the multi-node tests use it):

    python -m jobs.local_cluster [--ray-workers 2] [--spark-workers 1] [--dir DIR]

It prints the settings that point a job at it and runs until Ctrl-C (or SIGTERM), then stops
every process it started, by process id, and leaves none behind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent
HEAD = "head"


def free_ports(n: int) -> list[int]:
    """``n`` different TCP ports on 127.0.0.1 that nothing listens on now."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    return free_ports(1)[0]


def get_json(url: str, timeout: float = 10) -> dict:
    """The JSON answer to a GET of ``url``."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass
class Service:
    """One started process tree: its name, its process (the leader of its own session) and log."""

    name: str
    process: subprocess.Popen
    log: Path
    ports: dict[str, int] = field(default_factory=dict)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


class ClusterError(RuntimeError):
    """A part of the local cluster did not start."""


class LocalCluster:
    """Starts and stops the cluster; a context manager. ``ray_workers`` Ray worker nodes of
    ``cpus_per_node`` logical CPUs each beside a head of ``head_cpus``; each node carries a custom
    resource named after it (``head``, ``worker1``, ...). ``spark_workers`` Spark workers of
    ``spark_cores`` cores. Logs and stores go under ``root``; Ray's temporary directories under a
    short path in /tmp (Ray's socket paths are length-limited)."""

    def __init__(
        self,
        root: Path,
        ray_workers: int = 2,
        cpus_per_node: float = 1,
        head_cpus: float = 1,
        spark_workers: int = 1,
        spark_cores: int = 1,
        spark_memory: str = "2g",
        mlflow: bool = True,
    ):
        self.root = Path(root).resolve()
        self.ray_workers, self.cpus_per_node, self.head_cpus = ray_workers, cpus_per_node, head_cpus
        self.spark_workers, self.spark_cores, self.spark_memory = spark_workers, spark_cores, spark_memory
        self.with_mlflow = mlflow
        self.services: list[Service] = []
        self.sessions: set[int] = set()  # every part ever started leads a session of this id
        self.ray_temp = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
        self.gcs_port = self.dashboard_port = self.spark_port = self.spark_ui_port = self.mlflow_port = 0

    # -- what jobs are given -------------------------------------------------------------------

    @property
    def ray_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def spark_master(self) -> str:
        return f"spark://127.0.0.1:{self.spark_port}"

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def overrides(self) -> list[str]:
        """The ``key=value`` settings that send a job's work to this cluster."""
        out = [f"ray.address={self.ray_address}"]
        if self.spark_port:
            out.append(f"spark.master={self.spark_master}")
        if self.mlflow_port:
            out.append(f"mlflow.tracking_uri={self.tracking_uri}")
        return out

    def env(self) -> dict[str, str]:
        """The environment of the cluster's processes and of a job run against it: this Python's
        tools first, Spark's driver on 127.0.0.1, Ray's auth and usage reporting as the cluster has
        them, and Ray Train's run state kept (the dashboard's Train page and ``/api/train/v2/runs``
        show each run's workers and their nodes)."""
        env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "SPARK_LOCAL_IP": "127.0.0.1",
            "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_TRAIN_ENABLE_STATE_TRACKING": "1",
            "PYSPARK_PYTHON": sys.executable,
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        env.pop("RAY_ADDRESS", None)
        return env

    # -- start ---------------------------------------------------------------------------------

    def __enter__(self) -> "LocalCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start every part and wait until each answers."""
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        self.start_ray()
        if self.spark_workers:
            self.start_spark()
        if self.with_mlflow:
            self.start_mlflow()

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None, **ports: int) -> Service:
        log = self.root / "logs" / f"{name}.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(
                command,
                env=env or self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.root,
            )
        service = Service(name, process, log, ports)
        self.services.append(service)
        self.sessions.add(process.pid)
        return service

    def _wait(self, service: Service, ready: Callable[[], bool], what: str, timeout: float = 120) -> None:
        """Poll ``ready`` until true; raise with the log of a part that exited, or of ``service``
        when time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if ready():
                    return
            except (OSError, ValueError):
                # ValueError: a JSON answer not yet JSON; a starting Spark master serves its HTML
                # page at /json/ for a moment before the JSON handler is attached
                pass
            for started in self.services:
                if not started.alive():
                    raise ClusterError(f"{started.name} exited before {what}:\n{started.log_tail()}")
            if time.monotonic() > deadline:
                raise ClusterError(f"{service.name}: no {what} within {timeout:.0f} s:\n{service.log_tail()}")
            time.sleep(0.5)

    def _ray_node(self, name: str, cpus: float, head: bool) -> Service:
        temp = self.ray_temp / name
        names = ("node_manager", "object_manager", "metrics", "agent_listen", "agent_grpc", "runtime_env_agent")
        ports = dict(zip(names, free_ports(len(names))))
        command = [
            str(BIN / "ray"),
            "start",
            "--block",
            f"--num-cpus={cpus:g}",
            "--num-gpus=0",
            f"--resources={json.dumps({name: 1})}",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={temp}",
            f"--node-manager-port={ports['node_manager']}",
            f"--object-manager-port={ports['object_manager']}",
            f"--metrics-export-port={ports['metrics']}",
            f"--dashboard-agent-listen-port={ports['agent_listen']}",
            f"--dashboard-agent-grpc-port={ports['agent_grpc']}",
            f"--runtime-env-agent-port={ports['runtime_env_agent']}",
            "--min-worker-port=0",
            "--max-worker-port=0",  # workers on ports the system picks
            "--disable-usage-stats",
            "--object-store-memory=200000000",
        ]
        if head:
            command += [
                "--head",
                f"--port={self.gcs_port}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                "--include-dashboard=true",
            ]
        else:
            command += [f"--address={self.ray_address}"]
        return self._spawn(f"ray-{name}", command, **ports)

    def start_ray(self) -> None:
        """The head, then the worker nodes; waits until the state API lists every node alive."""
        self.gcs_port, self.dashboard_port = free_ports(2)
        head = self._ray_node(HEAD, self.head_cpus, head=True)
        self._wait(head, lambda: get_json(f"{self.dashboard}/api/version"), "dashboard")
        for i in range(1, self.ray_workers + 1):
            self._ray_node(f"worker{i}", self.cpus_per_node, head=False)
        self._wait(
            head, lambda: len(self.ray_nodes()) >= 1 + self.ray_workers, f"{1 + self.ray_workers} alive Ray nodes"
        )

    def ray_nodes(self) -> dict[str, str]:
        """The alive Ray nodes by name (``head``, ``worker1``, ...): their node ids (Ray's state API)."""
        from ray.util.state import list_nodes

        nodes = list_nodes(address=self.dashboard, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
        return {
            name: node.node_id
            for node in nodes
            for name in node.resources_total
            if name == HEAD or name.startswith("worker")
        }

    def restart_ray_node(self, name: str) -> None:
        """Start worker node ``name`` again (after a fault took it down) and wait until it is alive."""
        self.services = [s for s in self.services if s.name != f"ray-{name}" or s.alive()]
        node = self._ray_node(name, self.cpus_per_node, head=False)
        self._wait(node, lambda: name in self.ray_nodes(), f"Ray node {name} alive")

    def start_spark(self) -> None:
        """A standalone master and its workers (pyspark's ``bin/spark-class``: the pip package has no
        ``sbin`` scripts); waits until the master lists every worker alive."""
        import pyspark

        spark_home = Path(pyspark.__file__).parent
        env = {
            **self.env(),
            "SPARK_HOME": str(spark_home),
            "SPARK_LOG_DIR": str(self.root / "logs"),
            "SPARK_WORKER_DIR": str(self.root / "spark-work"),
        }
        spark_class = [str(spark_home / "bin" / "spark-class")]
        self.spark_port, self.spark_ui_port = free_ports(2)
        master = self._spawn(
            "spark-master",
            spark_class
            + [
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.spark_port),
                "--webui-port",
                str(self.spark_ui_port),
            ],
            env,
        )
        state = f"http://127.0.0.1:{self.spark_ui_port}/json/"
        self._wait(master, lambda: get_json(state).get("status") == "ALIVE", "master")
        for i in range(1, self.spark_workers + 1):
            self.start_spark_worker(i, env, spark_class)
        self._wait(master, lambda: self.spark_workers_alive() >= self.spark_workers, "alive workers")

    def start_spark_worker(
        self, i: int, env: dict[str, str] | None = None, spark_class: list[str] | None = None
    ) -> Service:
        """Spark worker ``i`` (``spark-worker<i>``), registered with the master."""
        import pyspark

        spark_home = Path(pyspark.__file__).parent
        env = env or {**self.env(), "SPARK_HOME": str(spark_home), "SPARK_LOG_DIR": str(self.root / "logs")}
        spark_class = spark_class or [str(spark_home / "bin" / "spark-class")]
        work = self.root / "spark-work" / f"worker{i}"
        work.mkdir(parents=True, exist_ok=True)
        ui = free_port()
        return self._spawn(
            f"spark-worker{i}",
            spark_class
            + [
                "org.apache.spark.deploy.worker.Worker",
                self.spark_master,
                "--host",
                "127.0.0.1",
                "--webui-port",
                str(ui),
                "--cores",
                str(self.spark_cores),
                "--memory",
                self.spark_memory,
                "--work-dir",
                str(work),
            ],
            env,
            ui=ui,
        )

    def restart_spark_worker(self, i: int) -> None:
        """Start Spark worker ``i`` again (after a fault took it down) and wait until the master has it."""
        self.services = [s for s in self.services if s.name != f"spark-worker{i}" or s.alive()]
        alive = self.spark_workers_alive()
        worker = self.start_spark_worker(i)
        self._wait(worker, lambda: self.spark_workers_alive() > alive, f"Spark worker {i} registered")

    def spark_workers_alive(self) -> int:
        """How many workers the Spark master lists as alive."""
        workers = get_json(f"http://127.0.0.1:{self.spark_ui_port}/json/").get("workers", [])
        return sum(w.get("state") == "ALIVE" for w in workers)

    def start_mlflow(self) -> None:
        """``mlflow server`` on a SQLite store that serves artifacts (workers on any node upload
        through it); on the same port again if it ran before."""
        self.mlflow_port = self.mlflow_port or free_port()
        store = self.root / "mlflow"
        store.mkdir(exist_ok=True)
        server = self._spawn(
            "mlflow",
            [
                str(BIN / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.mlflow_port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{store / 'mlflow.db'}",
                "--artifacts-destination",
                str(store / "artifacts"),
                "--serve-artifacts",
            ],
        )
        self._wait(
            server,
            lambda: get_json(f"{self.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1") is not None,
            "answer",
            timeout=180,
        )

    # -- faults --------------------------------------------------------------------------------

    def service(self, name: str) -> Service:
        (found,) = [s for s in self.services if s.name == name and s.alive()]
        return found

    def raylet_pid(self, node: str) -> int:
        """The process id of Ray node ``node``'s raylet (``head``, ``worker1``, ...)."""
        temp = f"{self.ray_temp / node}/"
        for process in psutil.process_iter(["name", "cmdline"]):
            cmdline = process.info["cmdline"] or []
            if cmdline and "raylet" in Path(cmdline[0]).name and any(temp in arg for arg in cmdline):
                return process.pid
        raise ClusterError(f"no raylet found for Ray node {node}")

    def stop_service(self, name: str, grace: float = 10) -> None:
        """Stop one running part (``mlflow``, ``spark-worker1``, ``ray-worker2``, ...) and its
        processes; ``grace=0`` kills them at once (SIGKILL), as a crash would."""
        service = self.service(name)
        _stop([service.process], grace)
        self.services.remove(service)

    # -- stop ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every part (SIGTERM to each process group, SIGKILL to it after 10 s: a Ray head
        can take half a minute to stop), then kill whatever is left of their sessions or runs from this cluster's
        directories. A second Ctrl-C or SIGTERM meanwhile is ignored: it would leave processes behind."""
        with _uninterrupted():
            self._stop_all()

    def _stop_all(self) -> None:
        _stop([service.process for service in self.services])
        for process in self.leftovers():
            try:
                process.kill()
            except psutil.Error:
                pass
        self.services.clear()
        shutil.rmtree(self.ray_temp, ignore_errors=True)

    def leftovers(self) -> list[psutil.Process]:
        """Live processes of the sessions this cluster started, or run from its directories."""
        marks = (str(self.ray_temp), str(self.root))
        out = []
        for process in psutil.process_iter(["cmdline", "status"]):
            try:
                if process.info["status"] == psutil.STATUS_ZOMBIE or process.pid == os.getpid():
                    continue
                if os.getsid(process.pid) in self.sessions or any(
                    mark in arg for mark in marks for arg in process.info["cmdline"] or ()
                ):
                    out.append(process)
            except (psutil.Error, ProcessLookupError):
                pass
        return out


@contextmanager
def _uninterrupted() -> Iterator[None]:
    """SIGINT and SIGTERM ignored inside (in the main thread, where handlers live)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop(processes: list[subprocess.Popen], grace: float = 10) -> None:
    """SIGTERM to the process groups that ``processes`` lead, SIGKILL to those left after ``grace`` seconds."""
    for process in processes:
        try:
            os.killpg(process.pid, signal.SIGTERM if grace else signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, default=None, help="logs and stores (default: a new temporary directory)")
    parser.add_argument("--ray-workers", type=int, default=2, help="Ray worker nodes beside the head")
    parser.add_argument("--cpus-per-node", type=float, default=1, help="logical CPUs of each Ray worker node")
    parser.add_argument("--head-cpus", type=float, default=1, help="logical CPUs of the Ray head")
    parser.add_argument("--spark-workers", type=int, default=1, help="Spark standalone workers (0: no Spark)")
    parser.add_argument("--spark-cores", type=int, default=1, help="cores of each Spark worker")
    parser.add_argument("--no-mlflow", action="store_true", help="no MLflow server")
    args = parser.parse_args(argv)
    root = args.dir or Path(tempfile.mkdtemp(prefix="rnnmt-cluster-"))
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops it as Ctrl-C does
    with LocalCluster(
        root,
        args.ray_workers,
        args.cpus_per_node,
        args.head_cpus,
        args.spark_workers,
        args.spark_cores,
        mlflow=not args.no_mlflow,
    ) as cluster:
        print(
            f"Cluster up (logs in {root / 'logs'}). Ray dashboard {cluster.dashboard}"
            + (f", MLflow {cluster.tracking_uri}" if cluster.mlflow_port else "")
            + ". Run a job on it with:\n"
        )
        print("  export SPARK_LOCAL_IP=127.0.0.1 RAY_AUTH_MODE=" + cluster.env()["RAY_AUTH_MODE"])
        print("  python -m jobs.pipeline " + " ".join(cluster.overrides()) + "\n")
        print("Ctrl-C stops every part.", flush=True)
        try:
            while all(s.alive() for s in cluster.services):
                time.sleep(1)
            dead = [s.name for s in cluster.services if not s.alive()]
            print(f"{', '.join(dead)} exited; stopping the rest", file=sys.stderr)
        except KeyboardInterrupt:
            pass
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
