"""lhlib.engine.features: RGB conversion, the transformers path against the authors' pipeline, the feature
cache (keys and interrupted writes), the offline backbone and the error when the hub is unreachable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lhlib.engine.features import (
    Backbone,
    BackboneUnavailable,
    HubBackbone,
    ModelBackbone,
    OfflineCNNBackbone,
    extract_features,
    make_backbone,
    pil_rgb_difference,
    to_rgb,
)
from lhlib.engine.settings import check_backbone
from lhlib.engine.store import cache_root


def _gray(n: int = 6, size: int = 28, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_to_rgb_is_pil_convert_rgb():
    images = _gray()
    ours = to_rgb(images).permute(0, 2, 3, 1).numpy()
    pil = np.stack([np.asarray(Image.fromarray(image[0].numpy(), mode="L").convert("RGB")) for image in images])
    assert ours.shape == (6, 28, 28, 3) and np.array_equal(ours, pil)
    rgb = torch.randint(0, 256, (2, 3, 5, 5), dtype=torch.uint8)
    assert torch.equal(to_rgb(rgb), rgb)
    with pytest.raises(ValueError, match="uint8"):
        to_rgb(images.float())


def test_pil_rgb_difference_is_zero_for_to_rgb_and_sees_a_changed_pixel(monkeypatch):
    import lhlib.engine.features as features

    images = _gray()
    rgb = torch.randint(0, 256, (2, 3, 5, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    assert pil_rgb_difference(images) == 0 and pil_rgb_difference(rgb) == 0
    broken = lambda batch: to_rgb(batch).clone().index_fill_(1, torch.tensor([2]), 0)  # noqa: E731
    monkeypatch.setattr(features, "to_rgb", broken)
    assert pil_rgb_difference(images) == int(images.max())


def test_check_backbone(tiny_vit):
    assert check_backbone("offline-cnn") == "offline-cnn"
    assert check_backbone("google/vit-base-patch16-224") == "google/vit-base-patch16-224"
    assert check_backbone(str(tiny_vit)) == str(tiny_vit)
    for bad in ("vit", "", None, 3, "a/b/c"):
        with pytest.raises(ValueError, match="^backbone must be 'offline-cnn'"):
            check_backbone(bad)


def test_tiny_vit_matches_the_authors_pipeline(tiny_vit):
    """Batched features through the real transformers path equal the pipeline's pooled output, image by image."""
    from transformers import pipeline

    backbone = HubBackbone(str(tiny_vit), pooling="pooler", pooler_seed=3, device="cpu")
    images = _gray(5)
    features = extract_features(backbone, images, dataset="test", indices=(0, 5), batch_size=2, use_cache=False)
    assert backbone.pooler_initialised and "seed 3" in features.provenance
    assert features.x.shape == (5, 32) and features.x.abs().max() <= 1  # tanh(dense(CLS))
    model, processor = backbone._loaded()
    extractor = pipeline("image-feature-extraction", model=model, image_processor=processor, device="cpu")
    for image, row in zip(images, features.x):
        pil = Image.fromarray(image[0].numpy(), mode="L")  # the raw grayscale training image
        expected = torch.as_tensor(extractor(pil, pool=True, return_tensors=True)).reshape(-1)
        torch.testing.assert_close(row, expected, atol=1e-5, rtol=1e-5)
    cls = extract_features(
        HubBackbone(str(tiny_vit), pooling="cls", device="cpu"), images, dataset="test", indices=(0, 5), use_cache=False
    )
    assert cls.x.shape == (5, 32) and not torch.allclose(cls.x, features.x)


def test_pooler_is_drawn_from_the_seed(tiny_vit):
    images = _gray(3)

    def run(seed):
        return extract_features(
            HubBackbone(str(tiny_vit), pooler_seed=seed, device="cpu"),
            images,
            dataset="test",
            indices=(0, 3),
            use_cache=False,
        ).x

    assert torch.equal(run(0), run(0)) and not torch.allclose(run(0), run(1))


