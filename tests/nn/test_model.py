import pytest
import torch

from charnn.config import ModelConfig
from charnn.errors import ConfigError
from charnn.nn.model import CharRNN, count_parameters, parameter_shapes


def test_default_model_has_the_tutorials_parameter_count():
    assert CharRNN(ModelConfig(vocab_size=65)).num_parameters() == 5_330_241


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_other_cells_match_keras_parameter_counts(cell):
    v, e, h = 65, 256, 1024
    gates, biases = {"gru": (3, 2), "rnn": (1, 1)}[cell]
    keras = v * e + gates * (h * (e + h) + biases * h) + h * v + v
    assert CharRNN(ModelConfig(vocab_size=v, cell=cell)).num_parameters() == keras


def naive_forward(model: CharRNN, x: torch.Tensor) -> torch.Tensor:
    """The textbook cell equations, one step and one layer at a time."""
    cfg, rnn = model.config, model.rnn
    inp = model.embedding(x)
    for k in range(cfg.layers):
        w_ih, w_hh = getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"weight_hh_l{k}")
        if cfg.cell == "gru":
            b_ih, b_hh = getattr(rnn, f"bias_ih_l{k}"), getattr(rnn, f"bias_hh_l{k}")
        else:
            b_ih, b_hh = getattr(rnn, f"bias_l{k}"), 0.0
        h = torch.zeros(x.shape[0], cfg.hidden)
        c = torch.zeros_like(h)
        outs = []
        for t in range(x.shape[1]):
            gi, gh = inp[:, t] @ w_ih.T + b_ih, h @ w_hh.T + b_hh
            if cfg.cell == "lstm":
                i, f, g, o = (gi + gh).chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            elif cfg.cell == "gru":
                ir, iz, in_ = gi.chunk(3, dim=1)
                hr, hz, hn = gh.chunk(3, dim=1)
                r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                n = torch.tanh(in_ + r * hn)
                h = (1 - z) * n + z * h
            else:
                h = torch.tanh(gi + gh)
            outs.append(h)
        inp = torch.stack(outs, dim=1)
    return model.head(inp)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 2])
def test_fused_kernel_matches_the_naive_cell_equations(cell, layers):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=11, cell=cell, embedding=8, hidden=16, layers=layers)).eval()
    with torch.no_grad():
        for p in model.parameters():  # non-zero biases so both bias paths are exercised
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randint(0, 11, (3, 7))
    with torch.no_grad():
        fused, _ = model(x)
        naive = naive_forward(model, x)
    assert (fused - naive).abs().max().item() < 1e-5


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_state_carries_between_calls(cell):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=11, cell=cell, embedding=8, hidden=16, layers=2)).eval()
    x = torch.randint(0, 11, (2, 10))
    with torch.no_grad():
        whole, _ = model(x)
        first, state = model(x[:, :4])
        parts = [first]
        for t in range(4, 10):
            out, state = model(x[:, t : t + 1], state)
            parts.append(out)
    assert torch.allclose(whole, torch.cat(parts, dim=1), atol=1e-6)


def test_lstm_starts_with_the_forget_gate_open_and_keras_init():
    model = CharRNN(ModelConfig(vocab_size=65, hidden=64, embedding=32))
    bias = model.rnn.bias_l0.detach()
    assert torch.all(bias[64:128] == 1) and torch.all(bias[:64] == 0) and torch.all(bias[128:] == 0)
    w_hh = model.rnn.weight_hh_l0.detach()
    assert torch.allclose(w_hh.T @ w_hh, torch.eye(64), atol=1e-5)  # orthogonal columns
    assert model.embedding.weight.abs().max() <= 0.05


@pytest.mark.parametrize(
    "bad",
    [
        {"cell": "transformer"},
        {"hidden": 0},
        {"layers": -1},
        {"dropout": 1.0},
        {"io_dropout": -0.1},
        {"weight_dropout": 1.0},
        {"vocab_size": True},
    ],
)
def test_invalid_model_settings_are_refused(bad):
    with pytest.raises(ConfigError):
        ModelConfig(**bad)


def test_io_dropout_acts_in_training_only():
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=20, cell="gru", embedding=16, hidden=32, io_dropout=0.5))
    x = torch.randint(0, 20, (4, 12))
    model.train()
    first, second = model(x)[0], model(x)[0]
    assert not torch.equal(first, second)  # a fresh mask each call
    model.eval()
    plain = CharRNN(ModelConfig(vocab_size=20, cell="gru", embedding=16, hidden=32), init=False)
    plain.load_state_dict(model.state_dict())
    plain.eval()
    assert torch.equal(model(x)[0], plain(x)[0])  # no dropout at inference, same weights


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_weight_dropout_drops_recurrent_weights_in_training_only(cell):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=20, cell=cell, embedding=16, hidden=32, layers=2, weight_dropout=0.5)
    model = CharRNN(cfg)
    x = torch.randint(0, 20, (4, 12))
    model.train()
    logits = model(x)[0]
    logits.sum().backward()
    for k in range(2):
        # One mask for the whole batch and window: the dropped weights get no gradient at all.
        dropped = (model.rnn.get_parameter(f"weight_hh_l{k}").grad == 0).float().mean().item()
        assert 0.4 < dropped < 0.6, (k, dropped)
        assert (model.rnn.get_parameter(f"weight_ih_l{k}").grad == 0).float().mean().item() < 0.05
    assert not torch.equal(model(x)[0], model(x)[0])  # a fresh mask each step
    model.eval()
    plain = CharRNN(ModelConfig(**{**cfg.to_dict(), "weight_dropout": 0.0}), init=False)
    plain.load_state_dict(model.state_dict())
    plain.eval()
    assert torch.equal(model(x)[0], plain(x)[0])  # every weight at inference


def test_config_round_trips_through_a_dict_and_refuses_unknown_keys():
    cfg = ModelConfig(vocab_size=70, cell="gru", layers=3, dropout=0.2, io_dropout=0.1)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown model settings: attention"):
        ModelConfig.from_dict({**cfg.to_dict(), "attention": 4})


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_shapes_are_known_without_building_the_model(cell):
    cfg = ModelConfig(vocab_size=30, cell=cell, embedding=7, hidden=9, layers=3)
    model = CharRNN(cfg)
    assert parameter_shapes(cfg) == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert count_parameters(cfg) == model.num_parameters()
