"""The C loop against Python references (pair by pair; window by window, the tensor step per centre),
its threads, its build errors, and the check of a cached build before it is loaded."""

from __future__ import annotations

import math

import pytest
import torch

from rnn_models import word2vec_native
from rnn_models.skipgram import Stream, Windows, Word2Vec, Word2VecSettings, sentence_ids

pytestmark = pytest.mark.c_loop


def _model(
    loss: str, cbow: bool, block: int, vocab: int = 20, dim: int = 12, update: str = "pair", negatives: int = 3
) -> Word2Vec:
    counts = torch.tensor([0] * 6 + [5 + 3 * i for i in range(vocab - 6)])
    model = Word2Vec(
        Word2VecSettings(vocab, dim, cbow, loss, negatives=negatives, noise_block=block, update=update), counts
    )
    g = torch.Generator().manual_seed(4)
    for table in (model.input.weight, model.output.weight):
        torch.nn.init.normal_(table, std=0.3, generator=g)
    return model


def _stream(seed: int = 0, lengths: tuple[int, ...] = (7, 1, 9, 4), window: int = 3, vocab: int = 20) -> Stream:
    g = torch.Generator().manual_seed(seed)
    lengths_t = torch.tensor(lengths)
    tokens = torch.randint(6, vocab, (int(lengths_t.sum()),), generator=g)
    return Stream.draw(tokens, sentence_ids(lengths_t), window, g)