class _Counting(Backbone):
    """A cheap fake backbone that counts its embed calls."""

    name = "counting"

    def __init__(self, tag: str = "a"):
        self.tag, self.calls = tag, 0

    def identity(self):
        return {"backbone": self.name, "tag": self.tag}

    @property
    def provenance(self):
        return f"counting {self.tag}"

    def _loaded(self):
        return None

    def embed(self, rgb):
        self.calls += 1
        return rgb.float().flatten(1)[:, :4] + (1.0 if self.tag == "a" else 2.0)


def test_feature_cache_hits_and_keys():
    images = _gray(4, size=4)
    backbone = _Counting()
    first = extract_features(backbone, images, dataset="d", indices=(0, 4), batch_size=3)
    assert not first.from_cache and backbone.calls == 2
    second = extract_features(backbone, images, dataset="d", indices=(0, 4), batch_size=3)
    assert second.from_cache and backbone.calls == 2 and torch.equal(first.x, second.x)
    assert second.provenance == "counting a" and second.feature_dim == 4
    # Every input that determines the features changes the key.
    variants = [
        (_Counting("b"), images, "d", (0, 4)),  # backbone identity (weights, revision, pooling, ...)
        (backbone, images, "other", (0, 4)),  # dataset
        (backbone, images, "d", (4, 8)),  # indices
        (backbone, images.flip(0), "d", (0, 4)),  # the images themselves
    ]
    for candidate, imgs, dataset, indices in variants:
        before = candidate.calls
        result = extract_features(candidate, imgs, dataset=dataset, indices=indices)
        assert not result.from_cache and candidate.calls > before
    with pytest.raises(ValueError, match="indices"):
        extract_features(backbone, images, dataset="d", indices=(0, 5))


def test_processor_settings_enter_the_key(tiny_vit):
    from transformers import AutoImageProcessor, AutoModel

    model = AutoModel.from_pretrained(tiny_vit)
    small = AutoImageProcessor.from_pretrained(tiny_vit)
    other = AutoImageProcessor.from_pretrained(tiny_vit, image_mean=[0.4, 0.4, 0.4])

    def key(processor):
        return ModelBackbone(model, processor, name="tiny", device="cpu").identity()

    assert key(small) != key(other) and key(small) == key(AutoImageProcessor.from_pretrained(tiny_vit))


def test_interrupted_write_leaves_no_file(monkeypatch):
    images = _gray(2, size=4)
    store = cache_root() / "store" / "features"
    before = set(store.glob("*")) if store.exists() else set()

    def broken_save(obj, file):
        file.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        extract_features(_Counting("interrupted"), images, dataset="d", indices=(0, 2))
    monkeypatch.undo()
    assert set(store.glob("*")) == before  # neither a partial .pt nor a leftover .part file
    backbone = _Counting("interrupted")
    assert not extract_features(backbone, images, dataset="d", indices=(0, 2)).from_cache
    assert extract_features(backbone, images, dataset="d", indices=(0, 2)).from_cache


