"""Every job ends a user's mistake with one ``error: ...`` line and exit code 2 (no traceback):
a real bad value per job, run through the job's own ``main``."""

from __future__ import annotations

import gzip
import subprocess
import sys

import pytest

from conftest import DATA, PROJECT
from jobs import evaluate, pipeline, preprocess, serve, train_translator, train_word2vec, translate, tune, ui
from jobs.common.cli import USER_ERROR_EXIT

OFF = "mlflow.enabled=false"


def _fails(main, argv, capsys, *expected: str) -> str:
    """Run ``main(argv)``: it must exit with the user-error code and one ``error:`` line naming ``expected``."""
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == USER_ERROR_EXIT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for text in expected:
        assert text in err[0], err[0]
    return err[0]


CASES = {
    "preprocess": (preprocess.main, ["vocab.max_size=-3", OFF], ["vocab.max_size", ">= 6", "-3"]),
    "preprocess-unknown-key": (preprocess.main, ["vocab.maxsize=10", OFF], ["unknown config key", "maxsize"]),
    "preprocess-missing-file": (
        preprocess.main,
        ["data.inputs=[{path: nowhere.tsv}]", OFF],
        ["data.inputs[0]", "nowhere.tsv"],
    ),
    "train_word2vec": (
        train_word2vec.main,
        ["data_dir=.", "output_dir=out", "model.loss=hinge", OFF],
        ["model.loss", "nce, negative", "hinge"],
    ),
    "train_word2vec-no-data": (
        train_word2vec.main,
        ["data_dir=nowhere", "output_dir=out", OFF],
        ["nowhere", "manifest.json"],
    ),
    "train_translator": (
        train_translator.main,
        ["data_dir=.", "output_dir=out", "model.attention=luong", OFF],
        ["model.attention", "bahdanau", "luong"],
    ),
    "train_translator-decode": (
        train_translator.main,
        ["data_dir=.", "output_dir=out", "decode.unk=guess", OFF],
        ["decode.unk", "keep, copy", "guess"],
    ),
    "translate": (translate.main, ["nowhere/best"], ["no translator checkpoint", "nowhere/best"]),
    "evaluate": (evaluate.main, ["checkpoint=nowhere", "beams=[0]", OFF], ["beams", "got [0]"]),
    "pipeline": (
        pipeline.main,
        ["stages.corpus.preset=conf/preprocess/nope.yaml", OFF],
        ["conf/preprocess/nope.yaml", "does not exist"],
    ),
    "tune": (tune.main, ["space={train.lr: [1, 2]}", OFF], ["space.train.lr", "loguniform"]),
    "ui": (ui.main, ["port=99999"], ["port", "99999"]),
    "serve": (serve.main, ["model=null"], ["model must be set", "models:/NAME@ALIAS"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_value_is_one_error_line(case, capsys, monkeypatch):
    monkeypatch.chdir(PROJECT)
    main, argv, expected = CASES[case]
    _fails(main, argv, capsys, *expected)


def test_a_truncated_gzip_input_is_named(spark, tmp_path, capsys):
    whole = gzip.compress((DATA / "toy-en-fr.tsv").read_bytes())
    broken = tmp_path / "pairs.tsv.gz"
    broken.write_bytes(whole[: len(whole) // 2])
    _fails(
        preprocess.main,
        [f"data.inputs=[{{path: '{broken}'}}]", f"output_dir={tmp_path / 'out'}", OFF],
        capsys,
        str(broken),
        "truncated gzip file",
    )
    assert not (tmp_path / "out").exists()


def test_the_command_line_gives_exit_code_2_and_no_traceback():
    done = subprocess.run(
        [sys.executable, "-m", "jobs.preprocess", "vocab.max_size=-3", OFF],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == USER_ERROR_EXIT
    assert done.stderr.strip().splitlines() == [
        "error: vocab.max_size must be an integer >= 6 (the special tokens), got -3"
    ]
