"""jobs.translate on bad and good input, with an untrained translator saved as a bundle."""

from __future__ import annotations

import json

import pytest
import torch

from jobs import translate as job
from jobs.common.checkpoint import BUNDLE_FILE, Bundle
from jobs.common.translation import translate
from pipelines.contract.errors import CheckpointError, ConfigError, InputError
from pipelines.contract.pieces import PieceModel, train_piece_model
from pipelines.contract.specials import SPECIALS
from pipelines.text.normalize import NormalizeOptions, tokenize
from rnn_models.search import DecodeSettings
from rnn_models.translator import Translator, TranslatorSettings

WORDS = ["the", "cat", "sleeps", "on", "a", "mat", "."]


def _original() -> Bundle:
    torch.manual_seed(0)
    tokens = list(SPECIALS) + WORDS
    model = Translator(
        TranslatorSettings(src_vocab=len(tokens), tgt_vocab=len(tokens), embedding_size=8, hidden_size=8)
    )
    bundle = Bundle(
        model.eval(),
        tokens,
        tokens,
        NormalizeOptions.for_language("en"),
        "en",
        "en",
        True,
        {"decode": {"beam": 2, "max_tokens": 5}},
    )
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


def test_a_corrupt_translator_is_refused_by_name(bundle_dir, tmp_path, capsys):
    """A truncated translator.pt, or one with a flipped byte in its weights (which torch.load alone
    reads without a word), is refused with a one-line error naming it; nothing is translated."""
    whole = (bundle_dir / BUNDLE_FILE).read_bytes()
    weights = whole.index(b"data/0")  # past the header: inside the stored tensors
    flipped = bytearray(whole)
    flipped[weights + 200] ^= 0xFF
    for name, data in (("truncated", whole[: len(whole) // 2]), ("flipped", bytes(flipped))):
        bad = tmp_path / name / BUNDLE_FILE
        bad.parent.mkdir()
        bad.write_bytes(data)
        with pytest.raises(CheckpointError, match=f"{bad}.* (truncated or corrupt|fails its CRC-32)"):
            Bundle.load(bad)
        (tmp_path / "in.txt").write_text("the cat\n")
        with pytest.raises(SystemExit) as exit:
            job.main([str(bad), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "out.txt")])
        assert exit.value.code != 0 and str(bad) in capsys.readouterr().err
        assert not (tmp_path / "out.txt").exists()


def test_empty_lines_stay_and_counts_are_reported(bundle_dir, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_bytes("The cat sleeps.\n\n   \nthe cat sleeps on a mat on a mat .\r\n".encode())
    out = tmp_path / "out.txt"
    counts = job.run([str(bundle_dir), "--input", str(src), "--output", str(out)])
    lines = out.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 5 and lines[1] == "" and lines[2] == "" and lines[4] == ""
    bundle = Bundle.load(bundle_dir)
    texts = src.read_text(encoding="utf-8").splitlines()
    tokens = sum(len(t.tokens) for t in translate(bundle, texts, bundle.decode_settings()))
    assert counts == {"lines": 4, "empty": 2, "truncated": 1, "translated": 2, "tokens": tokens}  # max_tokens 5
    err = capsys.readouterr().err
    assert "1 cut to 5 tokens" in err and "lines/s" in err and "output tokens/s" in err


def test_long_input_is_translated_chunk_by_chunk_as_in_one_go(bundle_dir, tmp_path):
    """Chunks of 20 batches of 3 lines: the output is what translating every line at once gives."""
    texts = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(1 + i % 9)) for i in range(500)]
    texts[123] = ""
    src, out = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    counts = job.run([str(bundle_dir), "--input", str(src), "--output", str(out), "--batch-size", "3"])
    bundle = Bundle.load(bundle_dir)
    expected = [t.text for t in translate(bundle, texts, bundle.decode_settings())]
    assert out.read_text(encoding="utf-8").split("\n") == expected + [""]
    assert counts["lines"] == 500 and counts["empty"] == 1


@pytest.mark.slow
def test_a_200k_line_input_is_translated_in_bounded_memory(bundle_dir, tmp_path):
    """The peak memory of translating 200,000 lines is within a few MB of translating 2,000
    (reading the whole input at once grew it by about 2 KB a line here)."""
    import random
    import subprocess
    import sys

    rng = random.Random(0)
    peaks = {}
    for n in (2_000, 200_000):
        src = tmp_path / f"in{n}.txt"
        with src.open("w", encoding="utf-8") as f:
            for _ in range(n):
                f.write(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + "\n")
        script = (
            "import resource, sys; from jobs import translate; translate.run(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
        )
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                script,
                str(bundle_dir),
                "--input",
                str(src),
                "--output",
                str(tmp_path / "out.txt"),
                "--beam",
                "1",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        peaks[n] = int(done.stdout.split()[-1]) / 1024  # ru_maxrss: KiB on Linux
        assert f"translated {n} of {n} lines" in done.stderr
        assert (tmp_path / "out.txt").read_text(encoding="utf-8").count("\n") == n
    assert peaks[200_000] - peaks[2_000] < 25, peaks


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


def test_nbest_writes_json_lines_best_first(bundle_dir, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("The cat sleeps.\n\nthe mat\n", encoding="utf-8")
    one, many = tmp_path / "one.txt", tmp_path / "many.jsonl"
    job.run([str(bundle_dir), "--input", str(src), "--output", str(one), "--beam", "4"])
    job.run([str(bundle_dir), "--input", str(src), "--output", str(many), "--beam", "4", "--nbest", "3"])
    best = one.read_text(encoding="utf-8").splitlines()
    lists = [json.loads(line)["nbest"] for line in many.read_text(encoding="utf-8").splitlines()]
    assert len(lists) == 3 and lists[1] == []  # the empty line stays empty
    for first, n in zip(best, lists):
        if n:
            assert n[0]["text"] == first and 1 < len(n) <= 3
            assert [c["score"] for c in n] == sorted((c["score"] for c in n), reverse=True)
    with pytest.raises(ConfigError, match="nbest=3 needs a beam"):
        job.run([str(bundle_dir), "--input", str(src), "--beam", "2", "--nbest", "3"])


def test_several_checkpoints_translate_as_an_ensemble(bundle_dir, tmp_path):
    other = _original()
    torch.manual_seed(5)
    for p in other.model.parameters():
        torch.nn.init.normal_(p)
    (tmp_path / "other").mkdir()
    other.save(tmp_path / "other" / BUNDLE_FILE)
    src = tmp_path / "in.txt"
    src.write_text("The cat sleeps.\na mat\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    job.run([str(bundle_dir), str(tmp_path / "other"), "--input", str(src), "--output", str(out)])
    ensemble = Bundle.ensemble([Bundle.load(bundle_dir), Bundle.load(tmp_path / "other")])
    expected = [t.text for t in translate(ensemble, ["The cat sleeps.", "a mat"], ensemble.decode_settings())]
    assert out.read_text(encoding="utf-8").splitlines() == expected


def _piece_bundle(toy_pairs) -> Bundle:
    """An untrained translator on BPE pieces of the toy corpus."""
    lines = [line.split("\t") for line in toy_pairs.read_text(encoding="utf-8").splitlines()]
    models = [
        PieceModel(
            train_piece_model(
                [" ".join(tokenize(pair[side], NormalizeOptions.for_language(lang))) for pair in lines], "bpe", 200
            )
        )
        for side, lang in ((0, "en"), (1, "fr"))
    ]
    torch.manual_seed(0)
    model = Translator(TranslatorSettings(src_vocab=200, tgt_vocab=200, embedding_size=8, hidden_size=8))
    return Bundle(
        model.eval(),
        list(models[0].tokens),
        list(models[1].tokens),
        NormalizeOptions.for_language("en"),
        "en",
        "fr",
        True,
        {},
        models[0].proto,
        models[1].proto,
    )


def test_a_piece_bundle_carries_its_models_and_translates_alike(toy_pairs, tmp_path):
    original = _piece_bundle(toy_pairs)
    original.save(tmp_path / BUNDLE_FILE)
    bundle = Bundle.load(tmp_path)
    assert bundle.src_pieces == original.src_pieces and bundle.tgt_pieces == original.tgt_pieces
    assert bundle.src_codec.pieces is not None and bundle.tgt_codec.pieces.sha256 == original.tgt_codec.pieces.sha256
    texts = ["Tom paid 25 dollars.", "I like cats.", ""]
    settings = DecodeSettings(beam=2, max_tokens=50)
    out = translate(bundle, texts, settings)
    assert [t.text for t in out] == [t.text for t in translate(original, texts, settings)]
    # the model read pieces; the translation's source tokens are the normalized words
    assert out[0].source_tokens == ["tom", "paid", "[NUM]", "dollars", "."]
    assert len(out[0].source_ids) > len(out[0].source_tokens)
    assert out[2].text == "" and out[2].source_ids == []
    # output tokens are whole words spelled by the pieces: no piece marks left
    assert all("\u2581" not in token for t in out for token in t.tokens)


def test_truncation_counts_pieces(toy_pairs):
    bundle = _piece_bundle(toy_pairs)
    words = ["the", "cat", "sleeps", "on", "the", "mat"]
    out = translate(bundle, [" ".join(words)], DecodeSettings(max_tokens=4))[0]
    assert out.truncated and len(out.source_ids) == 4
    # the source tokens are the words the 4 pieces began (the last perhaps in part)
    read = bundle.src_codec.decode(out.source_ids)[0]
    assert out.source_tokens == words[: len(read)] and read[:-1] == words[: len(read) - 1]