def test_unreachable_checkpoint_names_the_alternatives(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(BackboneUnavailable, match="backbone='offline-cnn'") as error:
        HubBackbone("google/vit-base-patch16-224", device="cpu")
    assert "google/vit-base-patch16-224" in str(error.value) and "\n" not in str(error.value)
    # A pinned commit skips the revision lookup; the failure then comes from loading, with the same message.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pinned = HubBackbone("google/vit-base-patch16-224", revision="0" * 40, device="cpu")
    with pytest.raises(BackboneUnavailable, match="backbone='offline-cnn'"):
        extract_features(pinned, _gray(1), dataset="d", indices=(0, 1), use_cache=False)


def test_offline_cnn_is_trained_on_disjoint_images_and_cached():
    backbone = make_backbone("offline-cnn", dataset="digits", train_size=1500, seed=0, device="cpu")
    assert isinstance(backbone, OfflineCNNBackbone)
    assert backbone.source == "digits training images 1500..1796" and backbone.train_images.shape == (297, 3, 8, 8)
    from lhlib.engine.data import load_images

    images, _, _ = load_images("digits", 20)
    first = extract_features(backbone, images, dataset="digits", indices=(0, 20))
    assert first.x.shape == (20, 768) and first.x.abs().max() < 1
    assert "NOT the paper's ViT" in first.provenance and "1500..1796" in first.provenance
    again = make_backbone("offline-cnn", dataset="digits", train_size=1500, seed=0, device="cpu")
    second = extract_features(again, images, dataset="digits", indices=(0, 20))
    assert second.from_cache and again.model is None and torch.equal(first.x, second.x)  # not even loaded
    with pytest.raises(ValueError, match="train_size must leave training images"):
        make_backbone("offline-cnn", dataset="digits", train_size=1797)


def test_a_hub_that_never_answers_fails_within_the_total_timeout(tmp_path):
    """A host that accepts connections and never answers: the backbone fails within its total
    timeout, with one line naming the backbone and the offline choice."""
    import socket
    import subprocess
    import sys
    import threading

    from lhlib.engine.features import HUB_TOTAL_TIMEOUT_S

    assert HUB_TOTAL_TIMEOUT_S <= 60
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []

    def accept_and_stay_silent():
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept_and_stay_silent, daemon=True).start()
    code = """
import sys, time
import transformers  # imported before the clock starts: only the waits are timed
from transformers import AutoImageProcessor, AutoModel
from lhlib.engine.features import BackboneUnavailable, HubBackbone
for revision in ("main", "a" * 40):  # resolving a branch, then downloading a pinned commit
    start = time.perf_counter()
    try:
        HubBackbone("owner/model", revision=revision, timeout_s=1, total_timeout_s=4, device="cpu")._loaded()
    except BackboneUnavailable as error:
        print(f"{time.perf_counter() - start:.1f}", str(error).splitlines()[0])
"""
    environment = {
        **__import__("os").environ,
        "HF_ENDPOINT": f"http://127.0.0.1:{server.getsockname()[1]}",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "0",
    }
    try:
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120
        )
    finally:
        server.close()
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2, result.stdout + result.stderr
    for line in lines:
        seconds, message = line.split(" ", 1)
        assert float(seconds) < 4 + 5, line
        assert message.startswith("cannot obtain the checkpoint 'owner/model'") and "backbone='offline-cnn'" in message


def test_a_damaged_feature_entry_is_recomputed_to_the_same_features(capsys):
    images = _gray(3, size=4)
    backbone = _Counting("damaged")
    first = extract_features(backbone, images, dataset="d", indices=(0, 3))
    entry = max((cache_root() / "store" / "features").glob("*.pt"), key=lambda p: p.stat().st_mtime_ns)
    data = bytearray(entry.read_bytes())
    data[-1] ^= 0x01
    entry.write_bytes(bytes(data))
    capsys.readouterr()
    again = extract_features(backbone, images, dataset="d", indices=(0, 3))
    assert not again.from_cache and "discarded the stored features entry" in capsys.readouterr().err
    assert torch.equal(again.x, first.x) and backbone.calls == 2


class _NonFinite(_Counting):
    """A fake backbone whose features hold a NaN."""

    name = "non-finite"

    def embed(self, rgb):
        self.calls += 1
        return torch.full((rgb.shape[0], 4), float("nan"))


def test_non_finite_features_are_refused_before_they_reach_the_store():
    images, backbone = _gray(4, size=4), _NonFinite()
    for attempt in (1, 2):  # the second call computes again: nothing was stored
        with pytest.raises(FloatingPointError, match="non-finite features"):
            extract_features(backbone, images, dataset="d", indices=(0, 4))
        assert backbone.calls == attempt


@pytest.mark.parametrize("indices", [3, (0, 3, 4), (0.5, 3.5), (-3, 1), (0, 0)])
def test_feature_indices_are_two_integers_in_order(indices):
    images = _gray(4, size=4) if indices != (0, 0) else _gray(4, size=4)[:0]
    with pytest.raises(ValueError, match="indices"):
        extract_features(_Counting(), images, dataset="d", indices=indices)
