import pytest
import torch

from lhlib.engine.architectures import build_network
from lhlib.engine.ensemble import ensemble_per_sample_losses, train_ensemble
from lhlib.engine.experiment import trained_networks
from lhlib.engine.landscape import per_sample_losses
from lhlib.engine.models import build_mlp
from lhlib.engine.train import train


def _toy(n=200, classes=4):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    return x, y % classes


SEEDS = [0, 3, 11]


@pytest.mark.parametrize("num_layers", [0, 2])
def test_every_member_matches_the_single_run_of_its_seed(num_layers):
    x, y = _toy(200)
    # batch 48 leaves a smaller last batch (200 = 4 * 48 + 8), as a DataLoader would.
    settings = {"epochs": 1, "batch_size": 48, "lr": 1e-2}
    singles = [build_mlp(8, 16, num_layers, 4, seed=s) for s in SEEDS]
    single_losses = [train(m, x, y, seed=s, **settings).epoch_loss for m, s in zip(singles, SEEDS)]
    members = [build_mlp(8, 16, num_layers, 4, seed=s) for s in SEEDS]
    histories = train_ensemble(members, x, y, seeds=SEEDS, **settings)
    for single, member, loss, history in zip(singles, members, single_losses, histories):
        for p, q in zip(single.weights(), member.weights()):
            torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
        assert history.epoch_loss == pytest.approx(loss, rel=1e-5)
    # The members really differ: each had its own initialisation and its own batch order.
    assert not torch.allclose(members[0].weights()[0], members[1].weights()[0])


@pytest.mark.parametrize(("family", "width", "depth"), [("cnn", 3, 2), ("vit", 8, 1)])
def test_every_member_of_another_family_matches_the_single_run_of_its_seed(family, width, depth):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(100, 64, generator=g) * 2 - 1  # 8 x 8 one-channel images, pixels in [-1, 1]
    y = torch.randint(0, 4, (100,), generator=g)
    settings = {"epochs": 2, "batch_size": 32, "lr": 1e-2}

    def members():
        return [build_network(family, (1, 8, 8), width, depth, 4, seed=s) for s in SEEDS]

    singles, ensemble = members(), members()
    single_losses = [train(m, x, y, seed=s, **settings).epoch_loss for m, s in zip(singles, SEEDS)]
    histories = train_ensemble(ensemble, x, y, seeds=SEEDS, **settings)
    for single, member, loss, history in zip(singles, ensemble, single_losses, histories):
        for (name, p), q in zip(single.named_parameters(), member.parameters()):
            if name.endswith("qkv.bias"):
                # Softmax ignores a shift shared by a query's scores, so the key bias has zero gradient
                # in exact arithmetic; Adam scales its rounding noise up to steps of size lr. It has no
                # effect on the logits, compared below.
                p, q = (torch.cat([t[:width], t[2 * width :]]) for t in (p, q))
            torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=name)
        torch.testing.assert_close(member(x), single(x), rtol=1e-4, atol=1e-5)
        assert history.epoch_loss == pytest.approx(loss, rel=1e-5)
        assert not member.training
    assert not torch.allclose(next(ensemble[0].parameters()), next(ensemble[1].parameters()))


def test_member_order_is_its_own_seed_not_its_position():
    x, y = _toy(120)
    forward = [build_mlp(8, 6, 1, 4, seed=s) for s in (1, 2)]
    backward = [build_mlp(8, 6, 1, 4, seed=s) for s in (2, 1)]
    train_ensemble(forward, x, y, seeds=[1, 2], epochs=2, batch_size=32)
    train_ensemble(backward, x, y, seeds=[2, 1], epochs=2, batch_size=32)
    torch.testing.assert_close(forward[0].weights()[0], backward[1].weights()[0], rtol=1e-6, atol=1e-7)


def test_ensemble_losses_match_per_network_losses():
    x, y = _toy(300)
    models = [build_mlp(8, 5, 1, 4, seed=s) for s in SEEDS]
    losses, correct = ensemble_per_sample_losses(models, x, y, batch_size=128)
    for s, model in enumerate(models):
        torch.testing.assert_close(losses[s], per_sample_losses(model, x, y), rtol=1e-5, atol=1e-6)
        assert torch.equal(correct[s], model(x).argmax(1) == y)


def test_ensemble_rejects_mismatched_members():
    x, y = _toy(20)
    with pytest.raises(ValueError, match="one architecture"):
        train_ensemble([build_mlp(8, 4, 1, 4, seed=0), build_mlp(8, 5, 1, 4, seed=1)], x, y, seeds=[0, 1])
    with pytest.raises(ValueError, match="one architecture"):
        train_ensemble(
            [build_network("cnn", (1, 8, 8), 3, 1, 4, 0), build_network("cnn", (1, 8, 8), 4, 1, 4, 1)],
            x,
            y,
            seeds=[0, 1],
        )
    with pytest.raises(ValueError, match="models must be a non-empty list"):
        train_ensemble([], x, y, seeds=[])
    with pytest.raises(ValueError, match="seeds must have one entry per model"):
        train_ensemble([build_mlp(8, 4, 1, 4, seed=0)], x, y, seeds=[0, 1])
    with pytest.raises(ValueError, match="seeds"):
        train_ensemble([build_mlp(8, 4, 1, 4, seed=s) for s in (0, 1)], x, y, seeds=[0, 0])


