r"""Seed ensembles: :math:`S` networks of one configuration trained together in one batched pass.

Member :math:`s` is the run :func:`lhlib.engine.train.train` would make with seed ``seeds[s]``: its own
initialisation (the network it was built with) and its own mini-batch order (a
``torch.Generator`` seeded by ``seeds[s]``, one ``randperm`` per epoch). The members' parameters
are stacked along a leading axis (for the :class:`~lhlib.engine.models.MLP`, its weight matrices transposed,
:math:`W^{(p)} \in \mathbb{R}^{S \times n_{p-1} \times n_p}`), and one step evaluates every member on
its own mini-batch :math:`\mathcal{B}_s` at once:

.. math::

    \mathcal{L}(W) = \sum_{s=1}^{S} \frac{1}{B} \sum_{b \in \mathcal{B}_s} \ell\bigl(f(x_b; W_s), y_b\bigr),
    \qquad \frac{\partial \mathcal{L}}{\partial W_s}
    = \nabla_{W_s} \frac{1}{B} \sum_{b \in \mathcal{B}_s} \ell\bigl(f(x_b; W_s), y_b\bigr),

so the gradient of the summed loss with respect to member :math:`s`'s slice is that member's own
gradient, and Adam, being elementwise, updates each slice as it would update the member alone.
The result differs from :math:`S` sequential runs only by float32 rounding (a batched and a single
matrix product may sum in different orders); ``tests/engine/test_ensemble.py`` checks it for every family.

How the members are batched depends on the family. The paper's MLPs are tiny, so a training step
costs per-operation overhead rather than arithmetic: one ``bmm`` per layer keeps :math:`S` members at
about the operation count of one, where ``vmap`` over ``functional_call`` adds its own overhead per
operation (it made a one-member MLP ensemble several times slower than :func:`lhlib.engine.train.train` when
tried). The CNN's and the ViT's steps (:mod:`lhlib.engine.architectures`) are dearer, and for them ``vmap``
of ``functional_call`` over the stacked parameters (``torch.func.stack_module_state``) pays: it turns
the members' convolutions into one grouped convolution and their attention into batched products.
``benchmarks/bench_training.py`` times :math:`S` seeds against :math:`S` sequential runs, per family.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from lhlib.engine.models import MLP
from lhlib.engine.progress import progress_bar
from lhlib.engine.train import TrainingHistory, check_training_data, cpu_threads
from lhlib.engine.validation import check_float, check_int, check_seeds

__all__ = ["ensemble_logits", "ensemble_per_sample_losses", "stacked_weights", "train_ensemble"]


def stacked_weights(models: Sequence[MLP]) -> list[torch.Tensor]:
    """The weight matrices of all members, stacked per layer and transposed for ``x @ W``.

    Args:
        models: The members, :class:`~lhlib.engine.models.MLP` networks of one architecture.

    Returns:
        ``[W^(1), ..., W^(L)]`` as detached contiguous tensors, each ``(S, fan_in, fan_out)``; slice ``s`` of
        the ``p``-th is ``models[s].weights()[p].T``.

    Raises:
        ValueError: when ``models`` is empty, holds something other than an MLP, or mixes architectures.
    """
    if len(models) == 0 or not all(isinstance(m, MLP) for m in models):
        raise ValueError("models must be a non-empty list of lhlib.engine.models.MLP networks")
    shapes = {tuple(tuple(w.shape) for w in m.weights()) for m in models}
    if len(shapes) != 1:
        raise ValueError(f"models must share one architecture, got weight shapes {sorted(shapes)}")
    return [
        torch.stack([m.weights()[p].detach().T for m in models]).contiguous() for p in range(models[0].weight_matrices)
    ]


def ensemble_logits(weights: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    r"""Logits of every member of the ensemble, by one batched product per layer.

    In the paper's orientation (:math:`\mathbf W^{(p)}_s` the ``out x in`` matrix of member :math:`s`,
    :math:`\sigma` the ReLU):

    .. math::

        \mathbf z_s = \mathbf W^{(L)}_s\,\sigma\bigl(\mathbf W^{(L-1)}_s \cdots
        \sigma(\mathbf W^{(1)}_s \mathbf x)\bigr).

    Args:
        weights: :func:`stacked_weights`' ``(S, fan_in, fan_out)`` tensors, at least two.
        x: The inputs, ``(B, n)`` shared by every member or ``(S, B, n)`` one batch per member.

    Returns:
        The ``(S, B, K)`` logits.
    """
    # bmm for per-member batches: matmul would add expand/reshape/view calls per layer, and those
    # per-operation costs are most of a training step here. Shared inputs broadcast through matmul.
    first, *middle, last = weights  # an MLP has at least two weight matrices
    x = (torch.bmm if x.ndim == 3 else torch.matmul)(x, first).relu_()  # in place: one allocation fewer
    for weight in middle:
        x = torch.bmm(x, weight).relu_()
    return torch.bmm(x, last)


@torch.no_grad()
def ensemble_per_sample_losses(
    models: Sequence[MLP], x: torch.Tensor, y: torch.Tensor, batch_size: int = 8192
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-sample cross-entropies and correct-classification flags of every member, without gradients.

    .. math::

        \ell_{si} = -\log \operatorname{softmax}(\mathbf z_{si})_{y_i}, \qquad
        c_{si} = \bigl[\operatorname{arg\,max}_c z_{sic} = y_i\bigr].

    Args:
        models: The members (one architecture).
        x: The ``(N, n)`` inputs, shared by every member.
        y: The ``(N,)`` labels.
        batch_size: Samples per forward pass.

    Returns:
        The pair ``(losses, correct)``, both ``(S, N)``, of float losses and boolean flags.

    Raises:
        ValueError: when ``batch_size < 1`` or ``models`` is not a valid ensemble (:func:`stacked_weights`).
    """
    check_int("batch_size", batch_size, minimum=1)
    weights = stacked_weights(models)
    losses, correct = [], []
    for start in range(0, x.shape[0], batch_size):
        logits = ensemble_logits(weights, x[start : start + batch_size])
        target = y[start : start + batch_size].expand(logits.shape[0], -1)
        losses.append(F.cross_entropy(logits.transpose(1, 2), target, reduction="none"))
        correct.append(logits.argmax(-1) == target)
    return torch.cat(losses, dim=1), torch.cat(correct, dim=1)


