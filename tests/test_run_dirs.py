"""The directories of runs under ``storage_path``: plain names only, a job deletes only a run
directory it made, of its own kind, and a checkpoint in one is used only when it is whole."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from jobs import tune
from jobs.common import ray_train
from jobs.common.config import PROJECT_DIR
from jobs.common.run_dirs import MARKER, check_run_name, mark, remove_run
from pipelines.contract.errors import CheckpointError, ConfigError, OutputExistsError


@pytest.mark.parametrize("name", ["..", ".", "../project", "a/b", "", ".hidden", "-x", 5, None])
def test_a_run_name_that_is_not_a_plain_name_is_refused(name):
    with pytest.raises(ConfigError, match="run_name must be a plain name"):
        check_run_name("run_name", name)


@pytest.mark.parametrize("name", ["tr-test", "pipeline-translator", "w2v.pieces", "lm_2", "tune-lm-3f2a=1"])
def test_plain_names_pass(name):
    assert check_run_name("run_name", name) == name


def test_only_a_marked_run_of_the_same_kind_is_deleted(tmp_path):
    mine = tmp_path / "mine"
    mark(mine, "training")
    (mine / "checkpoint_1").mkdir()
    remove_run(mine, "training", "resume=false")
    assert not mine.exists()

    foreign = tmp_path / "foreign"
    (foreign / "data").mkdir(parents=True)
    with pytest.raises(OutputExistsError, match="not made by an rnnmt training run"):
        remove_run(foreign, "training", "resume=false")
    assert (foreign / "data").is_dir()

    search = tmp_path / "lm"
    mark(search, "search")
    with pytest.raises(OutputExistsError, match="holds a search run, not a training run; choose another name"):
        remove_run(search, "training", "resume=false")
    with pytest.raises(OutputExistsError, match="holds a search run"):
        mark(search, "training")
    assert (search / MARKER).read_text(encoding="utf-8") == "search\n"


def _fit_config(tmp_path, run_name: str) -> dict:
    return {
        "train": {"num_workers": 1, "use_gpu": False, "cpus_per_worker": 1, "max_failures": 0},
        "storage_path": str(tmp_path),
        "run_name": run_name,
        "resume": False,
    }


def test_resume_false_deletes_nothing_outside_its_run(tmp_path):
    """``run_name=..`` once pointed resume=false's delete at storage_path's parent; a directory that
    is not an rnnmt training run is refused, not deleted (both before Ray is started)."""
    keep = tmp_path / "storage" / "notes"
    keep.mkdir(parents=True)
    (keep / "todo.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(ConfigError, match="run_name must be a plain name"):
        ray_train.fit(lambda config: None, _fit_config(tmp_path / "storage" / "runs", ".."))
    with pytest.raises(OutputExistsError, match="not made by an rnnmt training run"):
        ray_train.fit(lambda config: None, _fit_config(tmp_path / "storage", "notes"))
    assert (keep / "todo.txt").read_text(encoding="utf-8") == "keep me"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("num_samples=0", "num_samples must be an integer >= 1, got 0"),
        ("max_concurrent=-1", "max_concurrent must be an integer >= 0"),
        ("name=../lm", "name must be a plain name"),
    ],
)
def test_a_search_refuses_bad_counts_and_names_before_it_starts(tmp_path, setting, message):
    with pytest.raises(ConfigError, match=message):
        tune.run(
            [
                str(PROJECT_DIR / "conf/tune/lm.yaml"),
                f"overrides.data_dir={tmp_path}",
                f"storage_path={tmp_path / 'ray'}",
                f"output_dir={tmp_path / 'out'}",
                "mlflow.enabled=false",
                setting,
            ]
        )
    assert not (tmp_path / "ray").exists()


def _checkpoint(run: Path, name: str, files: dict[str, object]) -> Path:
    directory = run / name
    directory.mkdir(parents=True)
    for file, value in files.items():
        torch.save(value, directory / file)
    return directory


def test_a_checkpoint_without_its_state_falls_back_to_the_whole_one_before(tmp_path):
    """A partial upload (best.pt there, state.pt not) once ended the driver in a KeyError and made a
    restarted worker start over from scratch."""
    from ray.train import Checkpoint

    run = tmp_path / "run"
    whole = _checkpoint(run, "checkpoint_2026-12-07_10-00-00.000001", {"state.pt": {"epoch": 1}, "best.pt": {}})
    partial = _checkpoint(run, "checkpoint_2026-12-07_10-05-00.000001", {"best.pt": {}})
    said = []
    chosen = ray_train.whole_checkpoint(Checkpoint.from_directory(str(partial)), said.append)
    assert Path(chosen.path) == whole and "has no state.pt" in said[0]
    assert ray_train.read_checkpoint(chosen, ["state.pt"])["state.pt"] == {"epoch": 1}
    assert ray_train.whole_checkpoint(None) is None
    (whole / "state.pt").unlink()
    with pytest.raises(CheckpointError, match="no readable checkpoint in .*has no state.pt"):
        ray_train.whole_checkpoint(Checkpoint.from_directory(str(partial)), said.append)