def test_store_keys_each_member_by_its_seed():
    x, y = _toy(160)
    settings = {
        "num_classes": 4,
        "hidden_size": 6,
        "num_layers": 1,
        "epochs": 2,
        "batch_size": 32,
        "lr": 1e-2,
        "device": "cpu",
    }
    first = trained_networks(x, y, seeds=[0, 1], **settings)
    assert [n.from_cache for n in first] == [False, False]
    grown = trained_networks(x, y, seeds=[1, 0, 5], **settings)
    assert [n.seed for n in grown] == [1, 0, 5]
    assert [n.from_cache for n in grown] == [True, True, False]
    assert torch.equal(grown[1].losses, first[0].losses)
    # The new member equals the network trained on its own, to float32 rounding.
    alone = trained_networks(x, y, seeds=[5], use_cache=False, **settings)[0]
    torch.testing.assert_close(grown[2].losses, alone.losses, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_a_stored_member_holds_only_its_own_numbers(family, monkeypatch):
    """Each seed's entry saves its own losses and weights, not the storage of the whole ensemble."""
    from lhlib.engine import experiment

    stored = []
    monkeypatch.setattr(experiment, "store_result", lambda kind, params, result: stored.append(result))
    x, y = _toy(96)
    trained_networks(
        x, y, family=family, image_shape=(1, 2, 4), num_classes=4, hidden_size=3, num_layers=1,
        seeds=[0, 1, 2], epochs=1, batch_size=32, lr=1e-2, device="cpu",
    )  # fmt: skip
    assert len(stored) == 3
    for result in stored:
        tensors = [result["losses"], *result["state"].values()]
        assert all(t.untyped_storage().nbytes() == t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_every_training_parameter_changes_the_store_key(family):
    """A key that ignored one parameter would hand back a network trained with another value of it."""
    from lhlib.engine.experiment import _member_params
    from lhlib.engine.store import cache_key

    base = {
        "fingerprint": "abc",
        "family": family,
        "image_shape": (1, 8, 8),
        "num_classes": 10,
        "hidden_size": 16,
        "num_layers": 5,
        "epochs": 10,
        "batch_size": 64,
        "lr": 1e-3,
        "seed": 0,
        "device_type": "cpu",
    }
    changed = {
        "fingerprint": "abd",
        "num_classes": 4,
        "hidden_size": 32,
        "num_layers": 3,
        "epochs": 9,
        "batch_size": 32,
        "lr": 2e-3,
        "seed": 1,
        "device_type": "cuda",
    }
    if family != "mlp":
        changed |= {"image_shape": (3, 8, 8), "family": "vit"}
    keys = {cache_key(_member_params(**base))}
    for name, value in changed.items():
        keys.add(cache_key(_member_params(**{**base, name: value})))
    assert len(keys) == 1 + len(changed)


def test_ensemble_refuses_what_it_could_not_train_as_train_would():
    x, y = _toy(20)
    model = build_mlp(8, 4, 1, 4, seed=0)
    with pytest.raises(ValueError, match="distinct objects"):
        train_ensemble([model, model], x, y, seeds=[0, 1])
    with_buffers = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.BatchNorm1d(4))
    with pytest.raises(ValueError, match="no buffers"):
        train_ensemble([with_buffers], x, y, seeds=[0])
    with pytest.raises(ValueError, match="seeds"):
        train_ensemble([model], x, y, seeds=[2**32])  # torch's generator would draw it as seed 0
    bad_data = {
        "y must be a 1-D int64 tensor of 8": (x[:8], y),
        "x must be finite": (x.clone().fill_(float("nan")), y),
        "x must be a non-empty": (x[:0], y[:0]),
        "x must be a 2-D floating-point": (x.double().long(), y),
        "y must be a 1-D int64": (x, y.int()),
    }
    before = [p.clone() for p in model.parameters()]
    for message, (bad_x, bad_y) in bad_data.items():
        with pytest.raises(ValueError, match=message):
            train_ensemble([model], bad_x, bad_y, seeds=[0])
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))


def test_a_subclass_of_the_mlp_trains_through_its_own_forward():
    class Tempered(type(build_mlp(8, 4, 1, 4, seed=0))):
        def forward(self, x):
            return 10 * super().forward(x)

    x, y = _toy(96)

    def tempered(seed):
        model = build_mlp(8, 4, 1, 4, seed=seed)
        model.__class__ = Tempered
        return model

    single, member = tempered(0), tempered(0)
    expected = train(single, x, y, seed=0, epochs=1, batch_size=32).epoch_loss
    assert train_ensemble([member], x, y, seeds=[0], epochs=1, batch_size=32)[0].epoch_loss == pytest.approx(expected)


def test_labels_outside_the_classes_are_refused_before_training():
    x, y = _toy(40)
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 2\]"):
        trained_networks(x, y, num_classes=3, hidden_size=4, num_layers=0, seeds=[0], use_cache=False)
