"""The bias-free fully connected ReLU network of the paper and of its authors' code.

The network maps ``x in R^n`` to logits ``z in R^K``::

    Linear(n, h) -> ReLU -> [Linear(h, h) -> ReLU] * num_layers -> Linear(h, K)

with every ``Linear`` bias-free. ``num_layers`` follows the authors' code and counts the
hidden-to-hidden layers only, so the figure legends' "L = 1, 3, 5, 7, 10" are ``num_layers`` and
the network has ``num_layers + 2`` weight matrices. Theorem 1's ``L`` is the number of weight
matrices, :attr:`MLP.weight_matrices`.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from lhlib.validation import check_int

__all__ = ["MLP", "build_mlp"]


class MLP(nn.Module):
    """Bias-free ReLU MLP with ``num_layers`` hidden-to-hidden layers.

    ``forward(x)`` returns the logits ``z = W^(L) s(W^(L-1) ... s(W^(1) x))`` with ``s`` = ReLU and
    ``L = num_layers + 2``. The weight matrices are ``self.linears[p].weight`` (``W^(p+1)``, shape
    ``out x in``), in the same order as the paper's ``W^(1), ..., W^(L)``.
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
        """Theorem 1's ``L``: the number of weight matrices, ``num_layers + 2``."""
        return len(self.linears)

    def weights(self) -> list[torch.Tensor]:
        """The weight matrices ``[W^(1), ..., W^(L)]``."""
        return [linear.weight for linear in self.linears]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K)`` of inputs ``(N, d)``."""
        *hidden, last = self.linears
        for linear in hidden:
            x = torch.relu(linear(x))
        return last(x)


def build_mlp(input_dim: int, hidden_size: int, num_layers: int, num_classes: int, seed: int) -> MLP:
    """An :class:`MLP` with PyTorch's default ``nn.Linear`` initialisation drawn from ``seed``.

    The global random state is left as it was.
    """
    check_int("seed", seed, minimum=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MLP(input_dim, hidden_size, num_layers, num_classes)
