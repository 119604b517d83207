"""jobs.translate on bad and good input, with an untrained translator saved as a bundle."""

from __future__ import annotations

import pytest
import torch

from jobs import translate as job
from jobs.translation import BUNDLE_FILE, Bundle, translate
from pipelines.normalize import NormalizeOptions
from pipelines.vocab import SPECIALS
from rnn_models.translator import Translator, TranslatorSettings

WORDS = ["the", "cat", "sleeps", "on", "a", "mat", "."]


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    torch.manual_seed(0)
    tokens = list(SPECIALS) + WORDS
    model = Translator(TranslatorSettings(src_vocab=len(tokens), tgt_vocab=len(tokens), embedding_size=8,
                                          hidden_size=8))
    bundle = Bundle(model.eval(), tokens, tokens, NormalizeOptions.for_language("en"), "en", "en", True,
                    {"decode": {"beam": 2, "max_tokens": 5}})
    out = tmp_path_factory.mktemp("bundle")
    bundle.save(out / BUNDLE_FILE)
    return out


def test_bundle_round_trip(bundle_dir):
    bundle = Bundle.load(bundle_dir)
    again = Bundle.load(bundle_dir / BUNDLE_FILE)
    assert bundle.src_tokens == again.src_tokens and bundle.info["decode"]["beam"] == 2
    texts = ["The cat sleeps on 3 mats.", "a cat"]
    assert [t.text for t in translate(bundle, texts, beam=2)] == [t.text for t in translate(again, texts, beam=2)]
    with pytest.raises(FileNotFoundError):
        Bundle.load(bundle_dir / "nothing")


def test_empty_lines_stay_and_counts_are_reported(bundle_dir, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_bytes("The cat sleeps.\n\n   \nthe cat sleeps on a mat on a mat .\r\n".encode())
    out = tmp_path / "out.txt"
    counts = job.main([str(bundle_dir), "--input", str(src), "--output", str(out)])
    lines = out.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 5 and lines[1] == "" and lines[2] == "" and lines[4] == ""
    assert counts == {"lines": 4, "empty": 2, "truncated": 1, "translated": 2}  # max_tokens 5 from the bundle
    assert "1 cut to 5 tokens" in capsys.readouterr().err


def test_invalid_utf8_names_the_line_and_writes_nothing(bundle_dir, tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"the cat\nok line\nbad \xff\xfe byte\n")
    out = tmp_path / "out.txt"
    with pytest.raises(SystemExit, match="line 3 is not valid UTF-8"):
        job.main([str(bundle_dir), "--input", str(src), "--output", str(out)])
    assert not out.exists() and list(tmp_path.iterdir()) == [src]


def test_stdin_to_stdout(bundle_dir, monkeypatch, capsys):
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"the cat\n\n")))
    job.main([str(bundle_dir), "--beam", "1", "--unk", "copy"])
    assert capsys.readouterr().out.count("\n") == 2
