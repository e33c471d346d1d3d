r"""Image features from a pretrained backbone, for the paper's feature-extraction experiment (Figures 3, 5).

The authors embed every training image with the Hugging Face pipeline ``"image-feature-extraction"``
on ``google/vit-base-patch16-224`` with ``pool=True``. That pipeline converts each PIL image to RGB
(``Image.convert("RGB")``: a grayscale pixel :math:`v` becomes :math:`(v, v, v)`), runs the
checkpoint's image processor (resize to 224 x 224, bilinear; rescale by 1/255; normalise with
mean = std = 0.5) and returns the model's ``pooler_output``. For ViT that is **not** the [CLS]
hidden state but

.. math::

    \mathtt{pooler\_output} = \tanh(W_p c + b_p), \qquad
    c = \operatorname{LayerNorm}(\text{last hidden state of the [CLS] token}),

and the ``google/vit-base-patch16-224`` checkpoint (a ``ViTForImageClassification``) holds no
:math:`W_p`, :math:`b_p`: ``AutoModel`` builds a ``ViTModel`` whose pooler is freshly initialised
(:math:`W_p \sim \mathcal{N}(0, 0.02^2)`, :math:`b_p = 0`) from the global random state at every
load. The authors' 768-dimensional features are therefore :math:`\tanh` of an unseeded random
projection of :math:`c`. ``pooling="pooler"`` reproduces this with the pooler drawn from
``pooler_seed`` (so a run is repeatable); ``pooling="cls"`` returns :math:`c` itself.

Backbones, selected by name (:func:`make_backbone`):

* a Hugging Face checkpoint id (default :data:`lhlib.engine.settings.DEFAULT_BACKBONE`) or a local folder
  holding one, loaded with ``AutoImageProcessor`` and ``AutoModel`` (no ``trust_remote_code``),
  every hub request under a timeout and all of them within ``HUB_TOTAL_TIMEOUT_S``; ``revision`` is
  resolved to a commit hash that enters the cache key;
* ``"offline-cnn"``: a small CNN that this book trains itself, for machines without hub access, on
  training images disjoint from those it embeds (images ``train_size .. train_size + 10000`` of the
  same dataset), cached in the results store. Its :attr:`Backbone.provenance` says exactly that.

:func:`extract_features` embeds a uint8 image tensor in batches (on the GPU when there is one,
optionally in half precision) and caches the features under a key of the backbone's identity, the
dataset, the indices, the images' fingerprint and the preprocessing, written atomically, so a second
run loads them without loading the backbone at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lhlib.engine.data import DATASETS, load_images
from lhlib.engine.progress import progress_bar
from lhlib.engine.settings import (
    OFFLINE_BACKBONE,
    POOLINGS,
    check_backbone,
    check_revision,
    is_commit,
    is_local_checkpoint,
)
from lhlib.engine.store import cached, tensor_fingerprint
from lhlib.engine.train import resolve_device
from lhlib.engine.validation import check_choice, check_float, check_int

__all__ = [
    "Backbone",
    "BackboneUnavailable",
    "FeatureSet",
    "HUB_TIMEOUT_S",
    "HubBackbone",
    "ModelBackbone",
    "OfflineCNNBackbone",
    "SmallCNN",
    "dataset_features",
    "extract_features",
    "make_backbone",
    "pil_rgb_difference",
    "to_rgb",
]


HUB_TIMEOUT_S = 20  # one hub request


HUB_TOTAL_TIMEOUT_S = 60
"""Seconds for everything one backbone asks of the hub (its client retries each request)."""


FEATURE_FORMAT = 1  # bump when the meaning of a cached feature changes


OFFLINE_CNN = {"images": 10000, "epochs": 2, "batch_size": 128, "lr": 1e-3, "feature_dim": 768}


class BackboneUnavailable(RuntimeError):
    """The requested backbone's weights could not be obtained; the message names the alternatives."""


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` images as ``(N, 3, H, W)``, as PIL's ``convert("RGB")`` makes them.

    A grayscale (:math:`C = 1`, PIL mode ``"L"``) pixel :math:`v` becomes :math:`(v, v, v)`; RGB images
    pass through unchanged.

    Args:
        images: uint8 ``(N, C, H, W)`` images with :math:`C` 1 or 3.

    Returns:
        The uint8 ``(N, 3, H, W)`` images (``images`` itself when already RGB).

    Raises:
        ValueError: when ``images`` is not a uint8 four-dimensional tensor with 1 or 3 channels.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"images must be a uint8 N x C x H x W tensor with C in (1, 3), got {images.dtype} {tuple(images.shape)}"
        )
    return images.expand(-1, 3, -1, -1).contiguous() if images.shape[1] == 1 else images


def pil_rgb_difference(images: torch.Tensor) -> int:
    r"""Largest difference between :func:`to_rgb` and PIL's ``convert("RGB")`` over every pixel and channel.

    The authors' pipeline converts each PIL image with ``convert("RGB")``; :func:`to_rgb` does the same
    for a batch. This compares the two image by image:

    .. math::

        \max_{n, c, h, w} \bigl| \operatorname{to\_rgb}(u)_{nchw} - \operatorname{PIL}(u_n)_{chw} \bigr|.

    Args:
        images: uint8 ``(N, C, H, W)`` images with :math:`C` 1 or 3.

    Returns:
        The largest absolute difference, an ``int`` (0 when the two agree).
    """
    from PIL import Image

    ours = to_rgb(images).permute(0, 2, 3, 1).numpy().astype(int)
    # uint8 H x W is PIL mode "L", H x W x 3 mode "RGB".
    pixels = images[:, 0] if images.shape[1] == 1 else images.permute(0, 2, 3, 1)
    pil = np.stack([np.asarray(Image.fromarray(p.numpy()).convert("RGB")) for p in pixels])
    return int(np.abs(ours - pil.astype(int)).max())


class Backbone:
    """A map from uint8 RGB images to feature vectors.

    ``identity()`` is cheap (no weights loaded) and names everything that determines the features;
    :func:`extract_features` puts it into the cache key. ``embed`` loads the weights on first use.

    Attributes:
        name: The backbone's name: a checkpoint id or folder, ``"offline-cnn"``, or the name a
            :class:`ModelBackbone` is given.
    """

    name: str = ""

    def identity(self) -> dict[str, Any]:
        """The settings that determine the features (the cache key of the features).

        Returns:
            A JSON-serialisable ``dict`` of those settings.
        """
        raise NotImplementedError

    @property
    def provenance(self) -> str:
        """One line naming the backbone and how it pools, for the chapter's provenance note."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Load (or train) the weights now, so that timing ``embed`` measures embedding only."""
        self._loaded()

    def _loaded(self):
        raise NotImplementedError

    def embed(self, rgb: torch.Tensor) -> torch.Tensor:
        """Features of a batch of images.

        Args:
            rgb: uint8 ``(B, 3, H, W)`` RGB images.

        Returns:
            The float32 ``(B, D)`` features, on the CPU.
        """
        raise NotImplementedError


@contextlib.contextmanager
def _hub_timeouts(seconds: float):
    """Give every Hugging Face hub request of this block a timeout."""
    import huggingface_hub.constants as hub

    saved = hub.HF_HUB_ETAG_TIMEOUT, hub.HF_HUB_DOWNLOAD_TIMEOUT
    hub.HF_HUB_ETAG_TIMEOUT = hub.HF_HUB_DOWNLOAD_TIMEOUT = int(seconds)
    try:
        yield
    finally:
        hub.HF_HUB_ETAG_TIMEOUT, hub.HF_HUB_DOWNLOAD_TIMEOUT = saved


def _unavailable(name: str, revision: str, reason: str) -> BackboneUnavailable:
    return BackboneUnavailable(
        f"cannot obtain the checkpoint {name!r} (revision {revision!r}): {reason}. Alternatives: "
        f"backbone={OFFLINE_BACKBONE!r} (a small CNN this book trains offline, clearly labelled as such); "
        f"allow network access to huggingface.co (e.g. on Colab); or put the checkpoint into the Hugging Face "
        f"cache beforehand (`hf download {name}` on a connected machine, then copy $HF_HOME)"
        " and run with HF_HUB_OFFLINE=1"
    )


def _within(seconds: float, call: Callable[[], Any]) -> Any:
    """``call()``'s result, or ``TimeoutError`` once ``seconds`` have passed without one.

    The call runs in a daemon thread: a host that accepts connections and never answers keeps that
    thread waiting on its own timeouts, but not the chapter.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # noqa: BLE001 -- handed to the caller below
            outcome["error"] = error

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise TimeoutError(f"no answer within {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _folder_hash(folder: Path) -> str:
    """SHA-256 of a checkpoint folder's weights and configuration; links that lead out of it are skipped."""
    digest = hashlib.sha256()
    inside = folder.resolve()
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors", ".bin")]
    for path in sorted(p for p in files if p.resolve().is_relative_to(inside)):
        digest.update(path.name.encode())
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:32]


def _resolve_revision(name: str, revision: str, timeout_s: float) -> str:
    """A commit hash for ``revision`` of hub model ``name``: the hub's answer, else the local HF cache's."""
    check_revision(revision)
    if is_commit(revision):
        return revision
    from huggingface_hub import HfApi
    from huggingface_hub.constants import HF_HUB_CACHE

    reason = "offline mode (HF_HUB_OFFLINE) is on"
    try:
        import huggingface_hub.constants as hub

        if not hub.HF_HUB_OFFLINE:
            return HfApi().model_info(name, revision=revision, timeout=timeout_s).sha
    except Exception as error:  # noqa: BLE001 -- no network, DNS failure, timeout, unknown repository or revision
        reason = f"the hub did not answer ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
    refs = Path(HF_HUB_CACHE) / f"models--{name.replace('/', '--')}" / "refs"
    ref = refs / revision
    # The ref file holds a commit hash; anything else (or a file outside refs/) is not a ref.
    if ref.is_file() and ref.resolve().is_relative_to(refs.resolve()):
        commit = ref.read_text(errors="replace").strip()
        if is_commit(commit):
            return commit
    raise _unavailable(name, revision, f"{reason}, and it is not in the local Hugging Face cache {HF_HUB_CACHE}")


def _pooled(outputs, pooling: str) -> torch.Tensor:
    if pooling == "pooler":
        if getattr(outputs, "pooler_output", None) is None:
            raise ValueError("pooling='pooler' needs a model with a pooler layer; use pooling='cls'")
        return outputs.pooler_output
    return outputs.last_hidden_state[:, 0]


def _is_tensor_processor(processor) -> bool:
    """Whether ``processor`` works on torch tensors and takes ``device`` (transformers 5's torchvision
    backend, transformers 4's "fast" processors), so resizing runs on the backbone's device.
    """
    try:
        from transformers.image_processing_backends import TorchvisionBackend as Fast
    except ImportError:  # transformers 4
        try:
            from transformers.image_processing_utils_fast import BaseImageProcessorFast as Fast
        except ImportError:
            return False
    return isinstance(processor, Fast)


class ModelBackbone(Backbone):
    """A loaded ``transformers`` image model and its image processor (e.g. a tiny ``ViTModel`` in tests).

    ``pooling="pooler"`` returns ``pooler_output`` (what the pipeline's ``pool=True`` returns),
    ``"cls"`` the final [CLS] hidden state. Images go through ``processor`` exactly as the pipeline
    sends them (RGB, then the processor's resize, rescale and normalisation), in batches, on ``device``.

    Args:
        model: The ``transformers`` model.
        processor: Its image processor.
        name: The name the backbone reports.
        pooling: ``"pooler"`` or ``"cls"``.
        device: Where to embed (see :func:`lhlib.engine.train.resolve_device`).
        half_precision: Embed in float16 (on CUDA only; elsewhere float32).
        key: The settings that name the weights in :meth:`identity`; ``None`` fingerprints the weights
            and the processor's configuration.
        note: Appended to :attr:`provenance`.

    Raises:
        ValueError: when ``pooling`` or ``device`` is not accepted.
    """

    def __init__(
        self,
        model,
        processor,
        *,
        name: str,
        pooling: str = "pooler",
        device: str = "auto",
        half_precision: bool = False,
        key: dict[str, Any] | None = None,
        note: str = "",
    ):
        check_choice("pooling", pooling, POOLINGS)
        self.name, self.pooling, self.note = name, pooling, note
        self.device = resolve_device(device)
        self.dtype = torch.float16 if half_precision and self.device.type == "cuda" else torch.float32
        self.model, self.processor = model, processor
        self._key = key
        self.feature_dim = int(
            model.config.hidden_size
            if pooling == "cls"
            else getattr(model.config, "pooler_output_size", None) or model.config.hidden_size
        )

    def _loaded(self):
        return self.model, self.processor

    def identity(self) -> dict[str, Any]:
        """The settings that determine the features (the cache key of the features).

        Returns:
            A ``dict`` of the backbone's name, its weights' key, the pooling, the dtype and the device type.
        """
        key = (
            self._key
            if self._key is not None
            else {
                "weights": tensor_fingerprint(*self.model.state_dict().values()),
                "processor": self.processor.to_dict(),
            }
        )
        return {
            "backbone": self.name,
            **key,
            "pooling": self.pooling,
            "dtype": str(self.dtype).split(".")[-1],
            "device_type": self.device.type,
        }

    @property
    def provenance(self) -> str:
        """One line naming the backbone and how it pools, for the chapter's provenance note."""
        what = "pooler output tanh(dense(CLS))" if self.pooling == "pooler" else "final [CLS] hidden state"
        return f"{self.name}, {what}" + (f"; {self.note}" if self.note else "")

    @torch.no_grad()
    def embed(self, rgb: torch.Tensor) -> torch.Tensor:
        r"""Features of RGB images: the model's pooler output or its final [CLS] hidden state.

        With :math:`\tilde u` the image after the processor's resize, rescale and normalisation and
        :math:`c(\tilde u)` the final (for ViT, layer-normalised) hidden state of the [CLS] token, the
        features are, for a ViT pooler,

        .. math::

            \phi(u) = \tanh\bigl(W_p \, c(\tilde u) + b_p\bigr) \quad (\mathtt{pooling} = \mathtt{"pooler"}),
            \qquad \phi(u) = c(\tilde u) \quad (\mathtt{pooling} = \mathtt{"cls"}).

        Args:
            rgb: uint8 ``(N, 3, H, W)`` RGB images.

        Returns:
            The float32 ``(N, D)`` features, on the CPU.

        Raises:
            ValueError: when ``pooling="pooler"`` and the model has no pooler.
        """
        model, processor = self._loaded()
        model.to(self.device, self.dtype).eval()
        extra = {"device": self.device} if _is_tensor_processor(processor) else {}
        inputs = processor(images=list(rgb), return_tensors="pt", **extra)
        pixels = inputs["pixel_values"].to(self.device, self.dtype)
        return _pooled(model(pixel_values=pixels), self.pooling).float().cpu()


class HubBackbone(ModelBackbone):
    r"""A Hugging Face checkpoint (hub id or local folder), loaded lazily under hub timeouts.

    When the checkpoint has no pooler weights (``google/vit-base-patch16-224`` has none) and
    ``pooling="pooler"``, the pooler is drawn as ``transformers`` draws it
    (:math:`W \sim \mathcal{N}(0, \sigma^2)` with :math:`\sigma` = ``config.initializer_range``,
    :math:`b = 0`) but from ``pooler_seed``. A local folder's revision is the hash of its weights and
    configuration files; a hub revision is resolved to a commit when the backbone is made.

    Args:
        name: A hub model id or a local checkpoint folder.
        revision: The hub revision (branch, tag or commit).
        pooling: ``"pooler"`` or ``"cls"``.
        pooler_seed: Seeds the pooler when the checkpoint lacks its weights.
        device: Where to embed (see :func:`lhlib.engine.train.resolve_device`).
        half_precision: Embed in float16 (on CUDA only).
        timeout_s: Seconds for one hub request.
        total_timeout_s: Seconds for everything the backbone asks of the hub.

    Raises:
        ValueError: when a setting is not accepted.
        BackboneUnavailable: when the revision cannot be resolved (or, on first use, the weights
            cannot be loaded) within the timeouts.
    """

    def __init__(
        self,
        name: str,
        *,
        revision: str = "main",
        pooling: str = "pooler",
        pooler_seed: int = 0,
        device: str = "auto",
        half_precision: bool = False,
        timeout_s: float = HUB_TIMEOUT_S,
        total_timeout_s: float = HUB_TOTAL_TIMEOUT_S,
    ):
        check_choice("pooling", pooling, POOLINGS)
        check_float("timeout_s", timeout_s, minimum=0.0, strict_minimum=True)
        check_float("total_timeout_s", total_timeout_s, minimum=0.0, strict_minimum=True)
        self.total_timeout_s = total_timeout_s
        check_int("pooler_seed", pooler_seed, minimum=0)
        self.name, self.pooling, self.pooler_seed, self.timeout_s = name, pooling, pooler_seed, timeout_s
        self.device = resolve_device(device)
        self.dtype = torch.float16 if half_precision and self.device.type == "cuda" else torch.float32
        check_backbone(name)
        self.local = is_local_checkpoint(name)
        self.requested_revision = revision
        if self.local:
            self.revision = _folder_hash(Path(name))
        else:
            self.revision = self._from_hub(lambda: _resolve_revision(name, revision, timeout_s))
        self.model = self.processor = None
        self.feature_dim: int | None = None
        self.pooler_initialised: bool | None = None
        import transformers

        self._key = {
            "revision": self.revision,
            "pooler_seed": pooler_seed if pooling == "pooler" else None,
            "preprocessing": "to_rgb, then the checkpoint's AutoImageProcessor",
            "transformers": transformers.__version__.split(".")[0],
        }  # 4 and 5 resize slightly differently
        self.note = ""

    def _from_hub(self, call: Callable[[], Any]) -> Any:
        """``call()`` under the per-request timeouts, and failed once :attr:`total_timeout_s` has passed."""

        def bounded():
            with _hub_timeouts(self.timeout_s):
                return call()

        try:
            return _within(self.total_timeout_s, bounded)
        except TimeoutError as error:
            raise _unavailable(self.name, self.requested_revision, f"the hub did not answer ({error})") from error

    def _loaded(self):
        if self.model is None:
            from transformers import AutoImageProcessor, AutoModel

            where = {} if self.local else {"revision": self.revision}

            def load():
                processor = AutoImageProcessor.from_pretrained(self.name, **where)
                return processor, *AutoModel.from_pretrained(self.name, output_loading_info=True, **where)

            try:
                processor, model, info = load() if self.local else self._from_hub(load)
            except OSError as error:
                raise _unavailable(self.name, self.requested_revision, str(error).splitlines()[0]) from error
            missing = {
                key.split(".", 1)[-1] if key.startswith(model.base_model_prefix + ".") else key
                for key in info["missing_keys"]
            }
            self.pooler_initialised = any(key.startswith("pooler.") for key in missing)
            if self.pooler_initialised and self.pooling == "pooler":
                generator = torch.Generator().manual_seed(self.pooler_seed)
                std = float(getattr(model.config, "initializer_range", 0.02))
                with torch.no_grad():
                    for module in model.pooler.modules():
                        if isinstance(module, nn.Linear):
                            module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
                            if module.bias is not None:
                                module.bias.zero_()
            self.model, self.processor = model, processor
            self.feature_dim = int(
                model.config.hidden_size
                if self.pooling == "cls"
                else getattr(model.config, "pooler_output_size", None) or model.config.hidden_size
            )
            if self.pooler_initialised and self.pooling == "pooler":
                self.note = (
                    f"pooler weights absent from the checkpoint, drawn N(0, {std}^2) with seed {self.pooler_seed} "
                    "(the authors' pipeline drew them unseeded)"
                )
        return self.model, self.processor

    @property
    def provenance(self) -> str:
        """One line naming the backbone, its pooling and its revision."""
        what = "pooler output tanh(dense(CLS))" if self.pooling == "pooler" else "final [CLS] hidden state"
        where = "local folder" if self.local else f"revision {self.revision[:12]}"
        return f"{self.name} ({where}), {what}" + (f"; {self.note}" if self.note else "")


class SmallCNN(nn.Module):
    r"""The offline backbone: two conv-ReLU-maxpool blocks, an adaptive average pool to 4 x 4, then
    :math:`\tanh(\operatorname{Linear}(\cdot, \mathtt{feature\_dim}))` as the embedding.

    The :math:`\tanh` keeps the embedding bounded like ViT's pooler output; a linear classifier on the
    embedding is used only to train it. Inputs are uint8 RGB images mapped to :math:`[-1, 1]` as the
    ViT processor does (rescale, mean = std = 0.5), at their native resolution.

    Args:
        num_classes: The classes of the training head.
        feature_dim: The dimension :math:`D` of the embedding.
    """

    def __init__(self, num_classes: int, feature_dim: int = 768):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(64 * 16, feature_dim),
            nn.Tanh(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    @staticmethod
    def normalise(rgb: torch.Tensor) -> torch.Tensor:
        r"""uint8 RGB to :math:`[-1, 1]`, the ViT processor's rescale and normalisation.

        .. math::

            \tilde u = \frac{u}{127.5} - 1 = \frac{u / 255 - 0.5}{0.5}.

        Args:
            rgb: uint8 RGB images.

        Returns:
            The float32 images, same shape, in :math:`[-1, 1]`.
        """
        return rgb.float() / 127.5 - 1.0

    def embed(self, rgb: torch.Tensor) -> torch.Tensor:
        r"""Features of RGB images.

        With :math:`\beta_j = \operatorname{MaxPool}_2 \circ \operatorname{ReLU} \circ \operatorname{Conv}_j`
        the two blocks and :math:`\tilde u` the image mapped by :meth:`normalise`,

        .. math::

            \phi(u) = \tanh\bigl(W \operatorname{vec}(\operatorname{AvgPool}_{4 \times 4}(\beta_2(\beta_1(\tilde u))))
            + b\bigr).

        Args:
            rgb: uint8 ``(N, 3, H, W)`` RGB images.

        Returns:
            The ``(N, D)`` features.
        """
        return self.body(self.normalise(rgb))

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        r"""Class logits of RGB images (the head is used only to train the backbone).

        .. math::

            z = W_c \, \phi(u) + b_c,

        with :math:`\phi` the embedding of :meth:`embed`.

        Args:
            rgb: uint8 ``(N, 3, H, W)`` RGB images.

        Returns:
            The ``(N, K)`` logits.
        """
        return self.head(self.embed(rgb))


class OfflineCNNBackbone(Backbone):
    """:class:`SmallCNN` trained by this book on images disjoint from the ones it embeds.

    It is trained with Adam (:func:`lhlib.engine.train.train`) on ``train_images`` (e.g. training images
    ``train_size .. train_size + 10000`` of the dataset whose first ``train_size`` images are then
    embedded), cached in the results store under the images' fingerprint and every training setting.

    Args:
        train_images: uint8 ``(N, C, H, W)`` training images (grayscale converted to RGB).
        train_labels: Their ``(N,)`` labels.
        num_classes: The number of classes.
        source: Where the training images come from, for :attr:`provenance`.
        seed: Seeds the initialisation and the training order.
        device: Where to train and embed.
        epochs: Training epochs.
        batch_size: Training mini-batch size.
        lr: Adam's learning rate.
        feature_dim: The dimension :math:`D` of the embedding.

    Raises:
        ValueError: when ``seed`` or ``epochs`` is out of range, or there are fewer than
            ``2 * num_classes`` training images.
    """

    name = OFFLINE_BACKBONE

    def __init__(
        self,
        train_images: torch.Tensor,
        train_labels: torch.Tensor,
        *,
        num_classes: int,
        source: str,
        seed: int = 0,
        device: str = "auto",
        epochs: int = OFFLINE_CNN["epochs"],
        batch_size: int = OFFLINE_CNN["batch_size"],
        lr: float = OFFLINE_CNN["lr"],
        feature_dim: int = OFFLINE_CNN["feature_dim"],
    ):
        check_int("seed", seed, minimum=0)
        check_int("epochs", epochs, minimum=1)
        if train_images.shape[0] < 2 * num_classes:
            raise ValueError(
                f"the offline backbone needs at least {2 * num_classes} training images, got {train_images.shape[0]}"
            )
        self.train_images, self.train_labels = to_rgb(train_images), train_labels
        self.num_classes, self.source, self.seed = num_classes, source, seed
        self.epochs, self.batch_size, self.lr, self.feature_dim = epochs, batch_size, lr, feature_dim
        self.device = resolve_device(device)
        self.model: SmallCNN | None = None
        self.train_accuracy: float | None = None

    def _params(self) -> dict[str, Any]:
        return {
            "architecture": "SmallCNN-v1",
            "data": tensor_fingerprint(self.train_images, self.train_labels),
            "num_classes": self.num_classes,
            "seed": self.seed,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "feature_dim": self.feature_dim,
            "device_type": self.device.type,
            "torch": torch.__version__.split("+")[0],
        }

    def identity(self) -> dict[str, Any]:
        """The settings that determine the features (the cache key of the features).

        Returns:
            A ``dict`` of the backbone's name, its architecture, the training data's fingerprint and every
            training setting.
        """
        return {"backbone": self.name, **self._params()}

    @property
    def provenance(self) -> str:
        """One line naming the backbone, how it was trained and its training accuracy."""
        accuracy = f", training accuracy {100 * self.train_accuracy:.1f} %" if self.train_accuracy is not None else ""
        return (
            f"offline-cnn (NOT the paper's ViT): a small CNN trained by this book for {self.epochs} epochs on "
            f"{self.source}, disjoint from the embedded images{accuracy}; {self.feature_dim}-d tanh embedding"
        )

    def _train(self) -> dict[str, Any]:
        from lhlib.engine.train import train

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = SmallCNN(self.num_classes, self.feature_dim)
        model.to(self.device)
        x, y = self.train_images.to(self.device), self.train_labels.to(self.device)
        with torch.enable_grad():  # embed() may call this under no_grad
            history = train(
                model, x, y, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=self.seed, progress=True
            )
        with torch.no_grad():
            correct = torch.cat([model(x[s : s + 1024]).argmax(1) == y[s : s + 1024] for s in range(0, len(y), 1024)])
        return {
            "state": {k: v.cpu() for k, v in model.state_dict().items()},
            "epoch_loss": history.epoch_loss,
            "accuracy": float(correct.float().mean()),
        }

    def _loaded(self) -> SmallCNN:
        if self.model is None:
            result = cached("offline_backbone", self._params(), self._train)
            model = SmallCNN(self.num_classes, self.feature_dim)
            model.load_state_dict(result["state"])
            self.model, self.train_accuracy = model.to(self.device).eval(), float(result["accuracy"])
        return self.model

    @torch.no_grad()
    def embed(self, rgb: torch.Tensor) -> torch.Tensor:
        r"""Features of RGB images by the trained :class:`SmallCNN` (trained or loaded on first use).

        .. math::

            \phi(u) = \tanh\bigl(W \operatorname{vec}(\operatorname{AvgPool}_{4 \times 4}(\beta_2(\beta_1(\tilde u))))
            + b\bigr)

        (:meth:`SmallCNN.embed`).

        Args:
            rgb: uint8 ``(N, 3, H, W)`` RGB images.

        Returns:
            The float32 ``(N, D)`` features, on the CPU.
        """
        return self._loaded().embed(rgb.to(self.device)).float().cpu()


@dataclass(frozen=True)
class FeatureSet:
    """Features of images, with where they came from.

    ``seconds`` and ``images_per_second`` are those of the extraction that computed them (also when
    they now come from the cache); ``from_cache`` says whether this call loaded them.

    Attributes:
        x: The float32 ``(N, D)`` features, on the CPU.
        backbone: The backbone's name.
        provenance: The backbone's provenance line.
        feature_dim: :math:`D`.
        identity: The cache key the features were stored under.
        seconds: Seconds the extraction took.
        images_per_second: Images embedded per second by that extraction.
        from_cache: Whether this call loaded the features from the cache.
    """

    x: torch.Tensor
    backbone: str
    provenance: str
    feature_dim: int
    identity: dict[str, Any] = field(repr=False)
    seconds: float = 0.0
    images_per_second: float = 0.0
    from_cache: bool = False


def _embed(backbone: Backbone, rgb: torch.Tensor, batch_size: int, *, desc: str, progress: bool) -> dict[str, Any]:
    """What :func:`extract_features` stores: the embeddings of ``rgb`` in batches, and how fast."""
    backbone.prepare()
    began = time.perf_counter()
    batches = progress_bar(range(0, rgb.shape[0], batch_size), desc=desc, disable=not progress)
    x = torch.cat([backbone.embed(rgb[s : s + batch_size]) for s in batches]).float()
    seconds = time.perf_counter() - began
    return {
        "x": x,
        "provenance": backbone.provenance,
        "seconds": seconds,
        "images_per_second": rgb.shape[0] / max(seconds, 1e-9),
    }


def extract_features(
    backbone: Backbone,
    images: torch.Tensor,
    *,
    dataset: str,
    indices: tuple[int, int],
    batch_size: int = 64,
    use_cache: bool = True,
    progress: bool = True,
) -> FeatureSet:
    r"""Embed uint8 ``(N, C, H, W)`` ``images`` (grayscale converted to RGB first) in batches.

    With :math:`\phi` the backbone's :meth:`Backbone.embed` and :math:`u_n` the images,

    .. math::

        X = \bigl[\phi(\operatorname{to\_rgb}(u_1)), \dots, \phi(\operatorname{to\_rgb}(u_N))\bigr]^\top
        \in \mathbb{R}^{N \times D}.

    ``dataset`` and ``indices`` (``(start, stop)`` into the dataset's training split) name the
    images; with their fingerprint, the backbone's identity and the preprocessing they form the cache
    key. A cached result is returned without loading the backbone.

    Args:
        backbone: The backbone.
        images: The uint8 ``(N, C, H, W)`` images.
        dataset: The dataset's name, for the cache key.
        indices: ``(start, stop)`` of the images in the dataset's training split.
        batch_size: Images per batch.
        use_cache: Whether to read and write the results store.
        progress: Whether to show a progress bar.

    Returns:
        The :class:`FeatureSet` of the ``N`` images.

    Raises:
        ValueError: when ``stop - start`` is not the number of images or ``batch_size`` is not positive.
        FloatingPointError: when a feature is not finite.
    """
    check_int("batch_size", batch_size, minimum=1)
    if not isinstance(indices, tuple | list) or len(indices) != 2:
        raise ValueError(f"indices must be (start, stop), two integers with 0 <= start < stop, got {indices!r}")
    start, stop = check_int("indices[0]", indices[0], minimum=0), check_int("indices[1]", indices[1], minimum=1)
    if stop - start != images.shape[0] or images.shape[0] == 0:
        raise ValueError(f"indices {indices} do not match the {images.shape[0]} images given")
    rgb = to_rgb(images)
    params = {
        "format": FEATURE_FORMAT,
        **backbone.identity(),
        "dataset": dataset,
        "indices": [int(start), int(stop)],
        "images": tensor_fingerprint(images),
        "to_rgb": "replicate grayscale channel (PIL convert('RGB'))",
    }
    computed = False

    def compute() -> dict[str, Any]:
        nonlocal computed
        computed = True
        embedded = _embed(backbone, rgb, batch_size, desc=f"{dataset} features", progress=progress)
        if not torch.isfinite(embedded["x"]).all():  # refused before it reaches the store
            raise FloatingPointError(f"non-finite features from {backbone.name} on {dataset}")
        return embedded

    result = cached("features", params, compute, enabled=use_cache)
    x = result["x"]
    return FeatureSet(
        x,
        backbone.name,
        str(result["provenance"]),
        int(x.shape[1]),
        params,
        float(result["seconds"]),
        float(result["images_per_second"]),
        from_cache=not computed,
    )


def make_backbone(
    backbone: str,
    *,
    dataset: str,
    train_size: int,
    revision: str = "main",
    pooling: str = "pooler",
    seed: int = 0,
    device: str = "auto",
    half_precision: bool = False,
) -> Backbone:
    """The backbone named ``backbone`` for embedding the first ``train_size`` images of ``dataset``.

    ``"offline-cnn"`` is trained on the next (up to) 10000 training images of the same dataset;
    anything else is a Hugging Face checkpoint (``revision`` resolved now, weights loaded on first use).

    Args:
        backbone: ``"offline-cnn"``, a hub model id or a local checkpoint folder.
        dataset: The dataset whose images are embedded.
        train_size: How many of its first training images are embedded.
        revision: The hub revision (ignored by the offline CNN).
        pooling: ``"pooler"`` or ``"cls"`` (ignored by the offline CNN).
        seed: The pooler's seed for a checkpoint, the training seed for the offline CNN.
        device: Where to embed (and train).
        half_precision: Embed in float16 on CUDA (checkpoints only).

    Returns:
        A :class:`HubBackbone` or an :class:`OfflineCNNBackbone`.

    Raises:
        ValueError: when ``backbone`` is not accepted, or ``train_size`` leaves too few images to train
            the offline CNN.
        BackboneUnavailable: when a checkpoint's revision cannot be resolved.
    """
    check_backbone(backbone)
    if backbone != OFFLINE_BACKBONE:
        return HubBackbone(
            backbone, revision=revision, pooling=pooling, pooler_seed=seed, device=device, half_precision=half_precision
        )
    available = DATASETS[dataset].train_available
    stop = min(train_size + OFFLINE_CNN["images"], available)
    if stop - train_size < 2 * DATASETS[dataset].num_classes:
        raise ValueError(
            f"train_size must leave training images for backbone={OFFLINE_BACKBONE!r}: {dataset} has "
            f"{available}, train_size is {train_size}"
        )
    images, labels, info = load_images(dataset, stop)
    source = f"{dataset} training images {train_size}..{stop - 1}"
    return OfflineCNNBackbone(
        images[train_size:stop],
        labels[train_size:stop],
        num_classes=info.num_classes,
        source=source,
        seed=seed,
        device=device,
    )


def dataset_features(
    dataset: str, train_size: int, backbone: Backbone, *, batch_size: int = 64, use_cache: bool = True
) -> tuple[FeatureSet, torch.Tensor, Any]:
    """Features of the first ``train_size`` training images of ``dataset``, their labels and metadata.

    Args:
        dataset: The dataset's name.
        train_size: How many of its first training images to embed.
        backbone: The backbone (e.g. from :func:`make_backbone`).
        batch_size: Images per batch.
        use_cache: Whether to read and write the results store.

    Returns:
        ``(features, labels, info)``, the :class:`FeatureSet`, the ``(train_size,)`` labels and the
        dataset's metadata from :func:`lhlib.engine.data.load_images`.
    """
    images, labels, info = load_images(dataset, train_size)
    features = extract_features(
        backbone, images, dataset=dataset, indices=(0, train_size), batch_size=batch_size, use_cache=use_cache
    )
    return features, labels, info
