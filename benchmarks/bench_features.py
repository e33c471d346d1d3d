"""Feature extraction speed (images per second): the authors' approach against lhlib's.

Both embed the same MNIST-sized grayscale images with the same ViT and image processor, through the
real ``transformers`` code:

* reference: the pipeline ``"image-feature-extraction"`` with ``pool=True``, called on one raw PIL
  image at a time, as ``../shared/REFERENCE.md`` describes the authors' code;
* lhlib: ``lhlib.engine.features.extract_features`` (batched, processor on the backbone's device, cache off).

The ViT is built locally with random weights (no download): ``--model tiny`` (hidden size 32, two
layers, 224 x 224 inputs, patch 16: measures the pipeline and preprocessing overhead on a CPU) or
``--model base`` (the ViT-B/16 architecture of ``google/vit-base-patch16-224``, for a GPU: the
speed does not depend on the weights' values).

Usage: ``python benchmarks/bench_features.py [--model tiny|base] [--images N] [--batch-size B] [--device auto]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from lhlib.engine.features import HubBackbone, extract_features
from lhlib.engine.train import resolve_device


def save_vit(folder: Path, model: str) -> Path:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = (
        ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
        if model == "tiny"
        else ViTConfig()
    )  # ViTConfig() is ViT-B/16 at 224 x 224
    torch.manual_seed(0)
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor().save_pretrained(folder)  # 224 x 224, mean = std = 0.5, as the checkpoint's
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("tiny", "base"), default="tiny")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--reference-images", type=int, default=128, help="images for the one-at-a-time reference")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--half", action="store_true", help="half precision (CUDA only)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    images = torch.randint(
        0, 256, (args.images, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    with tempfile.TemporaryDirectory() as folder:
        backbone = HubBackbone(str(save_vit(Path(folder), args.model)), device=str(device), half_precision=args.half)
        backbone.prepare()
        extract_features(
            backbone,
            images[: args.batch_size],
            dataset="bench",
            indices=(0, args.batch_size),
            batch_size=args.batch_size,
            use_cache=False,
            progress=False,
        )  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        ours = extract_features(
            backbone,
            images,
            dataset="bench",
            indices=(0, args.images),
            batch_size=args.batch_size,
            use_cache=False,
            progress=False,
        )

        from transformers import pipeline

        model, processor = backbone._loaded()
        extractor = pipeline("image-feature-extraction", model=model, image_processor=processor, device=device)
        pil = [Image.fromarray(image[0].numpy(), mode="L") for image in images[: args.reference_images]]
        extractor(pil[0], pool=True)  # warm-up
        start = time.perf_counter()
        for image in pil:
            extractor(image, pool=True)
        reference = len(pil) / (time.perf_counter() - start)
    print(
        f"ViT {args.model} on {device} ({torch.get_num_threads()} torch threads, batch {args.batch_size}"
        f"{', half precision' if args.half else ''}):"
    )
    print(f"  reference (pipeline, one PIL image at a time): {reference:8.1f} images/s")
    print(f"  lhlib (batched extract_features):               {ours.images_per_second:8.1f} images/s")
    print(
        f"  speed-up {ours.images_per_second / reference:.1f}x; 10000 images would take "
        f"{10000 / ours.images_per_second:.0f} s (lhlib) and {10000 / reference:.0f} s (reference)"
    )


if __name__ == "__main__":
    main()