def _check_members(models: Sequence[nn.Module], x: torch.Tensor) -> None:
    if isinstance(x, torch.Tensor) and (x.ndim != 2 or not x.is_floating_point()):
        raise ValueError(f"x must be a 2-D floating-point tensor (samples x inputs), got {x.dtype} {tuple(x.shape)}")
    if len(models) == 0 or not all(isinstance(m, nn.Module) for m in models):
        raise ValueError("models must be a non-empty list of networks (torch.nn.Module)")
    if len({id(m) for m in models}) != len(models):
        raise ValueError("models must be distinct objects (one network per seed), got the same network twice")
    # A buffer such as BatchNorm's running statistics would be neither stacked back nor trained.
    if any(True for m in models for _ in m.buffers()):
        raise ValueError(
            "models must have no buffers (e.g. BatchNorm's running statistics); the ensemble cannot train them"
        )


def _mlp_members(models: Sequence[MLP]) -> tuple[list[torch.Tensor], Callable, Callable]:
    """The MLP members' stacked weights, their batched forward pass and the copy back into ``models``."""
    weights = [w.requires_grad_() for w in stacked_weights(models)]

    def write_back() -> None:
        for s, model in enumerate(models):
            for parameter, weight in zip(model.weights(), weights):
                parameter.copy_(weight[s].T)

    return weights, functools.partial(ensemble_logits, weights), write_back


def _module_members(models: Sequence[nn.Module]) -> tuple[list[torch.Tensor], Callable, Callable]:
    """Any family's stacked parameters, ``vmap`` of ``functional_call`` over them, and the copy back."""
    shapes = {tuple((name, tuple(p.shape)) for name, p in m.named_parameters()) for m in models}
    if len(shapes) != 1 or len({type(m) for m in models}) != 1:
        raise ValueError("models must share one architecture (one class and one set of parameter shapes)")
    parameters, buffers = stack_module_state(list(models))
    skeleton = copy.deepcopy(models[0]).to("meta")  # holds the structure; the weights come from `parameters`

    def member_logits(member_parameters, member_buffers, batch):
        return functional_call(skeleton, (member_parameters, member_buffers), (batch,))

    def write_back() -> None:
        for s, model in enumerate(models):
            for name, parameter in model.named_parameters():
                parameter.copy_(parameters[name][s])

    return list(parameters.values()), functools.partial(vmap(member_logits), parameters, buffers), write_back


