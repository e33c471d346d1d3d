import pytest
import torch

from lhlib.engine.experiment import trained_network
from lhlib.engine.models import MLP, build_mlp
from lhlib.engine.train import cpu_threads, resolve_device, train


@pytest.mark.parametrize("num_layers", [0, 1, 5])
def test_layer_counts_follow_the_reference_convention(num_layers):
    model = build_mlp(784, 16, num_layers, 10, seed=0)
    assert model.weight_matrices == num_layers + 2
    shapes = [tuple(w.shape) for w in model.weights()]
    assert shapes == [(16, 784)] + [(16, 16)] * num_layers + [(10, 16)]


def test_network_is_bias_free_and_relu_positive_homogeneous():
    model = build_mlp(6, 5, 2, 3, seed=0)
    assert all(name.endswith("weight") for name, _ in model.named_parameters())
    x = torch.randn(4, 6)
    # No biases: f(c x) = c f(x) for c > 0.
    torch.testing.assert_close(model(3.0 * x), 3.0 * model(x))
    torch.testing.assert_close(model(torch.zeros(1, 6)), torch.zeros(1, 3))


def test_initialisation_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_mlp(4, 3, 1, 2, seed=5)
    after = torch.rand(1)
    assert torch.equal(before, after)
    b = build_mlp(4, 3, 1, 2, seed=5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_model_rejects_bad_sizes():
    with pytest.raises(ValueError, match="hidden_size"):
        MLP(4, 0, 1, 2)
    with pytest.raises(ValueError, match="num_layers"):
        MLP(4, 3, -1, 2)


def _toy(n=200):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    return x, y


def test_training_reduces_the_loss_and_is_reproducible():
    x, y = _toy()
    first = build_mlp(8, 16, 1, 4, seed=0)
    history = train(first, x, y, epochs=5, batch_size=32, lr=1e-2, seed=0)
    assert history.epoch_loss[-1] < history.epoch_loss[0]
    second = build_mlp(8, 16, 1, 4, seed=0)
    train(second, x, y, epochs=5, batch_size=32, lr=1e-2, seed=0)
    assert all(torch.equal(p, q) for p, q in zip(first.parameters(), second.parameters()))


def test_training_validates_parameters():
    x, y = _toy(10)
    with pytest.raises(ValueError, match="batch_size"):
        train(build_mlp(8, 4, 0, 4, seed=0), x, y, batch_size=0)
    with pytest.raises(ValueError, match="lr"):
        train(build_mlp(8, 4, 0, 4, seed=0), x, y, lr=-1.0)
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")
    # NaN passes every range comparison, so it is refused by name, as are infinities.
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="lr must be a finite number"):
            train(build_mlp(8, 4, 0, 4, seed=0), x, y, lr=bad)


def test_trained_network_is_cached_and_identical():
    x, y = _toy()
    kwargs = {
        "num_classes": 4,
        "hidden_size": 8,
        "num_layers": 1,
        "epochs": 2,
        "batch_size": 32,
        "lr": 1e-2,
        "seed": 0,
        "device": "cpu",
    }
    fresh = trained_network(x, y, **kwargs)
    again = trained_network(x, y, **kwargs)
    assert not fresh.from_cache and again.from_cache
    assert torch.equal(fresh.losses, again.losses)
    uncached = trained_network(x, y, use_cache=False, **kwargs)
    assert torch.equal(fresh.losses, uncached.losses)  # same seed, same machine: identical losses
    changed = trained_network(x, y, **{**kwargs, "lr": 2e-2})
    assert not changed.from_cache
    assert fresh.train_loss == pytest.approx(float(fresh.losses.double().mean()))
    assert 0.0 <= fresh.train_accuracy <= 1.0


def test_cpu_threads_is_restored():
    before = torch.get_num_threads()
    with cpu_threads(1, torch.device("cpu")):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_train_refuses_a_zero_or_negative_learning_rate():
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    for lr in (0.0, -1e-3):
        with pytest.raises(ValueError, match="^lr must be a number > 0.0"):
            train(build_mlp(4, 3, 0, 2, seed=0), x, y, epochs=1, lr=lr)


def test_the_seed_decides_the_batch_order():
    """Same initial weights, same data: only the order of the batches differs between seeds."""
    x, y = torch.randn(64, 4, generator=torch.Generator().manual_seed(0)), torch.arange(64) % 2
    weights = {}
    for seed in (0, 0, 1):
        model = build_mlp(4, 3, 0, 2, seed=7)
        train(model, x, y, epochs=1, batch_size=8, lr=1e-2, seed=seed)
        weights.setdefault(seed, []).append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0][0], weights[0][1]), "one seed, one order"
    assert not torch.allclose(weights[0][0], weights[1][0]), "another seed must visit the batches in another order"


def test_split_collapsed_keeps_the_networks_that_did_not_collapse_and_names_the_others():
    import dataclasses
    import math

    from lhlib.engine.experiment import split_collapsed

    x, y = torch.randn(40, 6, generator=torch.Generator().manual_seed(0)), torch.arange(40) % 3
    ensemble = [trained_network(x, y, num_classes=3, hidden_size=4, num_layers=0, seed=s, epochs=1, device="cpu",
                                use_cache=False) for s in (0, 1, 2)]  # fmt: skip
    chance = torch.full_like(ensemble[1].losses, math.log(3))
    half = chance.clone()
    half[::2] = 0.1  # exactly half at ln 3: collapsed at the default share of one half
    learned = dataclasses.replace(ensemble[0], train_accuracy=0.9)  # the most frequent class holds 14 of 40
    members = [
        learned,
        dataclasses.replace(ensemble[1], losses=chance),
        dataclasses.replace(ensemble[2], losses=half, train_accuracy=0.9),
    ]
    kept, collapsed = split_collapsed(members, y, 3)
    assert [m.seed for m in kept] == [0] and collapsed == [1, 2]
    # No loss at ln 3, but no better than always predicting the most frequent class: collapsed too.
    at_chance = dataclasses.replace(learned, seed=3, train_accuracy=0.5)  # 14 of 40, plus 3 standard errors: 0.58
    assert split_collapsed([learned, at_chance], y, 3) == ([learned], [3])
    assert [m.seed for m in split_collapsed(members, y, 3, collapse_share=0.6)[0]] == [0, 2]
    with pytest.raises(ValueError, match=r"seeds \[1\] collapsed, leaving 0 of the 1 networks needed"):
        split_collapsed(members[1:2], y, 3)
    assert split_collapsed(members[1:2], y, 3, minimum=0) == ([], [1])
    with pytest.raises(ValueError, match="collapse_share"):
        split_collapsed(members, y, 3, collapse_share=0.0)
