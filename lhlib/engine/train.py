"""Training as in the authors' experiments: Adam, constant learning rate, shuffled mini-batches.

The data live as tensors on the device and each mini-batch is one indexing operation, so there is
no DataLoader and no per-sample Python work. Randomness (initialisation aside) comes from one
``torch.Generator`` seeded by ``seed``: the same seed on the same machine gives the same network.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lhlib.engine.progress import progress_bar
from lhlib.engine.validation import MAX_SEED, check_device, check_float, check_int

__all__ = ["TrainingHistory", "check_training_data", "cpu_threads", "resolve_device", "train"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The device ``device`` names (see :func:`lhlib.engine.validation.check_device`), if it is present.

    ``"auto"`` is CUDA when available, else CPU.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a ``torch.device``.

    Returns:
        The ``torch.device``.

    Raises:
        ValueError: when ``device`` is not one of these names, or names CUDA or MPS on a machine
            without it.
    """
    if isinstance(device, torch.device):
        device = str(device)
    check_device("device", device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available; use 'auto' or 'cpu'")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} was asked for but MPS is not available; use 'auto' or 'cpu'")
    return resolved


@contextlib.contextmanager
def cpu_threads(count: int, device: torch.device) -> Iterator[None]:
    """Run torch's CPU kernels on ``count`` threads inside the block (no effect on CUDA work).

    The paper's networks are tiny (at most 784 x 64 weights, batch 64): on the CPU, splitting such
    products across threads costs more in synchronisation than it gains, and on a machine that is
    busy with other processes it can be several times slower than one thread. The previous thread
    count is restored on leaving the block.

    Args:
        count: The number of threads inside the block.
        device: The device of the work; for any but the CPU nothing is changed.

    Yields:
        ``None``, once, with the thread count set for the block.
    """
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def check_training_data(x: torch.Tensor, y: torch.Tensor, num_classes: int | None = None) -> None:
    """Refuse training data that would fail mid-run or train a meaningless network, before any work.

    Args:
        x: The inputs, a non-empty tensor with one row per sample (``(N, n)`` flattened images, or
            ``(N, C, H, W)``); finite if floating-point.
        y: The labels, which must be an ``(N,)`` int64 tensor on the device of ``x``.
        num_classes: When given, the labels must lie in ``[0, num_classes)``.

    Raises:
        ValueError: naming ``x``, ``y`` or ``num_classes`` and what each must be.
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[0] == 0:
        got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a non-empty tensor with one row per sample (at least 2-D), got {got}")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.shape != (x.shape[0],) or y.device != x.device:
        got = f"{y.dtype} of shape {tuple(y.shape)} on {y.device}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(
            f"y must be a 1-D int64 tensor of {x.shape[0]} labels on {x.device} (one per row of x), got {got}"
        )
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError("x must be finite, got NaN or infinite entries")
    if num_classes is not None and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"y must hold labels in [0, {num_classes - 1}] for num_classes = {num_classes}, "
            f"got labels from {int(y.min())} to {int(y.max())}"
        )


@dataclass(frozen=True)
class TrainingHistory:
    """Mean mini-batch loss of every epoch.

    Attributes:
        epoch_loss: Per epoch, the sample-weighted mean of the mini-batch cross-entropies (each taken
            before its own Adam step), in nats.
    """

    epoch_loss: list[float]


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
    threads: int = 1,
) -> TrainingHistory:
    r"""Train ``model`` in place with Adam on the cross-entropy of ``(x, y)``.

    Each epoch visits a fresh random permutation in batches :math:`B` of ``batch_size`` (the last
    batch may be smaller, as with a DataLoader) and takes one Adam step (constant learning rate
    ``lr``) on each batch's mean cross-entropy; the epoch's recorded loss weights every batch by its
    size, with :math:`\theta_B` the parameters before the step on :math:`B`:

    .. math::

        \ell_B(\theta) = -\frac{1}{|B|} \sum_{i \in B} \log \operatorname{softmax}(f_\theta(x_i))_{y_i},
        \qquad
        \bar\ell_{\mathrm{epoch}} = \frac{1}{N} \sum_{B} |B| \, \ell_B(\theta_B).

    On the CPU torch runs on ``threads`` threads (see :func:`cpu_threads`; one suits the paper's MLP,
    two a convolutional network). The model is left in ``eval`` mode.

    Args:
        model: The network; its parameters are updated in place.
        x: The ``(N, ...)`` inputs, already on the model's device.
        y: The ``(N,)`` integer labels, on the same device.
        epochs: The number of passes over the data.
        batch_size: Samples per mini-batch.
        lr: Adam's learning rate (positive).
        seed: Seeds the ``torch.Generator`` of the permutations.
        progress: Whether to show a progress bar over the epochs.
        threads: CPU threads for torch during training.

    Returns:
        The :class:`TrainingHistory` of the run.

    Raises:
        ValueError: when ``x`` and ``y`` fail :func:`check_training_data`, ``epochs``, ``batch_size``,
            ``seed`` or ``threads`` is not an integer in its range or ``lr`` is not positive.
    """
    check_training_data(x, y)
    check_int("epochs", epochs, minimum=1)
    check_int("batch_size", batch_size, minimum=1)
    check_float("lr", lr, minimum=0.0, strict_minimum=True)
    check_int("seed", seed, minimum=0, maximum=MAX_SEED)
    check_int("threads", threads, minimum=1)
    n = x.shape[0]
    generator = torch.Generator().manual_seed(seed)
    # The fused kernel updates all parameters in one call: about a fifth less time per step here.
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=x.device.type in ("cpu", "cuda"))
    model.train()
    epoch_loss = []
    with cpu_threads(threads, x.device):
        for _ in progress_bar(range(epochs), desc="epochs", disable=not progress, leave=False):
            epoch_loss.append(
                _epoch(model, optimizer, x, y, torch.randperm(n, generator=generator).to(x.device), batch_size)
            )
    model.eval()
    return TrainingHistory(epoch_loss=epoch_loss)


def _epoch(model, optimizer, x, y, order, batch_size) -> float:
    """One pass over ``order`` in mini-batches; returns the sample-weighted mean batch loss."""
    # One gather per epoch; the mini-batches are then contiguous views of the shuffled copy.
    shuffled_x, shuffled_y = x[order], y[order]
    total = torch.zeros((), device=x.device)
    for start in range(0, order.numel(), batch_size):
        batch_x, batch_y = shuffled_x[start : start + batch_size], shuffled_y[start : start + batch_size]
        loss = F.cross_entropy(model(batch_x), batch_y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * batch_y.numel()
    return float(total) / order.numel()
