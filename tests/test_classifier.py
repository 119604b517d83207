import pytest
import torch
from torch.nn import functional as F

from pipelines.contract.errors import ConfigError
from pipelines.contract.specials import PAD_ID
from rnn_models.batching import pad
from rnn_models.classifier import POOLINGS, Classifier, ClassifierSettings


def _model(pooling="max", cell="lstm", bidirectional=True, layers=2, seed=0, vocab=20, classes=3, size=8, **kw):
    torch.manual_seed(seed)
    return Classifier(
        ClassifierSettings(
            vocab=vocab,
            classes=classes,
            embedding_size=size,
            hidden_size=size,
            layers=layers,
            cell=cell,
            bidirectional=bidirectional,
            pooling=pooling,
            **kw,
        )
    )


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("cell, bidirectional", [("lstm", True), ("gru", False), ("rnn", True), ("peephole", True)])
def test_padding_never_changes_a_prediction(pooling, cell, bidirectional):
    model = _model(pooling, cell, bidirectional).eval()
    short = torch.tensor([[7, 8, 9]])
    alone = model(short, torch.tensor([3]))
    # the same sequence padded to 9 steps, in a batch with a longer one
    batch, lengths = pad([short[0].numpy(), torch.arange(6, 15).numpy()])
    assert batch[0, 3:].eq(PAD_ID).all()
    together = model(batch, lengths)
    assert torch.allclose(alone[0], together[0], atol=1e-6)
    # what stands in the padded positions does not matter either
    batch[0, 3:] = 11
    assert torch.allclose(model(batch, lengths)[0], together[0], atol=1e-6)


def test_attention_weights_cover_the_real_positions_only():
    model = _model("attention").eval()
    batch, lengths = pad([torch.tensor([5, 6]).numpy(), torch.arange(5, 10).numpy()])
    _, weights = model.pooled(batch, lengths)
    assert weights[0, 2:].eq(0).all() and torch.allclose(weights.sum(1), torch.ones(2))


def test_dropout_acts_in_training_only():
    model = _model(dropout=0.5)
    ids, lengths = torch.tensor([[5, 6, 7, 8]]), torch.tensor([4])
    model.eval()
    assert torch.equal(model(ids, lengths), model(ids, lengths))
    model.train()
    assert not torch.equal(model(ids, lengths), model(ids, lengths))


def test_label_shift_moves_the_scores_outside_training_only():
    shift = [0.5, -1.0, 0.25]
    plain, shifted = _model(dropout=0.0), _model(dropout=0.0, label_shift=shift)  # the same weights (seed)
    ids, lengths = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]]), torch.tensor([4, 2])
    assert torch.equal(plain(ids, lengths), shifted(ids, lengths))  # training: the loss sees the plain scores
    plain.eval(), shifted.eval()
    assert torch.allclose(shifted(ids, lengths) - plain(ids, lengths), torch.tensor([shift, shift]))
    # the shift travels with the settings (a checkpoint's plain dict, lists from JSON)
    assert ClassifierSettings.from_dict(shifted.settings.to_dict()).label_shift == (0.5, -1.0, 0.25)


def _order_task(n, seed):
    """Sequences of tokens 6..13 holding one 14 and one 15: label 1 when 14 comes first. Bags of
    words cannot tell the labels apart; a recurrent reader can."""
    g = torch.Generator().manual_seed(seed)
    seqs, labels = [], []
    for _ in range(n):
        length = int(torch.randint(4, 10, (1,), generator=g))
        seq = torch.randint(6, 14, (length,), generator=g)
        i, j = torch.randperm(length, generator=g)[:2].tolist()
        seq[i], seq[j] = 14, 15
        seqs.append(seq.numpy())
        labels.append(int(i < j))
    ids, lengths = pad(seqs)
    return ids, lengths, torch.tensor(labels)


@pytest.mark.parametrize("pooling", ["last", "attention"])
def test_it_learns_what_depends_on_word_order(pooling):
    model = _model(pooling, layers=1, vocab=16, classes=2, size=16, dropout=0.0)
    ids, lengths, labels = _order_task(600, 0)
    test_ids, test_lengths, test_labels = _order_task(200, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.eval()
    before = (model(test_ids, test_lengths).argmax(1) == test_labels).float().mean()
    model.train()
    for epoch in range(30):
        for start in range(0, 600, 50):
            loss = F.cross_entropy(
                model(ids[start : start + 50], lengths[start : start + 50]), labels[start : start + 50]
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    after = (model(test_ids, test_lengths).argmax(1) == test_labels).float().mean()
    assert before < 0.65 and after > 0.9, (before, after)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"pooling": "sum"}, "model.pooling must be one of"),
        ({"classes": 1}, "at least 2 labels"),
        ({"cell": "tcn"}, "model.cell must be one of"),
        ({"dropout": 1.0}, "model.dropout must be in"),
        ({"label_shift": [0.5]}, "label_shift has 1 values for 2 labels"),
    ],
)
def test_bad_settings_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        ClassifierSettings.from_dict({"vocab": 10, "classes": 2, **change})
