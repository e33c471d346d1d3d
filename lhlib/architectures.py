"""Three network families for the paper's future work: its MLP, a small CNN and a small ViT.

Every model takes the flattened images that :mod:`lhlib.data` loads (``N x C H W``, pixels in
``[-1, 1]``) and returns ``K`` logits, so the same training, per-sample losses and curvature code
serve all three. Each family has a *width* and a *depth*:

* ``"mlp"``: the paper's bias-free ReLU MLP (:class:`lhlib.models.MLP`); width is the hidden size
  ``h``, depth the number of hidden-to-hidden layers ``num_layers``.
* ``"cnn"``: :class:`ConvNet`, ``depth`` bias-free ``3 x 3`` convolutions of stride 2 with ``width``
  channels, each followed by ReLU, then one bias-free linear layer to the logits. Like the MLP it
  is a bias-free ReLU network (piecewise linear and positively homogeneous in its weights), only
  its linear maps are convolutions.
* ``"vit"``: :class:`VisionTransformer`, a pre-LayerNorm vision transformer trained from scratch:
  non-overlapping patches embedded in ``width`` dimensions, learned
  position embeddings, ``depth`` blocks of multi-head self-attention and a GELU MLP, each with a
  residual connection, then LayerNorm, mean over tokens and a linear head. Attention, LayerNorm and
  GELU break both piecewise linearity and homogeneity. The image is cut into a ``grid x grid``
  array of patches (4 x 4 by default: 16 tokens for MNIST's 28 x 28 and CIFAR's 32 x 32 alike).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lhlib.models import MLP
from lhlib.settings import FAMILIES
from lhlib.validation import check_choice, check_int

__all__ = ["ConvNet", "VisionTransformer", "build_network", "weight_layers"]

"""The network families: the paper's MLP, a small CNN, a small vision transformer."""


def _check_image_shape(image_shape) -> tuple[int, int, int]:
    if (
        not isinstance(image_shape, (tuple, list))
        or len(image_shape) != 3
        or not all(isinstance(s, int) and s >= 1 for s in image_shape)
    ):
        raise ValueError(f"image_shape must be (channels, height, width) of positive ints, got {image_shape!r}")
    return tuple(image_shape)


class ConvNet(nn.Module):
    """Bias-free ReLU CNN: ``depth`` stride-2 ``3 x 3`` convolutions with ``width`` channels, then a
    bias-free linear layer.

    ``z = W^(L) vec(s(C^(L-1) ... s(C^(1) x)))`` with ``s`` = ReLU, ``C^(p)`` the convolutions
    (padding 1, so each halves the side, rounding up) and ``L = depth + 1`` linear maps in all.
    """

    def __init__(self, image_shape: tuple[int, int, int], width: int, depth: int, num_classes: int):
        super().__init__()
        self.image_shape = _check_image_shape(image_shape)
        check_int("width", width, minimum=1)
        check_int("depth", depth, minimum=1)
        check_int("num_classes", num_classes, minimum=2)
        channels, height, side = self.image_shape
        self.convs = nn.ModuleList()
        for _ in range(depth):
            self.convs.append(nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False))
            channels, height, side = width, (height + 1) // 2, (side + 1) // 2
        self.feature_shape = (channels, height, side)
        self.head = nn.Linear(channels * height * side, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K)`` of flattened images ``(N, C*H*W)``."""
        x = x.reshape(x.shape[0], *self.image_shape)
        for conv in self.convs:
            x = torch.relu(conv(x))
        return self.head(x.flatten(1))


class _Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))``."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, tokens, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(n, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        # Written out rather than scaled_dot_product_attention: twice differentiable under vmap.
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width // self.heads), dim=-1)
        x = x + self.proj((weights @ v).transpose(1, 2).reshape(n, tokens, width))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """A small ViT: patch embedding, position embedding, ``depth`` pre-LN blocks, mean pooling, linear head."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        width: int,
        depth: int,
        num_classes: int,
        *,
        grid: int = 4,
        heads: int = 2,
    ):
        super().__init__()
        self.image_shape = _check_image_shape(image_shape)
        check_int("width", width, minimum=1)
        check_int("depth", depth, minimum=1)
        check_int("num_classes", num_classes, minimum=2)
        check_int("grid", grid, minimum=1)
        check_int("heads", heads, minimum=1)
        channels, height, side = self.image_shape
        if height != side or side % grid:
            raise ValueError(f"grid must divide the side of a square image, got grid = {grid} for {height} x {side}")
        if width % heads:
            raise ValueError(f"width must be a multiple of heads = {heads}, got {width}")
        self.patch_size = side // grid
        self.embed = nn.Linear(channels * self.patch_size**2, width)
        self.position = nn.Parameter(0.02 * torch.randn(grid * grid, width))
        self.blocks = nn.ModuleList(_Block(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K)`` of flattened images ``(N, C*H*W)``."""
        images = x.reshape(x.shape[0], *self.image_shape)
        patches = F.unfold(images, self.patch_size, stride=self.patch_size).transpose(1, 2)
        tokens = self.embed(patches) + self.position
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(self.norm(tokens).mean(1))


def build_network(
    family: str, image_shape: tuple[int, int, int], width: int, depth: int, num_classes: int, seed: int
) -> nn.Module:
    """A network of ``family`` with PyTorch's default initialisation drawn from ``seed``.

    For ``"mlp"`` it is :func:`lhlib.models.build_mlp`'s network (``width`` = ``hidden_size``,
    ``depth`` = ``num_layers``). The global random state is left as it was.
    """
    check_choice("family", family, FAMILIES)
    check_int("seed", seed, minimum=0)
    image_shape = _check_image_shape(image_shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if family == "mlp":
            return MLP(math.prod(image_shape), width, depth, num_classes)
        if family == "cnn":
            return ConvNet(image_shape, width, depth, num_classes)
        return VisionTransformer(image_shape, width, depth, num_classes)


def weight_layers(model: nn.Module) -> int:
    """The number of ``nn.Linear`` and ``nn.Conv2d`` modules: Theorem 1's ``L`` for the MLP and the CNN."""
    return sum(isinstance(m, (nn.Linear, nn.Conv2d)) for m in model.modules())
