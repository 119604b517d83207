"""The import rules of the layout (docs/architecture.md), checked on the source: a folder's name
says what it holds and what it may import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import PROJECT

PACKAGES = ("pipelines", "rnn_models", "jobs")


def _imports(path: Path) -> set[str]:
    """Every module a file imports (absolute names; relative imports are not used here)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _modules(package: str) -> dict[str, set[str]]:
    return {str(p.relative_to(PROJECT)): _imports(p) for p in sorted((PROJECT / package).rglob("*.py"))}


def _offending(package: str, allowed: callable) -> list[str]:
    return [
        f"{module} imports {name}"
        for module, names in _modules(package).items()
        for name in sorted(names)
        if not allowed(module, name)
    ]


def _top(name: str) -> str:
    return name.split(".")[0]


def test_models_know_nothing_of_spark_ray_mlflow_or_jobs():
    """rnn_models: plain PyTorch, and of the data side only its contract (special ids, errors)."""

    def allowed(module: str, name: str) -> bool:
        if _top(name) in ("pyspark", "ray", "mlflow", "jobs"):
            return False
        return _top(name) != "pipelines" or name.startswith("pipelines.contract.")

    assert _offending("rnn_models", allowed) == []


def test_the_data_side_knows_nothing_of_torch_ray_or_jobs_and_only_spark_imports_spark():
    def allowed(module: str, name: str) -> bool:
        if _top(name) in ("torch", "ray", "mlflow", "jobs", "rnn_models"):
            return False
        return _top(name) != "pyspark" or module.startswith("pipelines/spark/")

    assert _offending("pipelines", allowed) == []


@pytest.mark.parametrize("package", ["pipelines/contract", "pipelines/text", "pipelines/series"])
def test_contract_text_and_series_rules_stand_alone(package):
    """What both sides import needs neither Spark nor the Spark stages."""

    def allowed(module: str, name: str) -> bool:
        return (
            not name.startswith("pipelines.spark")
            and _top(name) != "pyspark"
            and not (package == "pipelines/contract" and name.startswith(("pipelines.text", "pipelines.series")))
        )

    assert _offending(package, allowed) == []


def test_no_module_imports_a_job_but_the_jobs_that_run_others():
    """Library code lives in jobs/common; a job module is imported only by jobs.pipeline (stages)
    and jobs.tune (trials, by name)."""
    jobs = {p.stem for p in (PROJECT / "jobs").glob("*.py") if p.stem != "__init__"}
    runners = {"jobs/pipeline.py", "jobs/tune.py"}
    for package in PACKAGES:
        for module, names in _modules(package).items():
            imported = {n.split(".")[1] for n in names if n.startswith("jobs.") and n.split(".")[1] in jobs}
            assert not imported or module in runners, f"{module} imports the job(s) {imported}"


@pytest.mark.parametrize("module", ["jobs/common/training_loop.py", "jobs/common/collectives.py"])
def test_the_training_loop_knows_nothing_of_ray(module):
    """The loop runs in-process (its tests, one worker) as under Ray Train: Ray is jobs.common.ray_train's."""
    names = _imports(PROJECT / module)
    assert not [n for n in names if _top(n) in ("ray", "mlflow", "pyspark")]
    assert not [
        n for n in names if n.startswith("jobs.") and n.split(".")[2] in ("ray_train", "ray_private", "tracking")
    ]
