r"""The bias-free fully connected ReLU network of the paper and of its authors' code.

The network maps :math:`x \in \mathbb{R}^n` to logits :math:`z \in \mathbb{R}^K`::

    Linear(n, h) -> ReLU -> [Linear(h, h) -> ReLU] * num_layers -> Linear(h, K)

with every ``Linear`` bias-free. ``num_layers`` follows the authors' code and counts the
hidden-to-hidden layers only, so the figure legends' "L = 1, 3, 5, 7, 10" are ``num_layers`` and
the network has ``num_layers + 2`` weight matrices. Theorem 1's :math:`L` is the number of weight
matrices, :attr:`MLP.weight_matrices`.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from lhlib.engine.validation import check_int

__all__ = ["MLP", "build_mlp"]


class MLP(nn.Module):
    r"""Bias-free ReLU MLP with ``num_layers`` hidden-to-hidden layers.

    ``forward(x)`` returns the logits

    .. math::

        z = W^{(L)} \sigma\bigl(W^{(L-1)} \cdots \sigma(W^{(1)} x)\bigr), \qquad \sigma = \operatorname{ReLU},
        \quad L = \mathtt{num\_layers} + 2.

    The weight matrices are ``self.linears[p].weight`` (:math:`W^{(p+1)}`, shape ``(out, in)``), in
    the same order as the paper's :math:`W^{(1)}, \dots, W^{(L)}`.

    Args:
        input_dim: The input dimension :math:`n`.
        hidden_size: The width :math:`h` of every hidden layer.
        num_layers: The number of hidden-to-hidden layers (0 or more).
        num_classes: The number of logits :math:`K` (at least 2).

    Raises:
        ValueError: when a size is not an integer in its range.
    """

    def __init__(self, input_dim: int, hidden_size: int, num_layers: int, num_classes: int):
        super().__init__()
        check_int("input_dim", input_dim, minimum=1)
        check_int("hidden_size", hidden_size, minimum=1)
        check_int("num_layers", num_layers, minimum=0)
        check_int("num_classes", num_classes, minimum=2)
        self.input_dim = input_dim
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_classes = num_classes
        widths = [input_dim] + [hidden_size] * (num_layers + 1) + [num_classes]
        self.linears = nn.ModuleList(
            nn.Linear(fan_in, fan_out, bias=False) for fan_in, fan_out in itertools.pairwise(widths)
        )

    @property
    def weight_matrices(self) -> int:
        """The number of weight matrices, ``num_layers + 2`` (Theorem 1's :math:`L`)."""
        return len(self.linears)

    def weights(self) -> list[torch.Tensor]:
        r"""The weight matrices :math:`[W^{(1)}, \dots, W^{(L)}]`, the parameters themselves (not copies).

        Returns:
            The list of the ``L`` weight tensors, :math:`W^{(p)}` of shape ``(out, in)``.
        """
        return [linear.weight for linear in self.linears]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r"""The logits of a batch of inputs.

        .. math::

            z_i = W^{(L)} \sigma\bigl(W^{(L-1)} \cdots \sigma(W^{(1)} x_i)\bigr).

        Args:
            x: The ``(N, n)`` inputs.

        Returns:
            The ``(N, K)`` logits.
        """
        *hidden, last = self.linears
        for linear in hidden:
            x = torch.relu(linear(x))
        return last(x)


def build_mlp(input_dim: int, hidden_size: int, num_layers: int, num_classes: int, seed: int) -> MLP:
    """An :class:`MLP` with PyTorch's default ``nn.Linear`` initialisation drawn from ``seed``.

    The global random state is left as it was.

    Args:
        input_dim: The input dimension :math:`n`.
        hidden_size: The width :math:`h` of every hidden layer.
        num_layers: The number of hidden-to-hidden layers.
        num_classes: The number of logits :math:`K`.
        seed: The seed of the initialisation (an integer >= 0).

    Returns:
        The initialised network.

    Raises:
        ValueError: when a size or ``seed`` is not an integer in its range.
    """
    check_int("seed", seed, minimum=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MLP(input_dim, hidden_size, num_layers, num_classes)
