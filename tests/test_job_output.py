"""What a job shows on the terminal, what its run log keeps, and its config printed compactly."""

from __future__ import annotations

import io
import sys

import pytest

from jobs.common import cli
from jobs.common.config import load_config
from jobs.common.job_output import differences, filtered, run_log, show_config
from pipelines.contract.errors import ConfigError

RAY_TRAIN_LINE = (
    "(RayTrainWorker pid=27346) Checkpoint successfully created at: Checkpoint(filesystem=local, "
    "path=/tmp/x/checkpoint_2026-12-02_23-35-12.829782)"
)
CORE_WORKER_LINE = (
    "(TrainController pid=27233) [2026-12-02 23:35:07,173 E 27233 27263] core_worker.cc:2465: Actor "
    "with class name: 'PreemptionWatcher' and ID: '3d10369d' has constructor arguments in the "
    "object store and max_restarts > 0"
)
OWN_LINE = "(RayTrainWorker pid=27626) epoch 0: valid loss 1.680 ppl 5.36 BLEU 26.25"


@pytest.mark.parametrize("level", ["info", "debug"])
def test_other_programs_chatter_stays_off_the_terminal_but_not_out_of_the_log(level, tmp_path, monkeypatch):
    terminal = io.StringIO()
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setattr(sys, "stderr", terminal)
    with filtered(), run_log(tmp_path / "job.log"):
        show_config(load_config("evaluate", [f"log_level={level}", "beams=[2]"]), "evaluate")
        print(RAY_TRAIN_LINE)
        sys.stderr.write(CORE_WORKER_LINE[:40])  # lines may arrive in pieces
        sys.stderr.write(CORE_WORKER_LINE[40:] + "\n" + OWN_LINE + "\n")
        print("half a line", end="")
    shown = terminal.getvalue()
    logged = (tmp_path / "job.log").read_text(encoding="utf-8")
    assert OWN_LINE in shown and OWN_LINE in logged
    assert RAY_TRAIN_LINE in logged and CORE_WORKER_LINE in logged
    assert (RAY_TRAIN_LINE in shown) == (CORE_WORKER_LINE in shown) == (level == "debug")
    assert "half a line\n" in shown  # a partial line is written out when the job ends
    if level == "info":
        assert "evaluate: beams=[2] (defaults: conf/evaluate.yaml" in shown and "sets:" not in shown
    else:
        assert "sets:" in shown and "beams:\n- 2" in shown  # the whole config
    assert sys.stdout is terminal  # the streams are given back


def test_a_jobs_data_on_stdout_is_never_filtered(tmp_path, monkeypatch):
    """Text to translate may read like anything: what a job writes as its data passes untouched."""
    from jobs.common.line_stream import map_lines

    terminal = io.StringIO()
    monkeypatch.setattr(sys, "stdout", terminal)
    (tmp_path / "in.txt").write_text(RAY_TRAIN_LINE + "\n" + OWN_LINE + "\n", encoding="utf-8")
    with filtered():
        map_lines(tmp_path / "in.txt", None, 10, lambda lines: lines, progress=False)
        print(RAY_TRAIN_LINE)  # the same line printed as a log line is chatter
    assert terminal.getvalue() == RAY_TRAIN_LINE + "\n" + OWN_LINE + "\n"


def test_differences_are_the_keys_that_differ_from_the_defaults():
    cfg = load_config("evaluate", ["beams=[2]", "decode.alpha=0.5", "progress=false"])
    assert differences(cfg, "evaluate") == {"beams": [2], "decode.alpha": 0.5, "progress": False}
    assert differences(load_config("evaluate", []), "evaluate") == {}


def test_an_unknown_log_level_is_refused(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(lambda argv: show_config(load_config("evaluate", ["log_level=loud"]), "evaluate"), [])
    assert exit.value.code == cli.USER_ERROR_EXIT and "log_level must be one of info, debug" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        show_config(load_config("evaluate", ["log_level=warning"]), "evaluate")


def test_each_mlflow_run_keeps_the_lines_printed_while_it_was_open(tmp_path, monkeypatch):
    import mlflow

    from jobs.common.tracking import mlflow_run

    monkeypatch.setattr(sys, "stdout", io.StringIO())
    cfg = {
        "enabled": True,
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "experiment": "logs",
        "artifact_location": (tmp_path / "artifacts").as_uri(),
    }
    with filtered():
        print("before any run")
        with mlflow_run(cfg, "outer") as outer:
            outer_id = outer.active_run().info.run_id
            print("outer line")
            with mlflow_run(cfg, "inner") as inner:
                inner_id = inner.active_run().info.run_id
                print(RAY_TRAIN_LINE)
        with pytest.raises(RuntimeError), mlflow_run(cfg, "failing") as failing:
            failing_id = failing.active_run().info.run_id
            print("last words")
            raise RuntimeError("boom")
    client = mlflow.MlflowClient(cfg["tracking_uri"])

    def log(run_id: str) -> str:
        return open(client.download_artifacts(run_id, "logs/job.log", str(tmp_path)), encoding="utf-8").read()

    assert log(inner_id) == RAY_TRAIN_LINE + "\n"
    assert "outer line\n" in log(outer_id) and RAY_TRAIN_LINE in log(outer_id) and "before" not in log(outer_id)
    assert log(failing_id) == "last words\n" and client.get_run(failing_id).info.status == "FAILED"
