import os

import pytest
import torch

from lhlib.engine.store import atomic_write_bytes, cache_key, cached, load_result, tensor_fingerprint


def test_key_changes_with_every_parameter():
    base = {"data": "abc", "hidden_size": 16, "num_layers": 5, "epochs": 10, "lr": 1e-3, "seed": 0}
    keys = {cache_key(base)}
    for name, value in [
        ("data", "abd"),
        ("hidden_size", 32),
        ("num_layers", 3),
        ("epochs", 9),
        ("lr", 2e-3),
        ("seed", 1),
    ]:
        keys.add(cache_key({**base, name: value}))
    assert len(keys) == 7
    assert cache_key(dict(reversed(list(base.items())))) == cache_key(base)  # order does not matter


def test_fingerprint_sees_every_byte():
    x = torch.zeros(10, 3)
    y = x.clone()
    y[9, 2] = 1e-30
    assert tensor_fingerprint(x) != tensor_fingerprint(y)
    assert tensor_fingerprint(x) != tensor_fingerprint(x.double())
    assert tensor_fingerprint(x) == tensor_fingerprint(x.clone())


def test_cached_computes_once_and_reloads():
    calls = []

    def compute():
        calls.append(1)
        return {"value": torch.arange(3), "note": "x"}

    first = cached("unit", {"a": 1}, compute)
    second = cached("unit", {"a": 1}, compute)
    assert len(calls) == 1
    assert torch.equal(first["value"], second["value"]) and second["note"] == "x"
    cached("unit", {"a": 2}, compute)
    assert len(calls) == 2


def test_interrupted_write_leaves_no_file(tmp_path):
    target = tmp_path / "result.pt"

    def explode(file):
        file.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, explode)
    assert not target.exists()
    assert os.listdir(tmp_path) == []


def test_damaged_result_is_recomputed():
    cached("unit", {"b": 1}, lambda: {"value": torch.ones(2)})
    from lhlib.engine.store import _path

    _path("unit", {"b": 1}).write_bytes(b"not a torch file")
    assert load_result("unit", {"b": 1}) is None
    assert torch.equal(cached("unit", {"b": 1}, lambda: {"value": torch.zeros(2)})["value"], torch.zeros(2))


def _flip_bit(path, position):
    data = bytearray(path.read_bytes())
    data[position] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["header", "checksum", "first payload byte", "middle", "last byte"])
def test_an_entry_with_one_flipped_bit_is_discarded_and_recomputed(where, capsys):
    from lhlib.engine.store import ENTRY_HEADER, _path

    params = {"flip": where}
    cached("unit", params, lambda: {"value": torch.arange(1000.0)})
    path = _path("unit", params)
    size = path.stat().st_size
    position = {
        "header": 3,
        "checksum": len(ENTRY_HEADER) + 10,
        "first payload byte": len(ENTRY_HEADER) + 65,
        "middle": size // 2,
        "last byte": size - 1,
    }[where]
    _flip_bit(path, position)
    capsys.readouterr()
    result = cached("unit", params, lambda: {"value": torch.arange(1000.0) + 1})
    assert torch.equal(result["value"], torch.arange(1000.0) + 1), "the damaged entry was used"
    message = capsys.readouterr().err.strip()
    assert message.startswith("lhlib.engine.store: discarded the stored unit entry ") and message.endswith(
        "recomputing it"
    )
    assert "\n" not in message
    assert torch.equal(load_result("unit", params)["value"], torch.arange(1000.0) + 1), "the recomputed entry is stored"


def test_an_entry_under_another_key_or_in_the_old_format_is_discarded(capsys):
    from lhlib.engine.store import _path

    cached("unit", {"owner": 1}, lambda: {"value": torch.ones(2)})
    cached("unit", {"owner": 2}, lambda: {"value": torch.zeros(2)})
    _path("unit", {"owner": 2}).write_bytes(_path("unit", {"owner": 1}).read_bytes())
    assert load_result("unit", {"owner": 2}) is None
    assert "it was made by other parameters" in capsys.readouterr().err
    torch.save({"value": torch.ones(2), "_params": "{}"}, _path("unit", {"owner": 1}))  # format 1: no checksum
    assert load_result("unit", {"owner": 1}) is None
    assert "it has no checksum" in capsys.readouterr().err
    assert not _path("unit", {"owner": 1}).exists()


def test_writes_remove_stale_parts_and_use_ordinary_permissions(tmp_path):
    stale, fresh = tmp_path / ".result.pt.abc.part", tmp_path / ".result.pt.def.part"
    stale.write_bytes(b"killed")
    fresh.write_bytes(b"being written by another process")
    os.utime(stale, (0, 0))
    previous = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "result.pt", lambda file: file.write(b"data"))
    finally:
        os.umask(previous)
    assert not stale.exists() and fresh.exists()
    assert (tmp_path / "result.pt").stat().st_mode & 0o777 == 0o644


def test_bumping_the_store_format_retires_every_key(monkeypatch):
    from lhlib.engine import store

    key = cache_key({"what": "trained_network", "seed": 0})
    monkeypatch.setattr(store, "CACHE_FORMAT", store.CACHE_FORMAT + 1)
    assert cache_key({"what": "trained_network", "seed": 0}) != key


def test_what_is_not_a_regular_file_in_an_entrys_place_is_ignored_without_blocking(tmp_path, monkeypatch, capsys):
    """A directory or a FIFO where an entry belongs: the result is computed (a FIFO is never opened, so
    nothing waits for a writer) and returned, though it cannot be stored there."""
    from lhlib.engine import store

    monkeypatch.setenv("LHLIB_CACHE", str(tmp_path))
    for make, params in ((os.mkdir, {"case": "directory"}), (os.mkfifo, {"case": "fifo"})):
        entry = store._path("toy", params)
        entry.parent.mkdir(parents=True, exist_ok=True)
        make(entry)
        assert cached("toy", params, lambda: {"value": torch.tensor([1.0])})["value"].item() == 1.0
        err = capsys.readouterr().err
        assert f"ignored the stored toy entry {entry.stem[:12]}" in err and "is not a regular file" in err
    with pytest.raises(store.NotARegularFile):
        store.read_regular_file(tmp_path)


def test_a_store_that_cannot_be_written_still_gives_the_result(tmp_path, monkeypatch, capsys):
    """A read-only store (here: a file where the store's folder belongs, which no user can write into)."""
    (tmp_path / "store").write_text("not a folder")
    monkeypatch.setenv("LHLIB_CACHE", str(tmp_path))
    result = cached("toy", {"case": "read-only"}, lambda: {"value": torch.tensor([2.0])})
    assert result["value"].item() == 2.0
    err = capsys.readouterr().err
    assert "could not store the toy entry" in err and "using it without storing" in err and len(err.splitlines()) == 1


def test_an_empty_lhlib_cache_means_the_default(monkeypatch):
    from pathlib import Path

    from lhlib.engine.store import cache_root

    monkeypatch.setenv("LHLIB_CACHE", "")
    assert cache_root() == Path.home() / ".cache" / "lhlib"
