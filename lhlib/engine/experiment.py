r"""One configuration of the paper's experiment: train the network, then per-sample losses at :math:`\hat{\theta}`.

:func:`trained_networks` is what every chapter calls: a seed ensemble of one configuration, all
its seeds trained in one batched pass (:func:`lhlib.engine.ensemble.train_ensemble`), whichever family of
:mod:`lhlib.engine.architectures` it is. Each
member is stored in the results store under a key made of the data's fingerprint, every training
parameter and its own seed, so a re-run, another chapter that needs the same networks, or a
longer ``seeds`` list reuses every member already trained and trains only the missing ones.
:func:`trained_network` is the one-seed case.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lhlib.engine.architectures import build_network
from lhlib.engine.ensemble import ensemble_per_sample_losses, train_ensemble
from lhlib.engine.seed_stats import is_collapsed
from lhlib.engine.settings import FAMILIES, SweepSettings
from lhlib.engine.store import load_result, store_result, tensor_fingerprint
from lhlib.engine.train import check_training_data, resolve_device
from lhlib.engine.validation import check_choice, check_float, check_int, check_seeds

__all__ = ["TrainedNetwork", "settings_networks", "split_collapsed", "trained_network", "trained_networks"]


@dataclass(frozen=True)
class TrainedNetwork:
    r"""A trained network (on the CPU, in eval mode) and what was measured at :math:`\hat{\theta}`.

    Attributes:
        seed: The seed that drew its initialisation and its mini-batch order.
        model: The trained network, :math:`f_{\hat{\theta}}`.
        losses: The ``(N,)`` float32 per-sample cross-entropies
            :math:`\ell(f_{\hat{\theta}}(\mathbf{x}_i), \mathbf{y}_i)` on the training data (CPU).
        train_loss: Their mean, :math:`\mathcal{L}_N(\hat{\theta})` (accumulated in float64).
        train_accuracy: The fraction of training samples whose largest logit is the label's.
        epoch_loss: The mean mini-batch loss of each epoch during training, batches weighted by their
            size (each measured before its own step).
        from_cache: Whether the network came from the results store rather than being trained now.
    """

    seed: int
    model: nn.Module
    losses: torch.Tensor
    train_loss: float
    train_accuracy: float
    epoch_loss: list[float]
    from_cache: bool


def _member_params(
    fingerprint, family, image_shape, num_classes, hidden_size, num_layers, epochs, batch_size, lr, seed, device_type
):
    params = {
        "data": fingerprint,
        "num_classes": num_classes,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "device_type": device_type,
        "torch": torch.__version__.split("+")[0],
        # What lhlib.engine.ensemble does; its arithmetic differs from lhlib.engine.train's in the last bits.
        "training": "seed ensemble: batched weights, fused Adam",
    }
    if family != "mlp":  # the MLP's keys stay as they were, so its stored networks stay valid
        params |= {
            "family": family,
            "image_shape": list(image_shape),
            "training": "seed ensemble: vmap of functional_call, fused Adam",
        }
    return params


def _train_members(
    family, image_shape, x, y, num_classes, hidden_size, num_layers, seeds, epochs, batch_size, lr, device
) -> list[dict]:
    models = [
        build_network(family, image_shape, hidden_size, num_layers, num_classes, seed).to(device) for seed in seeds
    ]
    xd, yd = x.to(device), y.to(device)
    # Two threads: the MLP's and the ViT's batched products share out once there are several members,
    # and a convolution step is about 1.5 times faster on two even for one member.
    threads = 2 if family == "cnn" or len(seeds) > 1 else 1
    histories = train_ensemble(
        models, xd, yd, seeds=seeds, epochs=epochs, batch_size=batch_size, lr=lr, threads=threads
    )
    if family == "mlp":
        losses, correct = ensemble_per_sample_losses(models, xd, yd)
    else:
        with torch.no_grad():  # one forward pass gives both the losses and the predictions
            logits = [torch.cat([model(xd[s : s + 8192]) for s in range(0, len(xd), 8192)]) for model in models]
        losses = [F.cross_entropy(z, yd, reduction="none") for z in logits]
        correct = [z.argmax(1) == yd for z in logits]
    return [
        {
            "state": {k: v.cpu() for k, v in model.state_dict().items()},
            "losses": losses[s].float().cpu().clone(),  # its own storage: a row view would save all S x N
            "accuracy": float(correct[s].float().mean()),
            "epoch_loss": histories[s].epoch_loss,
        }
        for s, model in enumerate(models)
    ]


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
    family: str = "mlp",
    image_shape: Sequence[int] | None = None,
) -> list[TrainedNetwork]:
    r"""Train a network once per seed on ``(x, y)`` (or load members from the results store).

    ``family`` is one of :data:`lhlib.engine.settings.FAMILIES`: the paper's MLP by default, for
    which ``hidden_size`` is ``h`` and ``num_layers`` counts the hidden-to-hidden layers. For
    ``"cnn"`` and ``"vit"``, ``hidden_size`` is the width (channels, embedding dimension) and
    ``num_layers`` the number of convolution or attention blocks. Member ``s`` starts from
    ``build_network(..., seed=seeds[s])`` and visits the data in the order drawn from the same seed,
    as :func:`lhlib.engine.train.train` would (Adam, mini-batches of ``batch_size``). The device type is part
    of each key, because CPU and GPU arithmetic differ in the last bits. Each member reports, at its
    trained parameters :math:`\hat{\theta}`, the per-sample cross-entropies and their mean

    .. math::

        \ell_i = \ell(f_{\hat{\theta}}(\mathbf{x}_i), \mathbf{y}_i)
               = -\log \operatorname{softmax}(f_{\hat{\theta}}(\mathbf{x}_i))_{y_i},
        \qquad
        \mathcal{L}_N(\hat{\theta}) = \frac{1}{N} \sum_{i=1}^{N} \ell_i .

    Args:
        x: The ``(N, n)`` flattened inputs.
        y: The ``(N,)`` int64 labels.
        num_classes: The number of classes :math:`K`, the network's outputs.
        hidden_size: The width (``h`` for the MLP).
        num_layers: The depth (hidden-to-hidden layers for the MLP, blocks otherwise).
        seeds: One seed per member, distinct and ``>= 0``.
        epochs: Training epochs.
        batch_size: Mini-batch size.
        lr: Adam's learning rate, ``> 0``.
        device: Where to train (``"auto"``: :func:`lhlib.engine.train.resolve_device` picks); the networks
            come back on the CPU.
        use_cache: Whether to load and store members in the results store (:mod:`lhlib.engine.store`).
        family: ``"mlp"``, ``"cnn"`` or ``"vit"``.
        image_shape: ``(channels, height, width)``, how to fold the rows of ``x`` back into images;
            needed for ``"cnn"`` and ``"vit"``, ``(1, 1, n)`` by default for the MLP.

    Returns:
        One :class:`TrainedNetwork` per seed, in the order of ``seeds``.

    Raises:
        ValueError: when a parameter is out of range, ``x`` and ``y`` fail
            :func:`lhlib.engine.train.check_training_data` (labels in ``[0, num_classes)``), ``family`` is unknown,
            ``device`` is not present, or ``image_shape`` is missing or does not have ``n`` entries.
    """
    check_int("num_classes", num_classes, minimum=2)
    check_training_data(x, y, num_classes)
    image_shape = _checked_image_shape(family, image_shape, x.shape[1])
    check_int("hidden_size", hidden_size, minimum=1)
    check_int("num_layers", num_layers, minimum=0 if family == "mlp" else 1)  # a CNN or ViT needs one block
    seeds = check_seeds("seeds", list(seeds), minimum_count=1)
    check_int("epochs", epochs, minimum=1)
    check_int("batch_size", batch_size, minimum=1)
    check_float("lr", lr, minimum=0.0, strict_minimum=True)
    resolved = resolve_device(device)
    # Fingerprinting the data costs a pass over it: only worth it when the store is used.
    fingerprint = tensor_fingerprint(x, y) if use_cache else None
    settings = (family, image_shape, num_classes, hidden_size, num_layers, epochs, batch_size, lr)
    params = {seed: _member_params(fingerprint, *settings, seed, resolved.type) for seed in seeds}
    stored = {seed: load_result("trained_network", params[seed]) if use_cache else None for seed in seeds}
    missing = [seed for seed in seeds if stored[seed] is None]
    if missing:
        trained = _train_members(
            family, image_shape, x, y, num_classes, hidden_size, num_layers, missing, epochs, batch_size, lr, resolved
        )
        for seed, result in zip(missing, trained):
            if use_cache:
                store_result("trained_network", params[seed], result)
            stored[seed] = result
    return [
        _restored(stored[seed], seed, family, image_shape, hidden_size, num_layers, num_classes, seed not in missing)
        for seed in seeds
    ]


def _checked_image_shape(family: str, image_shape, inputs: int) -> tuple[int, int, int]:
    check_choice("family", family, FAMILIES)
    if image_shape is None:
        if family != "mlp":
            raise ValueError(f"image_shape (channels, height, width) is needed for family = {family!r}")
        image_shape = (1, 1, inputs)
    image_shape = tuple(image_shape)
    if len(image_shape) != 3 or torch.Size(image_shape).numel() != inputs:
        raise ValueError(f"image_shape must be (channels, height, width) with {inputs} entries, got {image_shape!r}")
    return image_shape


def _restored(stored: dict, seed: int, family, image_shape, hidden_size, num_layers, num_classes, from_cache: bool):
    """A :class:`TrainedNetwork` from what :func:`trained_networks` stores for one member."""
    model = build_network(family, image_shape, hidden_size, num_layers, num_classes, seed)
    model.load_state_dict(stored["state"])
    model.eval()
    losses = stored["losses"]
    return TrainedNetwork(
        seed,
        model,
        losses,
        float(losses.double().mean()),
        float(stored["accuracy"]),
        list(stored["epoch_loss"]),
        from_cache=from_cache,
    )


def settings_networks(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    hidden_size: int,
    num_layers: int,
    settings: SweepSettings,
    **family,
) -> list[TrainedNetwork]:
    r""":func:`trained_networks` with the training recipe, seeds and device of ``settings``.

    It measures what :func:`trained_networks` does: at each member's :math:`\hat{\theta}`,

    .. math::

        \ell_i = \ell(f_{\hat{\theta}}(\mathbf{x}_i), \mathbf{y}_i), \qquad
        \mathcal{L}_N(\hat{\theta}) = \frac{1}{N} \sum_{i=1}^{N} \ell_i .

    Args:
        x: The ``(N, n)`` flattened inputs.
        y: The ``(N,)`` int64 labels.
        num_classes: The number of classes :math:`K`.
        hidden_size: The width (``h`` for the MLP).
        num_layers: The depth (hidden-to-hidden layers for the MLP, blocks otherwise).
        settings: Gives ``epochs``, ``batch_size``, ``lr``, ``seeds`` and ``device``.
        **family: ``family`` and ``image_shape`` (and ``use_cache``), passed on, for networks other
            than the paper's MLP.

    Returns:
        One :class:`TrainedNetwork` per seed of ``settings.seeds``, in that order.

    Raises:
        ValueError: as :func:`trained_networks`.
    """
    return trained_networks(
        x,
        y,
        num_classes=num_classes,
        hidden_size=hidden_size,
        num_layers=num_layers,
        seeds=settings.seeds,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        device=settings.device,
        **family,
    )


def trained_network(x: torch.Tensor, y: torch.Tensor, *, seed: int = 0, **settings) -> TrainedNetwork:
    r"""The one-seed case of :func:`trained_networks` (same keyword arguments, ``seed`` for ``seeds``).

    It measures, at the trained parameters :math:`\hat{\theta}`,

    .. math::

        \ell_i = \ell(f_{\hat{\theta}}(\mathbf{x}_i), \mathbf{y}_i), \qquad
        \mathcal{L}_N(\hat{\theta}) = \frac{1}{N} \sum_{i=1}^{N} \ell_i .

    Args:
        x: The ``(N, n)`` flattened inputs.
        y: The ``(N,)`` int64 labels.
        seed: The seed of the initialisation and of the mini-batch order, ``>= 0``.
        **settings: The keyword arguments of :func:`trained_networks` other than ``seeds``
            (``num_classes``, ``hidden_size`` and ``num_layers`` are required).

    Returns:
        The :class:`TrainedNetwork`.

    Raises:
        ValueError: when ``seed`` is not an integer ``>= 0``, or as :func:`trained_networks`.
    """
    check_int("seed", seed, minimum=0)
    return trained_networks(x, y, seeds=[seed], **settings)[0]


def split_collapsed(
    ensemble: Sequence[TrainedNetwork],
    labels: torch.Tensor,
    num_classes: int,
    collapse_share: float = 0.5,
    *,
    minimum: int = 1,
) -> tuple[list[TrainedNetwork], list[int]]:
    r"""The members of a seed ensemble that did not collapse, and the seeds of those that did.

    A network is collapsed (:func:`lhlib.engine.seed_stats.is_collapsed`) when at least ``collapse_share`` of its
    per-sample losses sit at :math:`\ln K`, or its training accuracy is no better than always predicting the most
    frequent class, whose share of the labels is :math:`q` (within three binomial standard errors):

    .. math::

        \frac{1}{N}\,\#\bigl\{i : |\ell_i - \ln K| \le 10^{-4}\bigr\} \ge \text{collapse\_share}
        \quad \text{or} \quad \text{accuracy} \le q + 3\sqrt{q(1-q)/N}.

    Its statistics describe its dead units, not its landscape, so the chapters leave it out of every fit, range,
    mean and interval, and count it.

    Args:
        ensemble: The trained networks, one per seed.
        labels: The ``(N,)`` training labels they were trained on.
        num_classes: The number of classes :math:`K`.
        collapse_share: The share of losses at :math:`\ln K` that makes a network collapsed, in :math:`(0, 1]`.
        minimum: How many members must be left; 0 lets every member collapse (the caller then leaves the
            configuration out).

    Returns:
        The pair ``(kept, collapsed_seeds)`` of the members that did not collapse, in order, and the seeds of those
        that did.

    Raises:
        ValueError: when ``collapse_share`` is outside :math:`(0, 1]`, or fewer than ``minimum`` members are left.
    """
    check_float("collapse_share", collapse_share, minimum=0.0, maximum=1.0, strict_minimum=True)
    check_int("minimum", minimum, minimum=0)
    collapsed = [
        m.seed for m in ensemble if is_collapsed(m.losses, m.train_accuracy, labels, num_classes, collapse_share)
    ]
    kept = [m for m in ensemble if m.seed not in collapsed]
    if len(kept) < minimum:
        raise ValueError(
            f"seeds {collapsed} collapsed, leaving {len(kept)} of the {minimum} networks needed: "
            "train longer, from other seeds or a wider network"
        )
    return kept, collapsed
