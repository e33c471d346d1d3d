r"""Three network families for the paper's future work: its MLP, a small CNN and a small ViT.

Every model takes the flattened images that :mod:`lhlib.engine.data` loads (``(N, C*H*W)``, pixels in
:math:`[-1, 1]`) and returns :math:`K` logits, so the same training, per-sample losses and curvature
code serve all three. Each family has a *width* and a *depth*:

* ``"mlp"``: the paper's bias-free ReLU MLP (:class:`lhlib.engine.models.MLP`); width is the hidden size
  :math:`h`, depth the number of hidden-to-hidden layers ``num_layers``.
* ``"cnn"``: :class:`ConvNet`, ``depth`` bias-free :math:`3 \times 3` convolutions of stride 2 with
  ``width`` channels, each followed by ReLU, then one bias-free linear layer to the logits. Like the
  MLP it is a bias-free ReLU network (piecewise linear and positively homogeneous in its weights),
  only its linear maps are convolutions.
* ``"vit"``: :class:`VisionTransformer`, a pre-LayerNorm vision transformer trained from scratch:
  non-overlapping patches embedded in ``width`` dimensions, learned position embeddings, ``depth``
  blocks of multi-head self-attention and a GELU MLP, each with a residual connection, then
  LayerNorm, mean over tokens and a linear head. Attention, LayerNorm and GELU break both piecewise
  linearity and homogeneity. The image is cut into a ``grid x grid`` array of patches (4 x 4 by
  default: 16 tokens for MNIST's 28 x 28 and CIFAR's 32 x 32 alike).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lhlib.engine.models import MLP
from lhlib.engine.settings import FAMILIES
from lhlib.engine.validation import check_choice, check_int

__all__ = ["ConvNet", "FAMILY_NAMES", "VisionTransformer", "build_network", "weight_layers"]


def _check_image_shape(image_shape) -> tuple[int, int, int]:
    if (
        not isinstance(image_shape, (tuple, list))
        or len(image_shape) != 3
        or not all(isinstance(s, int) and s >= 1 for s in image_shape)
    ):
        raise ValueError(f"image_shape must be (channels, height, width) of positive ints, got {image_shape!r}")
    return tuple(image_shape)


class ConvNet(nn.Module):
    r"""Bias-free ReLU CNN: ``depth`` stride-2 :math:`3 \times 3` convolutions with ``width`` channels,
    then a bias-free linear layer.

    .. math::

        z = W^{(L)} \operatorname{vec}\bigl(\sigma(C^{(L-1)} \cdots \sigma(C^{(1)} x))\bigr),
        \qquad L = \mathtt{depth} + 1,

    with :math:`\sigma` = ReLU and :math:`C^{(p)}` the convolutions (padding 1, so each halves the
    side, rounding up): :math:`L` linear maps in all.

    Args:
        image_shape: ``(channels, height, width)`` of the images.
        width: The channels of every convolution.
        depth: The number of convolutions (at least 1).
        num_classes: The number of logits :math:`K` (at least 2).

    Raises:
        ValueError: when ``image_shape`` is not three positive integers or a size is out of range.
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
        r"""The logits of a batch of flattened images.

        .. math::

            z_i = W^{(L)} \operatorname{vec}\bigl(\sigma(C^{(L-1)} \cdots \sigma(C^{(1)} x_i))\bigr),

        with :math:`x_i` reshaped to ``image_shape`` first.

        Args:
            x: The ``(N, C*H*W)`` flattened images.

        Returns:
            The ``(N, K)`` logits.
        """
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
    """A small ViT: patch embedding, position embedding, ``depth`` pre-LN blocks, mean pooling, linear head.

    Every linear map here has a bias. The heads' attention is written out (not
    ``scaled_dot_product_attention``) so that it is twice differentiable under ``vmap``.

    Args:
        image_shape: ``(channels, height, width)`` of square images.
        width: The embedding dimension (a multiple of ``heads``).
        depth: The number of transformer blocks (at least 1).
        num_classes: The number of logits :math:`K` (at least 2).
        grid: Patches per side; it must divide the image's side.
        heads: Attention heads per block.

    Raises:
        ValueError: when the image is not square, ``grid`` does not divide its side, ``width`` is not a
            multiple of ``heads`` or a size is out of range.
    """

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
        r"""The logits of a batch of flattened images.

        With :math:`\pi_j(x)` the :math:`j`-th of the :math:`T = \mathtt{grid}^2` patches, :math:`e_j` its
        learned position embedding and :math:`\operatorname{LN}` LayerNorm: the first tokens, the update of
        the tokens :math:`t` by each block and the logits after the :math:`D` = ``depth`` blocks are

        .. math::

            t^{(0)}_j = E\,\pi_j(x) + b_E + e_j, \qquad
            u = t + \operatorname{Attn}(\operatorname{LN}(t)), \qquad
            t' = u + \operatorname{MLP}(\operatorname{LN}(u)),

            z = W_{\mathrm{h}} \, \frac{1}{T} \sum_{j=1}^{T} \operatorname{LN}\bigl(t^{(D)}\bigr)_j + b_{\mathrm{h}},

        with multi-head attention :math:`\operatorname{softmax}(q k^\top / \sqrt{d_{\mathrm{head}}})\, v` and a
        GELU MLP of hidden width ``2 * width``.

        Args:
            x: The ``(N, C*H*W)`` flattened images.

        Returns:
            The ``(N, K)`` logits.
        """
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

    For ``"mlp"`` it is :func:`lhlib.engine.models.build_mlp`'s network (``width`` = ``hidden_size``,
    ``depth`` = ``num_layers``). The global random state is left as it was.

    Args:
        family: ``"mlp"``, ``"cnn"`` or ``"vit"``.
        image_shape: ``(channels, height, width)`` of the images.
        width: The family's width (hidden size, channels or embedding dimension).
        depth: The family's depth (hidden-to-hidden layers, convolutions or transformer blocks).
        num_classes: The number of logits :math:`K`.
        seed: The seed of the initialisation (an integer >= 0).

    Returns:
        The initialised :class:`lhlib.engine.models.MLP`, :class:`ConvNet` or :class:`VisionTransformer`.

    Raises:
        ValueError: when ``family`` is unknown, ``seed`` is negative or a shape or size is invalid.
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
    """The number of ``nn.Linear`` and ``nn.Conv2d`` modules: Theorem 1's :math:`L` for the MLP and the CNN.

    For the ViT the count includes attention, MLP, embedding and head layers and is no :math:`L` of
    Theorem 1.

    Args:
        model: Any network.

    Returns:
        The count, an ``int``.
    """
    return sum(isinstance(m, (nn.Linear, nn.Conv2d)) for m in model.modules())


FAMILY_NAMES = {"mlp": "MLP (the paper's)", "cnn": "CNN", "vit": "ViT"}
"""How tables and figures name each family."""