def train_ensemble(
    models: Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    seeds: Sequence[int],
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    threads: int = 2,
    progress: bool = False,
) -> list[TrainingHistory]:
    r"""Train ``models[s]`` in place as :func:`lhlib.engine.train.train` would with ``seed=seeds[s]``, all at once.

    Each Adam step minimises the sum over members of each member's mean loss on its own mini-batch
    :math:`\mathcal{B}_s` (see the module docstring); the recorded epoch loss is the sample-weighted
    mean of those mini-batch losses, each taken before its own step:

    .. math::

        \mathcal{L}(W) = \sum_{s=1}^{S} \frac{1}{|\mathcal{B}_s|} \sum_{b \in \mathcal{B}_s}
        \ell\bigl(f(x_b; W_s), y_b\bigr).

    Afterwards every member holds its trained weights and is in eval mode.

    Args:
        models: The members; they share one architecture and the device of ``x`` and ``y``.
        x: The ``(N, n)`` training inputs.
        y: The ``(N,)`` labels.
        seeds: One seed per member, for its mini-batch order.
        epochs: The number of passes over the data.
        batch_size: Samples per member per mini-batch.
        lr: Adam's learning rate (positive).
        threads: The torch CPU thread count while training (the batched operations are large enough to
            share out).
        progress: Whether to show a progress bar over the epochs.

    Returns:
        One :class:`~lhlib.engine.train.TrainingHistory` per member, with its per-epoch mean mini-batch loss.

    Raises:
        ValueError: when ``models`` is empty, repeats a network or holds one with buffers, ``x`` and ``y``
            fail :func:`lhlib.engine.train.check_training_data`, ``seeds`` does not have one distinct seed per
            model or a setting is out of range.
    """
    _check_members(models, x)
    check_training_data(x, y)
    seeds = check_seeds("seeds", list(seeds), minimum_count=1)
    if len(seeds) != len(models):
        raise ValueError(f"seeds must have one entry per model ({len(models)}), got {len(seeds)}")
    check_int("epochs", epochs, minimum=1)
    check_int("batch_size", batch_size, minimum=1)
    check_float("lr", lr, minimum=0.0, strict_minimum=True)
    check_int("threads", threads, minimum=1)
    # The MLP's batched products beat vmap's per-operation overhead on its tiny matrices; the other
    # families' convolutions and attention are batched by vmap (grouped convolutions, batched bmm).
    for model in models:  # as lhlib.engine.train.train does (and stack_module_state needs one mode for all)
        model.train()
    weights, logits_of, write_back = (_mlp_members if all(type(m) is MLP for m in models) else _module_members)(models)
    n, members = x.shape[0], len(models)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    optimizer = torch.optim.Adam(weights, lr=lr, fused=x.device.type in ("cpu", "cuda"))
    epoch_loss = torch.zeros(epochs, members, dtype=torch.float64)
    # Every step gathers its S mini-batches into this one buffer: a fresh allocation of that size
    # per step costs page faults that took several times longer than the gather itself (CPU). The
    # step's backward pass is over before the next step overwrites it.
    gathered = torch.empty(members * min(batch_size, n), x.shape[1], dtype=x.dtype, device=x.device)
    with cpu_threads(threads, x.device):
        for epoch in progress_bar(range(epochs), desc="epochs", disable=not progress, leave=False):
            orders = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(x.device)
            total = torch.zeros(members, device=x.device)
            for start in range(0, n, batch_size):
                index = orders[:, start : start + batch_size].reshape(-1)
                batch = torch.index_select(x, 0, index, out=gathered[: index.numel()])
                logits = logits_of(batch.view(members, -1, x.shape[1]))
                # Each member's mean over its own batch, as F.cross_entropy(model(batch), labels).
                losses = (
                    F.cross_entropy(logits.flatten(0, 1), y.index_select(0, index), reduction="none")
                    .view(members, -1)
                    .mean(dim=1)
                )
                optimizer.zero_grad(set_to_none=True)
                losses.sum().backward()
                optimizer.step()
                total += losses.detach() * (index.numel() // members)
            epoch_loss[epoch] = total.double().cpu() / n
    with torch.no_grad():
        write_back()
    for model in models:
        model.eval()
    return [TrainingHistory(epoch_loss=epoch_loss[:, s].tolist()) for s in range(members)]
