"""jobs.perplexity: a checkpoint's perplexity on a text file, against the same model stepped one
token at a time by hand; character models in bits per character; bad input refused."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.nn import functional as F

from jobs import perplexity
from jobs.common.lm_checkpoint import LMBundle
from pipelines.contract.errors import InputError
from pipelines.contract.specials import EOS_ID, SPECIALS, UNK_ID
from pipelines.text.normalize import NormalizeOptions
from rnn_models.language_model import LanguageModel, LanguageModelSettings

WORDS = ["the", "cat", "sat", ".", "a", "ran"]


def _save(tmp_path, tokens: list[str], kind: str, seed: int = 0):
    torch.manual_seed(seed)
    model = LanguageModel(LanguageModelSettings(vocab=len(tokens), embedding_size=8, hidden_size=8)).eval()
    path = tmp_path / "lm.pt"
    LMBundle(model, tokens, kind, NormalizeOptions(), "en").save(path)
    return path, model


def _by_hand(model: LanguageModel, ids: list[int]) -> float:
    """Mean cross-entropy of each next id, stepping the model one token at a time."""
    total, state = 0.0, None
    with torch.no_grad():
        for current, following in zip(ids, ids[1:]):
            logits, state = model(torch.tensor([[current]]), state)
            total -= F.log_softmax(logits[0, 0], -1)[following].item()
    return total / (len(ids) - 1)


def test_perplexity_of_a_file_matches_the_model_stepped_by_hand(tmp_path, capsys):
    tokens = list(SPECIALS) + WORDS
    path, model = _save(tmp_path, tokens, "word")
    text = tmp_path / "text.txt"
    text.write_text("The cat sat.\nA dog ran\n\n", encoding="utf-8")  # "dog" is unknown; an empty line
    ids = (
        [EOS_ID]
        + [tokens.index(w) for w in ("the", "cat", "sat", ".")]
        + [EOS_ID]
        + [tokens.index("a"), UNK_ID, tokens.index("ran"), EOS_ID, EOS_ID]
    )
    summary = perplexity.run([str(path), str(text), "--bptt", "3"])
    loss = _by_hand(model, ids)
    assert summary["lines"] == 3 and summary["tokens"] == len(ids) - 1 and summary["unk"] == 1
    assert summary["loss"] == pytest.approx(loss, rel=1e-5)
    assert summary["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert "bits_per_char" not in summary
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    # more rows score the same text, each row's first token without its history
    rows = perplexity.run([str(path), str(text), "--batch-size", "2"])
    assert rows["tokens"] == len(ids) - 2


def test_a_character_model_reports_bits_per_character(tmp_path):
    tokens = list(SPECIALS) + list("ab ")
    path, model = _save(tmp_path, tokens, "char", seed=1)
    text = tmp_path / "text.txt"
    text.write_text("ab ba\n", encoding="utf-8")
    summary = perplexity.run([str(path), str(text)])
    loss = _by_hand(model, [EOS_ID] + [tokens.index(c) for c in "ab ba"] + [EOS_ID])
    assert summary["tokens"] == 6 and summary["kind"] == "char"
    assert summary["bits_per_char"] == pytest.approx(loss / math.log(2), rel=1e-5)


def test_bad_input_is_refused(tmp_path):
    path, _ = _save(tmp_path, list(SPECIALS) + WORDS, "word")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"the cat\nsat \xff .\n")
    with pytest.raises(InputError, match=r"bad.txt: line 2 is not valid UTF-8 \(invalid start byte at byte 4\)"):
        perplexity.run([str(path), str(bad)])
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="no text to score"):
        perplexity.run([str(path), str(empty)])
    with pytest.raises(InputError, match="no such file"):
        perplexity.run([str(path), str(tmp_path / "missing.txt")])
