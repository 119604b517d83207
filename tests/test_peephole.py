import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnn_models.peephole import PeepholeLSTM
from rnn_models.recurrent import recurrent_layers
from rnn_models.translator import Translator, TranslatorSettings, frame_target, sequence_loss


def _equations(cell, x, h, c):
    """The peephole LSTM's equations written out, one step at a time, for one layer and direction."""
    H = h.size(-1)
    W, U, b, p = cell.weight_ih, cell.weight_hh, cell.bias, cell.peephole
    outputs = []
    for t in range(x.size(1)):
        xt = x[:, t]
        pre = lambda k: xt @ W[k * H : (k + 1) * H].T + h @ U[k * H : (k + 1) * H].T + b[k * H : (k + 1) * H]  # noqa: E731
        i = torch.sigmoid(pre(0) + p[0] * c)
        f = torch.sigmoid(pre(1) + p[1] * c)
        g = torch.tanh(pre(2))
        c = f * c + i * g
        o = torch.sigmoid(pre(3) + p[2] * c)
        h = o * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs, 1), h, c


def test_one_layer_follows_the_peephole_equations():
    torch.manual_seed(0)
    rnn = PeepholeLSTM(3, 4)
    with torch.no_grad():  # peepholes far from zero, so that a missing one shows
        rnn.cells[0].peephole.uniform_(-2, 2)
    x, h0, c0 = torch.randn(2, 5, 3), torch.randn(1, 2, 4), torch.randn(1, 2, 4)
    out, (h, c) = rnn(x, (h0, c0))
    expected, h_ref, c_ref = _equations(rnn.cells[0], x, h0[0], c0[0])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(h[0], h_ref)
    torch.testing.assert_close(c[0], c_ref)
    # the peepholes matter: without them it is another function
    with torch.no_grad():
        rnn.cells[0].peephole.zero_()
    assert not torch.allclose(rnn(x, (h0, c0))[0], out)


def test_with_zero_peepholes_it_is_an_lstm():
    torch.manual_seed(1)
    peephole, lstm = PeepholeLSTM(3, 4, num_layers=2), torch.nn.LSTM(3, 4, num_layers=2, batch_first=True)
    with torch.no_grad():
        for layer in range(2):
            cell = peephole.cells[layer]
            getattr(lstm, f"weight_ih_l{layer}").copy_(cell.weight_ih)
            getattr(lstm, f"weight_hh_l{layer}").copy_(cell.weight_hh)
            getattr(lstm, f"bias_ih_l{layer}").copy_(cell.bias)
            getattr(lstm, f"bias_hh_l{layer}").zero_()
            cell.peephole.zero_()
    x = torch.randn(3, 6, 3)
    ours, (h, c) = peephole(x)
    theirs, (h_ref, c_ref) = lstm(x)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(c, c_ref)


def test_packed_bidirectional_rows_do_not_see_padding():
    torch.manual_seed(2)
    rnn = PeepholeLSTM(3, 4, num_layers=2, bidirectional=True)
    x, lengths = torch.randn(2, 6, 3), torch.tensor([6, 3])
    out, (h, c) = rnn(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    out, _ = pad_packed_sequence(out, batch_first=True)
    alone, (h_alone, c_alone) = rnn(x[1:, :3])  # the short row by itself, unpadded
    torch.testing.assert_close(out[1, :3], alone[0])
    assert out[1, 3:].abs().sum() == 0
    torch.testing.assert_close(h[:, 1], h_alone[:, 0])
    torch.testing.assert_close(c[:, 1], c_alone[:, 0])
    assert out.shape == (2, 6, 8) and h.shape == (4, 2, 4)


def test_dropout_between_layers_in_training_only_and_forget_bias_starts_at_one():
    rnn = recurrent_layers("peephole", 3, 4, layers=2, dropout=0.5)
    assert all(cell.bias[4:8].eq(1).all() and cell.bias[:4].eq(0).all() for cell in rnn.cells)
    x = torch.randn(2, 5, 3)
    rnn.eval()
    torch.testing.assert_close(rnn(x)[0], rnn(x)[0])
    rnn.train()
    assert not torch.allclose(rnn(x)[0], rnn(x)[0])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_a_translator_with_peephole_cells_trains(bidirectional):
    torch.manual_seed(3)
    model = Translator(
        TranslatorSettings(
            src_vocab=12,
            tgt_vocab=12,
            embedding_size=8,
            hidden_size=8,
            cell="peephole",
            bidirectional=bidirectional,
            dropout=0.0,
        )
    )
    src = torch.randint(6, 12, (4, 5))
    src[1, 4:] = src[2, 3:] = src[3, 2:] = 0  # padding
    lengths = torch.tensor([5, 4, 3, 2])
    tgt_in, tgt_out = frame_target(src)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        loss, tokens = sequence_loss(model(src, lengths, tgt_in)[0], tgt_out)
        optimizer.zero_grad()
        (loss / tokens).backward()
        optimizer.step()
        losses.append(loss.item() / tokens)
    assert losses[-1] < 0.5 * losses[0], losses