def _reference(model: Word2Vec, stream: Stream, noise: torch.Tensor, lr: float) -> tuple[float, int]:
    """word2vec.c's loop in Python, in float64: pair by pair, each update seen by the next pair."""
    w_in, w_out = model.input.weight.detach().double(), model.output.weight.detach().double()
    bias, kq = model.bias.weight.detach()[:, 0].double(), model.log_kq.double()
    tokens, sentence, reach = stream.tokens.tolist(), stream.sentence.tolist(), stream.reach.tolist()
    loss, terms = 0.0, 0

    def score(h: torch.Tensor, centre: int, drawn: list[int]) -> torch.Tensor:
        nonlocal loss
        grad = torch.zeros_like(h)
        for label, target in [(1, centre)] + [(0, w) for w in drawn]:
            f = float(h @ w_out[target]) + (float(bias[target] - kq[target]) if model.nce else 0.0)
            loss += math.log1p(math.exp(-f if label else f))
            g = lr * (label - 1 / (1 + math.exp(-f)))
            grad += g * w_out[target]
            w_out[target] += g * h
            if model.nce:
                bias[target] += g
        return grad

    for i, centre in enumerate(tokens):
        drawn = noise[i // model.noise_block].tolist()
        near = [
            j
            for j in range(i - reach[i], i + reach[i] + 1)
            if 0 <= j < len(tokens) and j != i and sentence[j] == sentence[i]
        ]
        if model.cbow and near:
            grad = score(w_in[[tokens[j] for j in near]].mean(0), centre, drawn)
            for j in near:
                w_in[tokens[j]] += grad / len(near)
            terms += 1
        for j in near if not model.cbow else []:
            w_in[tokens[j]] += score(w_in[tokens[j]].clone(), centre, drawn)
            terms += 1
    return loss, terms, {"input.weight": w_in, "output.weight": w_out, "bias.weight": bias[:, None]}


@pytest.mark.parametrize(
    "loss,cbow,block",
    [("nce", False, 1), ("nce", False, 3), ("negative", False, 1), ("nce", True, 2), ("negative", True, 1)],
)
def test_loop_matches_the_per_pair_reference(loss, cbow, block):
    model, stream = _model(loss, cbow, block), _stream()
    noise = model.draw_noise(stream, torch.Generator().manual_seed(1))
    expected_loss, expected_terms, expected = _reference(model, stream, noise, lr=0.05)
    got_loss, got_terms = model.train_step(stream, noise, lr=0.05, native=True)
    assert got_terms == expected_terms > 0
    assert got_loss == pytest.approx(expected_loss, rel=1e-5)
    for name, table in expected.items():
        assert torch.allclose(model.state_dict()[name].double(), table, atol=1e-5), name
    assert model.input.weight[:6].eq(_model(loss, cbow, block).input.weight[:6]).all()  # never in a window


@pytest.mark.parametrize(
    "loss,block,negatives,dim", [("nce", 1, 3, 12), ("negative", 1, 5, 13), ("nce", 2, 1, 7), ("negative", 3, 8, 16)]
)
def test_window_updates_match_the_tensor_step_centre_by_centre(loss, block, negatives, dim):
    """update=window takes each centre's window as the tensor step takes a batch of that one centre:
    the same summed gradient, from the tables as the previous centre left them."""
    model = _model(loss, False, block, dim=dim, update="window", negatives=negatives)
    reference = _model(loss, False, block, dim=dim, negatives=negatives).double()
    stream = _stream(seed=7, lengths=(7, 1, 9, 4, 12))
    noise = model.draw_noise(stream, torch.Generator().manual_seed(1))
    windows, expected_loss = stream.windows(), 0.0
    for i in range(len(windows)):
        one = Windows(windows.centres[i : i + 1], windows.contexts[i : i + 1], windows.mask[i : i + 1])
        expected_loss += reference.sgd_step(one, noise[i // block : i // block + 1], lr=0.05)
    got_loss, got_terms = model.train_step(stream, noise, lr=0.05, native=True)
    assert got_terms == windows.pairs > 0
    assert got_loss == pytest.approx(expected_loss, rel=1e-5)
    for name, table in reference.state_dict().items():
        assert torch.allclose(model.state_dict()[name].double(), table, atol=1e-5), name


def test_window_updates_differ_from_pair_updates():
    """The window form is not the pair loop under another name: same stream, other tables."""
    tables = []
    for update in ("pair", "window"):
        model, stream = _model("nce", False, 1, update=update), _stream()
        model.train_step(stream, model.draw_noise(stream, torch.Generator().manual_seed(1)), lr=0.5, native=True)
        tables.append(model.input.weight.detach().clone())
    assert not torch.allclose(*tables, atol=1e-4)


@pytest.mark.parametrize("cbow", [False, True])
def test_loop_counts_the_same_terms_as_the_tensor_step(cbow):
    model, stream = _model("nce", cbow, 1), _stream(seed=5)
    noise = model.draw_noise(stream, torch.Generator().manual_seed(2))
    _, tensor_terms = _model("nce", cbow, 1).train_step(stream, noise, lr=0.0)
    loss, native_terms = model.train_step(stream, noise, lr=0.0, native=True)
    assert native_terms == tensor_terms
    with torch.no_grad():  # with lr 0 every term sees the initial tables, as the tensor step does
        expected = model(stream.windows(), noise).item() * tensor_terms
    assert loss == pytest.approx(expected, rel=1e-5)


def test_threads_split_the_stream_and_all_train():
    model, stream = _model("nce", False, 1), _stream(lengths=(50,) * 40, window=5)
    noise = model.draw_noise(stream, torch.Generator().manual_seed(3))
    before = model.input.weight.detach().clone()
    _, one = _model("nce", False, 1).train_step(stream, noise, lr=0.05, native=True)
    loss, four = model.train_step(stream, noise, lr=0.05, native=True, threads=4)
    assert four == one and math.isfinite(loss)
    assert not model.input.weight.detach().equal(before)


def test_bad_tables_and_noise_are_refused():
    model, stream = _model("nce", False, 2), _stream()
    with pytest.raises(ValueError, match="noise rows"):
        model.train_step(stream, torch.zeros((1, 3), dtype=torch.long), lr=0.1, native=True)
    with pytest.raises(ValueError, match="float32"):
        model.double().train_step(stream, model.draw_noise(stream), lr=0.1, native=True)


def test_missing_compiler_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", "no-such-cc")
    monkeypatch.setenv("RNNMT_CACHE", str(tmp_path))
    with pytest.raises(word2vec_native.NativeUnavailable, match="no C compiler 'no-such-cc'.*train.loop=tensor"):
        word2vec_native._build()


def test_a_cached_loop_is_loaded_only_as_it_was_built(monkeypatch, tmp_path):
    """A cached library changed after its build is built anew; one in a cache other users can write
    to is not loaded at all (it was loaded unchecked)."""
    import hashlib
    import os

    cache = tmp_path / "cache"
    monkeypatch.setenv("RNNMT_CACHE", str(cache))
    built = word2vec_native._build()
    digest = built.with_suffix(".sha256")
    assert digest.read_text(encoding="utf-8").strip() == hashlib.sha256(built.read_bytes()).hexdigest()
    built.write_bytes(built.read_bytes() + b"changed")  # replaced or damaged after the build
    assert word2vec_native._build() == built
    assert hashlib.sha256(built.read_bytes()).hexdigest() == digest.read_text(encoding="utf-8").strip()
    os.chmod(built, 0o666)
    with pytest.raises(word2vec_native.NativeUnavailable, match="writable by other users.*RNNMT_CACHE"):
        word2vec_native._build()
    os.chmod(built, 0o644)
    os.chmod(cache, 0o777)
    with pytest.raises(word2vec_native.NativeUnavailable, match="writable by other users"):
        word2vec_native._build()
    os.chmod(cache, 0o755)


@pytest.mark.parametrize("update", ["window", "pair"])
def test_the_loop_learns_planted_co_occurrence(update):
    """Words 6-12 occur only with each other, 13-19 likewise: after training with the C loop, each
    word's vector is closer to its own group's than to the other group's."""
    g = torch.Generator().manual_seed(0)
    model = _model("nce", False, 1, update=update).float()
    torch.nn.init.uniform_(model.input.weight, -0.05, 0.05, generator=g)
    torch.nn.init.zeros_(model.output.weight)
    groups = [torch.arange(6, 13), torch.arange(13, 20)]
    for _ in range(200):
        group = groups[int(torch.randint(2, (1,), generator=g))]
        tokens = group[torch.randint(7, (60,), generator=g)]
        stream = Stream.draw(tokens, sentence_ids(torch.full((10,), 6)), 2, g)
        model.train_step(stream, model.draw_noise(stream, g), lr=0.05, native=True)
    vectors = torch.nn.functional.normalize(model.input.weight[6:].detach(), dim=1)
    similarity = vectors @ vectors.T
    same = (similarity[:7, :7].mean() + similarity[7:, 7:].mean()) / 2
    across = similarity[:7, 7:].mean()
    assert same > across + 0.5, (same, across)
