"""jobs.translate on bad and good input, with an untrained translator saved as a bundle."""

from __future__ import annotations

import pytest
import torch

from jobs import translate as job
from jobs.common.checkpoint import BUNDLE_FILE, Bundle
from jobs.common.translation import translate
from pipelines.contract.errors import CheckpointError, InputError
from pipelines.contract.specials import SPECIALS
from pipelines.text.normalize import NormalizeOptions
from rnn_models.search import DecodeSettings
from rnn_models.translator import Translator, TranslatorSettings

WORDS = ["the", "cat", "sleeps", "on", "a", "mat", "."]


def _original() -> Bundle:
    torch.manual_seed(0)
    tokens = list(SPECIALS) + WORDS
    model = Translator(TranslatorSettings(src_vocab=len(tokens), tgt_vocab=len(tokens), embedding_size=8,
                                          hidden_size=8))
    bundle = Bundle(model.eval(), tokens, tokens, NormalizeOptions.for_language("en"), "en", "en", True,
                    {"decode": {"beam": 2, "max_tokens": 5}})
    return bundle


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    _original().save(out / BUNDLE_FILE)
    return out


def test_bundle_round_trip(bundle_dir, tmp_path):
    original = _original()
    bundle = Bundle.load(bundle_dir)
    assert Bundle.load(bundle_dir / BUNDLE_FILE).src_tokens == bundle.src_tokens == original.src_tokens
    assert bundle.info == original.info and bundle.src_options == original.src_options
    assert bundle.model.settings == original.model.settings
    assert all(torch.equal(bundle.model.state_dict()[k], v) for k, v in original.model.state_dict().items())
    texts = ["The cat sleeps on 3 mats.", "a cat"]
    settings = bundle.decode_settings()
    assert settings == DecodeSettings(beam=2, max_tokens=5)  # the bundle's, on top of the defaults
    expected = [t.text for t in translate(original, texts, settings)]
    assert [t.text for t in translate(bundle, texts, settings)] == expected
    with pytest.raises(CheckpointError, match="no translator checkpoint"):
        Bundle.load(bundle_dir / "nothing")
    not_a_bundle = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, not_a_bundle)
    with pytest.raises(CheckpointError, match="not a translator checkpoint"):
        Bundle.load(not_a_bundle)


def test_empty_lines_stay_and_counts_are_reported(bundle_dir, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_bytes("The cat sleeps.\n\n   \nthe cat sleeps on a mat on a mat .\r\n".encode())
    out = tmp_path / "out.txt"
    counts = job.run([str(bundle_dir), "--input", str(src), "--output", str(out)])
    lines = out.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 5 and lines[1] == "" and lines[2] == "" and lines[4] == ""
    assert counts == {"lines": 4, "empty": 2, "truncated": 1, "translated": 2}  # max_tokens 5 from the bundle
    assert "1 cut to 5 tokens" in capsys.readouterr().err


def test_invalid_utf8_names_the_line_and_writes_nothing(bundle_dir, tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"the cat\nok line\nbad \xff\xfe byte\n")
    out = tmp_path / "out.txt"
    with pytest.raises(InputError, match="line 3 is not valid UTF-8"):
        job.run([str(bundle_dir), "--input", str(src), "--output", str(out)])
    assert not out.exists() and list(tmp_path.iterdir()) == [src]


def test_stdin_to_stdout(bundle_dir, monkeypatch, capsys):
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"the cat\n\n")))
    job.run([str(bundle_dir), "--beam", "1", "--unk", "copy"])
    assert capsys.readouterr().out.count("\n") == 2
