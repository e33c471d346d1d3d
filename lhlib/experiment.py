"""One configuration of the paper's experiment: train the MLP, then per-sample losses at theta-hat.

:func:`trained_network` is what every chapter calls. Its result is cached under a key made of the
data's fingerprint and every training parameter, so re-running a chapter, or another chapter that
needs the same network, reuses it, and a changed parameter never does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lhlib.cache import cached, tensor_fingerprint
from lhlib.landscape import per_sample_losses
from lhlib.models import MLP, build_mlp
from lhlib.train import resolve_device, train
from lhlib.validation import check_float, check_int

__all__ = ["TrainedNetwork", "trained_network"]


@dataclass(frozen=True)
class TrainedNetwork:
    """A trained :class:`~lhlib.models.MLP` (on the CPU, in eval mode) and what was measured at theta-hat.

    ``losses`` are the per-sample cross-entropies on the training data at the trained point
    (float32, CPU); ``train_loss`` is their mean and ``train_accuracy`` the fraction classified
    correctly; ``epoch_loss`` is the mean mini-batch loss of each epoch during training.
    """

    model: MLP
    losses: torch.Tensor
    train_loss: float
    train_accuracy: float
    epoch_loss: list[float]
    from_cache: bool


def trained_network(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int,
    hidden_size: int,
    num_layers: int,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "auto",
    use_cache: bool = True,
) -> TrainedNetwork:
    """Train the paper's MLP on ``(x, y)`` (or load it from the results store) and measure it.

    The network's initialisation and the mini-batch order both derive from ``seed``. The device
    type is part of the cache key, because CPU and GPU arithmetic differ in the last bits.
    """
    check_int("hidden_size", hidden_size, minimum=1)
    check_int("num_layers", num_layers, minimum=0)
    check_int("epochs", epochs, minimum=1)
    check_int("batch_size", batch_size, minimum=1)
    check_float("lr", lr, minimum=0.0, strict_minimum=True)
    check_int("seed", seed, minimum=0)
    resolved = resolve_device(device)
    model = build_mlp(x.shape[1], hidden_size, num_layers, num_classes, seed)
    params = {
        # Fingerprinting the data costs a pass over it: only worth it when the store is used.
        "data": tensor_fingerprint(x, y) if use_cache else None, "num_classes": num_classes, "hidden_size": hidden_size,
        "num_layers": num_layers, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
        "device_type": resolved.type, "torch": torch.__version__.split("+")[0], "cpu_threads": 1,
        "optimizer": "Adam, fused kernel",  # what lhlib.train uses; its arithmetic differs in the last bits
    }
    computed = False

    def compute() -> dict:
        nonlocal computed
        computed = True
        model.to(resolved)
        xd, yd = x.to(resolved), y.to(resolved)
        history = train(model, xd, yd, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
        with torch.no_grad():
            losses = per_sample_losses(model, xd, yd)
            correct = torch.cat([model(xd[s : s + 8192]).argmax(1) == yd[s : s + 8192] for s in range(0, len(yd), 8192)])
        model.cpu()
        return {"state": model.state_dict(), "losses": losses.float().cpu(),
                "accuracy": float(correct.float().mean()), "epoch_loss": history.epoch_loss}

    result = cached("trained_network", params, compute, enabled=use_cache)
    model.load_state_dict(result["state"])
    model.eval()
    losses = result["losses"]
    return TrainedNetwork(model, losses, float(losses.double().mean()), float(result["accuracy"]),
                          list(result["epoch_loss"]), from_cache=not computed)
