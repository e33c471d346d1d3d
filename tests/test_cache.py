import os

import pytest
import torch

from lhlib.cache import atomic_write_bytes, cache_key, cached, load_result, tensor_fingerprint


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
    from lhlib.cache import _path

    _path("unit", {"b": 1}).write_bytes(b"not a torch file")
    assert load_result("unit", {"b": 1}) is None
    assert torch.equal(cached("unit", {"b": 1}, lambda: {"value": torch.zeros(2)})["value"], torch.zeros(2))
