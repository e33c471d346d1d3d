"""Training plus per-sample losses for one configuration: the authors' approach against lhlib's.

Both run in this process, one after the other, on the same Fashion-MNIST images (first 10 000, the
paper's settings: 10 epochs, Adam 1e-3, batch 64, h = 16, num_layers = 5):

* reference: a torchvision dataset with ``ToTensor()`` + ``Normalize(0.5, 0.5)`` applied per image,
  a shuffling ``DataLoader`` with batch size 64, and the per-sample losses computed one sample at a
  time in a Python loop, as ``../shared/REFERENCE.md`` describes the authors' code;
* lhlib: tensors held on the device, batches by indexing, per-sample losses in one batched pass
  (``lhlib.engine.experiment.trained_network`` with the results store switched off).

Then, for each of ``--families`` (the paper's MLP, chapter 08's CNN and ViT), a seed ensemble against
sequential runs, side by side on the same data: ``--seeds S`` networks (default 8) trained one after
another with :func:`lhlib.engine.train.train` (on the threads lhlib gives a lone network of that family)
against the same ``S`` seeds trained in one batched pass by :func:`lhlib.engine.ensemble.train_ensemble`.

Usage: ``python benchmarks/bench_training.py [--repeats N] [--seeds S] [--families mlp,cnn,vit]``.
Prints the times and ratios.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader, Subset

from lhlib.engine.architectures import build_network
from lhlib.engine.data import FASHION_MNIST_DEBIAN, data_root, load_dataset
from lhlib.engine.ensemble import train_ensemble
from lhlib.engine.experiment import trained_network
from lhlib.engine.models import build_mlp
from lhlib.engine.train import train

TRAIN_SIZE, EPOCHS, BATCH, LR, HIDDEN, LAYERS, SEED = 10000, 10, 64, 1e-3, 16, 5, 0


def torchvision_root(folder: Path) -> Path:
    """A torchvision root holding Fashion-MNIST's raw IDX files (from torchvision's cache or Debian's package)."""
    existing = data_root() / "torchvision"
    if (existing / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").exists():
        return existing
    raw = folder / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in FASHION_MNIST_DEBIAN.glob("*-ubyte.gz"):
        with gzip.open(gz) as source, open(raw / gz.name[:-3], "wb") as target:
            shutil.copyfileobj(source, target)
    return folder


def reference(root: Path) -> float:
    """The authors' approach; returns the mean per-sample loss at the trained point."""
    transform = torchvision.transforms.Compose(
        [torchvision.transforms.ToTensor(), torchvision.transforms.Normalize((0.5,), (0.5,))]
    )
    dataset = Subset(
        torchvision.datasets.FashionMNIST(str(root), train=True, download=False, transform=transform), range(TRAIN_SIZE)
    )
    torch.manual_seed(SEED)
    model = build_mlp(784, HIDDEN, LAYERS, 10, seed=SEED)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True)
    for _ in range(EPOCHS):
        for images, labels in loader:
            loss = F.cross_entropy(model(images.flatten(1)), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    losses = []
    with torch.no_grad():
        for image, label in dataset:
            losses.append(F.cross_entropy(model(image.flatten()[None]), torch.tensor([label])).item())
    return sum(losses) / len(losses)


def lhlib_path() -> float:
    data = load_dataset("fashion_mnist", TRAIN_SIZE)
    network = trained_network(
        data.x,
        data.y,
        num_classes=10,
        hidden_size=HIDDEN,
        num_layers=LAYERS,
        epochs=EPOCHS,
        batch_size=BATCH,
        lr=LR,
        seed=SEED,
        device="cpu",
        use_cache=False,
    )
    return network.train_loss


# Chapter 08's middle sizes (width, depth) and the torch threads a lone network of each family trains on.
FAMILY_SIZES = {"mlp": (HIDDEN, LAYERS), "cnn": (16, 2), "vit": (32, 1)}
SEQUENTIAL_THREADS = {"mlp": 1, "cnn": 2, "vit": 1}


def _members(family: str, seeds) -> list[torch.nn.Module]:
    width, depth = FAMILY_SIZES[family]
    return [build_network(family, (1, 28, 28), width, depth, 10, seed) for seed in seeds]


def sequential_seeds(family, x, y, seeds) -> None:
    for model, seed in zip(_members(family, seeds), seeds):
        train(model, x, y, epochs=EPOCHS, batch_size=BATCH, lr=LR, seed=seed, threads=SEQUENTIAL_THREADS[family])


def ensemble_seeds(family, x, y, seeds) -> None:
    train_ensemble(_members(family, seeds), x, y, seeds=seeds, epochs=EPOCHS, batch_size=BATCH, lr=LR, threads=2)


def compare_seed_ensemble(family: str, count: int, repeats: int) -> None:
    data = load_dataset("fashion_mnist", TRAIN_SIZE)
    seeds = list(range(count))
    times = {"sequential": [], "ensemble": []}
    for _ in range(repeats):
        for name, run in (("sequential", sequential_seeds), ("ensemble", ensemble_seeds)):
            start = time.perf_counter()
            run(family, data.x, data.y, seeds)
            times[name].append(time.perf_counter() - start)
            print(f"{family} {name:>10}: {times[name][-1]:6.2f} s  ({count} seeds)", flush=True)
    best = {name: min(values) for name, values in times.items()}
    print(
        f"{family}, {count} seeds, width and depth {FAMILY_SIZES[family]}: sequential {best['sequential']:.2f} s "
        f"({SEQUENTIAL_THREADS[family]} torch thread(s) each), ensemble {best['ensemble']:.2f} s (2 torch threads), "
        f"speed-up {best['sequential'] / best['ensemble']:.1f}x; load average {os.getloadavg()[0]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each approach (the minimum is reported)")
    parser.add_argument("--seeds", type=int, default=8, help="seeds in the ensemble comparisons")
    parser.add_argument("--families", default="mlp,cnn,vit", help="network families of the ensemble comparisons")
    args = parser.parse_args()
    times = {"reference": [], "lhlib": []}
    with tempfile.TemporaryDirectory() as folder:
        root = torchvision_root(Path(folder))
        for _ in range(args.repeats):
            for name, run in (("reference", lambda: reference(root)), ("lhlib", lhlib_path)):
                start = time.perf_counter()
                loss = run()
                times[name].append(time.perf_counter() - start)
                print(f"{name:>9}: {times[name][-1]:6.2f} s  (mean training loss at theta-hat {loss:.4f})", flush=True)
    best = {name: min(values) for name, values in times.items()}
    print(
        f"reference {best['reference']:.2f} s, lhlib {best['lhlib']:.2f} s, "
        f"speed-up {best['reference'] / best['lhlib']:.1f}x (torch threads: {torch.get_num_threads()})"
    )
    for family in args.families.split(","):
        compare_seed_ensemble(family, args.seeds, args.repeats)


if __name__ == "__main__":
    main()
