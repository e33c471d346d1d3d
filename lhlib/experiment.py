"""One configuration of the paper's experiment: train the MLP, then per-sample losses at theta-hat.

:func:`trained_networks` is what every chapter calls: a seed ensemble of one configuration,
trained in one batched pass (:mod:`lhlib.ensemble`). Each member is stored in the results store
under a key made of the data's fingerprint, every training parameter and its own seed, so a
re-run, another chapter that needs the same networks, or a longer ``seeds`` list reuses every
member already trained and trains only the missing ones. :func:`trained_network` is the one-seed
case.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lhlib.cache import load_result, store_result, tensor_fingerprint
from lhlib.ensemble import ensemble_per_sample_losses, train_ensemble
from lhlib.models import MLP, build_mlp
from lhlib.train import resolve_device
from lhlib.validation import check_float, check_int, check_int_list

__all__ = ["TrainedNetwork", "trained_network", "trained_networks"]


@dataclass(frozen=True)
class TrainedNetwork:
    """A trained :class:`~lhlib.models.MLP` (on the CPU, in eval mode) and what was measured at theta-hat.

    ``seed`` drew its initialisation and its mini-batch order. ``losses`` are the per-sample
    cross-entropies on the training data at the trained point (float32, CPU); ``train_loss`` is
    their mean and ``train_accuracy`` the fraction classified correctly; ``epoch_loss`` is the mean
    mini-batch loss of each epoch during training.
    """

    seed: int
    model: MLP
    losses: torch.Tensor
    train_loss: float
    train_accuracy: float
    epoch_loss: list[float]
    from_cache: bool


def _member_params(fingerprint, num_classes, hidden_size, num_layers, epochs, batch_size, lr, seed, device_type):
    return {
        "data": fingerprint, "num_classes": num_classes, "hidden_size": hidden_size, "num_layers": num_layers,
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "device_type": device_type,
        "torch": torch.__version__.split("+")[0],
        # What lhlib.ensemble does; its arithmetic differs from lhlib.train's in the last bits.
        "training": "seed ensemble: batched weights, fused Adam",
    }


def trained_networks(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int,
    hidden_size: int,
    num_layers: int,
    seeds: Sequence[int],
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    device: str = "auto",
    use_cache: bool = True,
) -> list[TrainedNetwork]:
    """Train the paper's MLP once per seed on ``(x, y)`` (or load members from the results store).

    Member ``s`` starts from ``build_mlp(..., seed=seeds[s])`` and visits the data in the order
    drawn from the same seed, as :func:`lhlib.train.train` would. The device type is part of each
    key, because CPU and GPU arithmetic differ in the last bits.
    """
    check_int("hidden_size", hidden_size, minimum=1)
    check_int("num_layers", num_layers, minimum=0)
    seeds = check_int_list("seeds", list(seeds), minimum=0)
    check_int("epochs", epochs, minimum=1)
    check_int("batch_size", batch_size, minimum=1)
    check_float("lr", lr, minimum=0.0, strict_minimum=True)
    resolved = resolve_device(device)
    # Fingerprinting the data costs a pass over it: only worth it when the store is used.
    fingerprint = tensor_fingerprint(x, y) if use_cache else None
    params = {seed: _member_params(fingerprint, num_classes, hidden_size, num_layers, epochs, batch_size, lr, seed,
                                   resolved.type) for seed in seeds}
    stored = {seed: load_result("trained_network", params[seed]) if use_cache else None for seed in seeds}
    missing = [seed for seed in seeds if stored[seed] is None]
    if missing:
        models = [build_mlp(x.shape[1], hidden_size, num_layers, num_classes, seed).to(resolved) for seed in missing]
        xd, yd = x.to(resolved), y.to(resolved)
        histories = train_ensemble(models, xd, yd, seeds=missing, epochs=epochs, batch_size=batch_size, lr=lr,
                                   threads=1 if len(missing) == 1 else 2)
        losses, correct = ensemble_per_sample_losses(models, xd, yd)
        for s, seed in enumerate(missing):
            result = {"state": {k: v.cpu() for k, v in models[s].state_dict().items()},
                      "losses": losses[s].float().cpu(), "accuracy": float(correct[s].float().mean()),
                      "epoch_loss": histories[s].epoch_loss}
            if use_cache:
                store_result("trained_network", params[seed], result)
            stored[seed] = result
    networks = []
    for seed in seeds:
        model = MLP(x.shape[1], hidden_size, num_layers, num_classes)
        model.load_state_dict(stored[seed]["state"])
        model.eval()
        losses = stored[seed]["losses"]
        networks.append(TrainedNetwork(seed, model, losses, float(losses.double().mean()),
                                       float(stored[seed]["accuracy"]), list(stored[seed]["epoch_loss"]),
                                       from_cache=seed not in missing))
    return networks


def trained_network(x: torch.Tensor, y: torch.Tensor, *, seed: int = 0, **settings) -> TrainedNetwork:
    """The one-seed case of :func:`trained_networks` (same keyword arguments, ``seed`` for ``seeds``)."""
    check_int("seed", seed, minimum=0)
    return trained_networks(x, y, seeds=[seed], **settings)[0]
